-- Redemption decided in one round trip: the quota decision, scan, redeem and void as server-side functions, and
-- a merchant's yearly capacity counted in split slot rows so that a busy partner's terminals rarely wait on
-- each other. The rules are documented in perks/quotas/__init__.py; this file is their database half.

-- ---- split capacity counters ----------------------------------------------------------------------------------
-- A merchant's yearly use of a perk is the sum of PERKS_SLOTS rows. Each slot may hold at most its share of the
-- capacity (perks_slot_share); a redemption takes one unit in the first slot with room, starting from a random
-- one, so the total never passes the capacity and concurrent terminals mostly lock different rows.
CREATE TABLE merchant_capacity_slots (
    merchant_id  uuid NOT NULL REFERENCES merchants (id),
    perk_code    code NOT NULL REFERENCES perks (code) ON UPDATE CASCADE,
    year         integer NOT NULL,
    slot         smallint NOT NULL CHECK (slot BETWEEN 0 AND 15),
    used         integer NOT NULL DEFAULT 0 CHECK (used >= 0),
    PRIMARY KEY (merchant_id, perk_code, year, slot)
);

-- How many slots a capacity is spread over: one per 16 units, at most 16 (16 for no cap). A small capacity keeps
-- one row, so its count is exact and in order; a hot partner's large one is split. NULL share: no cap.
CREATE FUNCTION perks_slot_count(capacity integer) RETURNS integer LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN capacity IS NULL THEN 16 ELSE LEAST(16, (capacity + 15) / 16) END
$$;
CREATE FUNCTION perks_slot_share(capacity integer, slot integer) RETURNS integer LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN capacity IS NULL THEN NULL
                WHEN slot >= perks_slot_count(capacity) THEN 0
                ELSE capacity / perks_slot_count(capacity)
                     + CASE WHEN slot < capacity % perks_slot_count(capacity) THEN 1 ELSE 0 END
           END
$$;

-- Write a total into the slots of one merchant, perk and year: each slot at most its share while the total fits
-- the capacity; past it, every slot at least its share (the excess in slot 0), so that no slot has room.
CREATE FUNCTION perks_spread_slots(p_merchant uuid, p_perk text, p_year integer, p_total integer)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    cap integer;
    left_over integer := p_total;
    share integer;
    put integer;
BEGIN
    SELECT yearly_capacity INTO cap FROM agreements WHERE merchant_id = p_merchant AND perk_code = p_perk;
    PERFORM 1 FROM merchant_capacity_slots
     WHERE merchant_id = p_merchant AND perk_code = p_perk AND year = p_year ORDER BY slot FOR UPDATE;
    FOR s IN 0..15 LOOP
        share := COALESCE(perks_slot_share(cap, s), CASE WHEN s = 0 THEN p_total ELSE 0 END);
        put := LEAST(share, left_over);
        left_over := left_over - put;
        INSERT INTO merchant_capacity_slots AS m (merchant_id, perk_code, year, slot, used)
        VALUES (p_merchant, p_perk, p_year, s, put)
        ON CONFLICT (merchant_id, perk_code, year, slot) DO UPDATE SET used = EXCLUDED.used;
    END LOOP;
    IF left_over > 0 THEN
        UPDATE merchant_capacity_slots SET used = used + left_over
         WHERE merchant_id = p_merchant AND perk_code = p_perk AND year = p_year AND slot = 0;
    END IF;
END
$$;

SELECT perks_spread_slots(merchant_id, perk_code, year, used) FROM merchant_yearly_usage;
DROP TABLE merchant_yearly_usage;

-- Every reader of a merchant's use keeps reading this: the sum of the slots.
CREATE VIEW merchant_yearly_usage AS
SELECT merchant_id, perk_code, year, sum(used)::integer AS used
FROM merchant_capacity_slots GROUP BY merchant_id, perk_code, year;

-- Writing a total through the view (tests, a seeding script) spreads it over the slots.
CREATE FUNCTION perks_usage_view_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM perks_spread_slots(NEW.merchant_id, NEW.perk_code, NEW.year, NEW.used);
    RETURN NEW;
END
$$;
CREATE TRIGGER merchant_yearly_usage_insert INSTEAD OF INSERT ON merchant_yearly_usage
    FOR EACH ROW EXECUTE FUNCTION perks_usage_view_insert();

-- A capacity changed: re-spread each year's use under the new shares, so that a lowered capacity never lets
-- slots that still had room carry the total past it.
CREATE FUNCTION perks_capacity_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM perks_spread_slots(NEW.merchant_id, NEW.perk_code, u.year, u.used)
       FROM merchant_yearly_usage u WHERE u.merchant_id = NEW.merchant_id AND u.perk_code = NEW.perk_code;
    RETURN NEW;
END
$$;
CREATE TRIGGER agreements_capacity_changed AFTER UPDATE OF yearly_capacity ON agreements
    FOR EACH ROW WHEN (OLD.yearly_capacity IS DISTINCT FROM NEW.yearly_capacity)
    EXECUTE FUNCTION perks_capacity_changed();

-- Take one unit of capacity; the slot taken, or NULL when no slot has room (the capacity is used up).
CREATE FUNCTION perks_take_capacity(p_merchant uuid, p_perk text, p_year integer, p_capacity integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer := perks_slot_count(p_capacity);
    start integer;
    s integer;
BEGIN
    IF n <= 0 THEN
        RETURN NULL;
    END IF;
    start := floor(random() * n)::integer;
    FOR k IN 0..n - 1 LOOP
        s := (start + k) % n;
        -- A plain UPDATE locks no row it does not change, so a transaction never holds one slot while waiting
        -- for another: no two of them can wait on each other in a circle.
        UPDATE merchant_capacity_slots SET used = used + 1
         WHERE merchant_id = p_merchant AND perk_code = p_perk AND year = p_year AND slot = s
           AND (p_capacity IS NULL OR used < perks_slot_share(p_capacity, s));
        IF FOUND THEN
            RETURN s;
        END IF;
        IF k = 0 AND NOT EXISTS (SELECT 1 FROM merchant_capacity_slots
                                  WHERE merchant_id = p_merchant AND perk_code = p_perk AND year = p_year) THEN
            -- The year's first redemption at this merchant for this perk: lay its slots, then try again.
            INSERT INTO merchant_capacity_slots (merchant_id, perk_code, year, slot, used)
            SELECT p_merchant, p_perk, p_year, g, 0 FROM generate_series(0, 15) g
            ON CONFLICT DO NOTHING;
            UPDATE merchant_capacity_slots SET used = used + 1
             WHERE merchant_id = p_merchant AND perk_code = p_perk AND year = p_year AND slot = s
               AND (p_capacity IS NULL OR used < perks_slot_share(p_capacity, s));
            IF FOUND THEN
                RETURN s;
            END IF;
        END IF;
    END LOOP;
    RETURN NULL;
END
$$;

-- Give one unit back, to any slot holding one (which slot does not matter: only the sum is the count).
CREATE FUNCTION perks_give_back_capacity(p_merchant uuid, p_perk text, p_year integer)
RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
    UPDATE merchant_capacity_slots SET used = used - 1
     WHERE (merchant_id, perk_code, year, slot) = (
           SELECT merchant_id, perk_code, year, slot FROM merchant_capacity_slots
            WHERE merchant_id = p_merchant AND perk_code = p_perk AND year = p_year AND used > 0
            ORDER BY used DESC, slot LIMIT 1 FOR UPDATE);
    RETURN FOUND;
END
$$;

-- ---- how values are written in JSON, as the service writes them ------------------------------------------------
-- Python's datetime.isoformat() in UTC: microseconds only when there are some.
CREATE FUNCTION perks_rfc3339(at timestamptz) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
        || CASE WHEN date_part('microseconds', at)::bigint % 1000000 = 0 THEN ''
                ELSE to_char(at AT TIME ZONE 'UTC', '.US') END
        || '+00:00'
$$;

-- perks.privacy.mask_name: the first and last character kept, the rest '*'.
CREATE FUNCTION perks_mask_name(name text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN char_length(t) = 0 THEN '*'
                WHEN char_length(t) = 1 THEN t
                WHEN char_length(t) = 2 THEN left(t, 1) || '*'
                ELSE left(t, 1) || repeat('*', char_length(t) - 2) || right(t, 1) END
    FROM (SELECT btrim(name, E' \t\n\r\f\v\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\u001c\u001d\u001e\u001f\u0085') AS t) n
$$;

-- A client with no tier may still redeem a grant.
ALTER TABLE redemptions ALTER COLUMN tier_code DROP NOT NULL;
CREATE INDEX redemptions_grant ON redemptions (grant_id) WHERE grant_id IS NOT NULL;

-- ---- the entitlement decision ---------------------------------------------------------------------------------
-- For one perk (or, with p_perk NULL, every perk of the catalogue): what the client may use now and, when it may
-- not, the client's own refusal in the contract's order (client_blocked, not_entitled, quota_exhausted,
-- monthly_cap_reached). The tier serves first; a grant (soonest expiring, then oldest) when the tier cannot.
-- Issuing, scanning, redeeming, /me/entitlements and the wallet all read this one function.
CREATE FUNCTION perks_decide(p_client uuid, p_perk text, p_year integer, p_month integer, p_today date)
RETURNS TABLE (perk text, refusal text, grant_id uuid, entitled boolean, usable_by_tier boolean,
               yearly_quota integer, monthly_cap integer, used integer, used_this_month integer)
LANGUAGE sql STABLE AS $$
SELECT d.perk,
       CASE WHEN d.status <> 'active' THEN 'client_blocked'
            WHEN d.tier_room OR d.grant_id IS NOT NULL THEN NULL
            WHEN NOT d.tier_ok AND NOT d.any_grant THEN 'not_entitled'
            WHEN NOT d.tier_ok OR (d.yearly_quota IS NOT NULL AND d.used >= d.yearly_quota) THEN 'quota_exhausted'
            ELSE 'monthly_cap_reached' END,
       CASE WHEN d.tier_room THEN NULL ELSE d.grant_id END,
       d.entitled, d.tier_ok, d.yearly_quota, d.monthly_cap, d.used, d.used_this_month
FROM (
    SELECT t.*, t.tier_ok AND (t.yearly_quota IS NULL OR t.used < t.yearly_quota)
                AND (t.monthly_cap IS NULL OR t.used_this_month < t.monthly_cap) AS tier_room
    FROM (
        SELECT COALESCE(p.code, p_perk)::text AS perk, c.status,
               e.tier_code IS NOT NULL AS entitled,
               e.tier_code IS NOT NULL
                   AND (NOT p.birthday_only OR COALESCE(extract(month FROM c.birthday) = p_month, false)) AS tier_ok,
               e.yearly_quota, e.monthly_cap,
               COALESCE(cy.used, 0) AS used, COALESCE(cm.used, 0) AS used_this_month,
               (SELECT g.id FROM grants g
                 WHERE g.client_id = c.id AND g.perk_code = p.code AND g.status = 'active'
                   AND g.expires_on >= p_today AND g.used < g.quantity
                 ORDER BY g.expires_on, g.created_at, g.id LIMIT 1) AS grant_id,
               EXISTS (SELECT 1 FROM grants g WHERE g.client_id = c.id AND g.perk_code = p.code) AS any_grant
        FROM clients c
        LEFT JOIN perks p ON p_perk IS NULL OR p.code = p_perk
        LEFT JOIN entitlements e
               ON e.tier_code = c.tier_code AND e.perk_code = p.code
              AND (e.required_tag IS NULL OR e.required_tag = ANY (c.tags))
        LEFT JOIN client_yearly_usage cy ON cy.client_id = c.id AND cy.perk_code = p.code AND cy.year = p_year
        LEFT JOIN client_monthly_usage cm
               ON cm.client_id = c.id AND cm.perk_code = p.code AND cm.year = p_year AND cm.month = p_month
        WHERE c.id = p_client
    ) t
) d
$$;

-- Take one use of the soonest-expiring usable grant (then the oldest); its id, or NULL when none has a use left.
-- FOR UPDATE re-checks a grant another transaction just used: when it has no use left it is passed over.
CREATE FUNCTION perks_take_grant(p_client uuid, p_perk text, p_today date) RETURNS uuid
LANGUAGE sql AS $$
UPDATE grants SET used = used + 1
 WHERE id = (SELECT id FROM grants
              WHERE client_id = p_client AND perk_code = p_perk AND status = 'active'
                AND expires_on >= p_today AND used < quantity
              ORDER BY expires_on, created_at, id LIMIT 1 FOR UPDATE)
   AND used < quantity
RETURNING id
$$;

-- The tier's counters: one use taken (the yearly use afterwards), or NULL when the yearly quota or the monthly cap
-- refused (nothing taken then). Unlimited (NULL) limits are still counted.
CREATE FUNCTION perks_take_tier(p_client uuid, p_perk text, p_year integer, p_month integer,
                                p_quota integer, p_cap integer, OUT used integer, OUT refusal text)
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO client_yearly_usage AS u (client_id, perk_code, year, used)
    SELECT p_client, p_perk, p_year, 1 WHERE p_quota IS NULL OR p_quota > 0
    ON CONFLICT (client_id, perk_code, year)
    DO UPDATE SET used = u.used + 1 WHERE p_quota IS NULL OR u.used < p_quota
    RETURNING u.used INTO used;
    IF used IS NULL THEN
        refusal := 'quota_exhausted';
        RETURN;
    END IF;
    INSERT INTO client_monthly_usage AS u (client_id, perk_code, year, month, used)
    SELECT p_client, p_perk, p_year, p_month, 1 WHERE p_cap IS NULL OR p_cap > 0
    ON CONFLICT (client_id, perk_code, year, month)
    DO UPDATE SET used = u.used + 1 WHERE p_cap IS NULL OR u.used < p_cap;
    IF NOT FOUND THEN
        UPDATE client_yearly_usage u SET used = u.used - 1
         WHERE u.client_id = p_client AND u.perk_code = p_perk AND u.year = p_year;
        used := NULL;
        refusal := 'monthly_cap_reached';
    END IF;
END
$$;

-- Give one use back where it was taken: to its grant, or to the tier's yearly and monthly counters.
CREATE FUNCTION perks_give_back(p_client uuid, p_perk text, p_year integer, p_month integer, p_grant uuid)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF p_grant IS NOT NULL THEN
        UPDATE grants SET used = used - 1 WHERE id = p_grant;
    ELSE
        UPDATE client_yearly_usage SET used = used - 1
         WHERE client_id = p_client AND perk_code = p_perk AND year = p_year;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'counter missing: client yearly' USING ERRCODE = 'data_exception';
        END IF;
        UPDATE client_monthly_usage SET used = used - 1
         WHERE client_id = p_client AND perk_code = p_perk AND year = p_year AND month = p_month;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'counter missing: client monthly' USING ERRCODE = 'data_exception';
        END IF;
    END IF;
END
$$;

CREATE FUNCTION perks_remaining(p_limit integer, p_used integer) RETURNS integer LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_limit IS NULL THEN NULL ELSE GREATEST(p_limit - p_used, 0) END
$$;

CREATE FUNCTION perks_refusal_status(code text) RETURNS integer LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE code WHEN 'invalid_token' THEN 400 WHEN 'merchant_suspended' THEN 403 WHEN 'token_expired' THEN 410
                     WHEN 'client_blocked' THEN 403 ELSE 409 END
$$;

-- ---- scan and redeem: the whole decision in one call ----------------------------------------------------------
-- Order: the acting user's session (401), the terminal's rate (429), the store (403, 404, 400), the idempotency
-- key (a replay, or 422), then the contract's refusal table, first match wins. A refusal leaves nothing behind but
-- the rate count and the key's record. Answers (status, code, body, replayed): code names an error, body a success
-- or a replay. p_scan: decide only, consume nothing.
CREATE FUNCTION perks_redeem(
    p_actor uuid, p_username text, p_role text, p_generation integer, p_merchant uuid, p_own_store uuid,
    p_store uuid, p_voucher text, p_token_deadline timestamptz, p_leeway interval, p_now timestamptz,
    p_year integer, p_month integer, p_today date, p_rate_limit integer, p_key text, p_hash bytea,
    p_key_window interval, p_scan boolean)
RETURNS TABLE (status integer, code text, body jsonb, replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_user record;
    v_rate record;
    v_window timestamptz := date_trunc('minute', p_now);
BEGIN
    SELECT u.status, u.session_generation INTO v_user FROM users u WHERE u.id = p_actor;
    IF NOT FOUND OR v_user.status <> 'active' OR v_user.session_generation <> p_generation THEN
        RETURN QUERY SELECT 401, 'unauthorized'::text, NULL::jsonb, false;
        RETURN;
    END IF;
    -- The count is read here and moved last: the user's row is then locked only from the end of the decision to
    -- the commit, so one user's requests do not queue behind each other's counter waits. Requests already in
    -- flight when the limit is reached may pass it by their number; a real shop is far below it anyway.
    SELECT q.window_start, q.count INTO v_rate FROM request_rates q WHERE q.user_id = p_actor;
    IF v_rate.window_start = v_window AND v_rate.count >= p_rate_limit THEN
        RETURN QUERY SELECT 429, 'too_many_attempts'::text, NULL::jsonb, false;
    ELSE
        RETURN QUERY SELECT * FROM perks_redeem_decision(
            p_actor, p_username, p_role, p_merchant, p_own_store, p_store, p_voucher, p_token_deadline, p_leeway,
            p_now, p_year, p_month, p_today, p_key, p_hash, p_key_window, p_scan);
    END IF;
    INSERT INTO request_rates AS q (user_id, window_start, count) VALUES (p_actor, v_window, 1)
    ON CONFLICT (user_id) DO UPDATE
        SET count = CASE WHEN q.window_start = EXCLUDED.window_start THEN q.count + 1 ELSE 1 END,
            window_start = EXCLUDED.window_start;
END
$$;

-- The decision after the session and the rate: the store, the key, the refusal table, and the writes.
CREATE FUNCTION perks_redeem_decision(
    p_actor uuid, p_username text, p_role text, p_merchant uuid, p_own_store uuid,
    p_store uuid, p_voucher text, p_token_deadline timestamptz, p_leeway interval, p_now timestamptz,
    p_year integer, p_month integer, p_today date, p_key text, p_hash bytea,
    p_key_window interval, p_scan boolean)
RETURNS TABLE (status integer, code text, body jsonb, replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_store uuid;
    v_owner uuid;
    v_stores uuid[];
    v_claimed integer;
    v_kept record;
    f record;
    v_refusal text;
    v_status integer;
    v_id uuid;
    v_grant uuid;
    v_tier record;
    v_used integer;
    v_body jsonb;
    v_after jsonb;
BEGIN
    IF p_role = 'cashier' THEN
        IF p_store IS NULL OR p_store = p_own_store THEN
            v_store := p_own_store;
        ELSE
            SELECT s.merchant_id INTO v_owner FROM stores s WHERE s.id = p_store;
            -- Another store of its own merchant: the cashier knows it exists, but may not act there.
            RETURN QUERY SELECT CASE WHEN v_owner = p_merchant THEN 403 ELSE 404 END,
                                CASE WHEN v_owner = p_merchant THEN 'forbidden' ELSE 'not_found' END, NULL::jsonb, false;
            RETURN;
        END IF;
    ELSIF p_store IS NOT NULL THEN
        SELECT s.merchant_id INTO v_owner FROM stores s WHERE s.id = p_store;
        IF v_owner IS DISTINCT FROM p_merchant THEN
            RETURN QUERY SELECT 404, 'not_found'::text, NULL::jsonb, false;
            RETURN;
        END IF;
        v_store := p_store;
    ELSIF p_own_store IS NOT NULL THEN
        v_store := p_own_store;
    ELSE
        v_stores := ARRAY(SELECT s.id FROM stores s WHERE s.merchant_id = p_merchant ORDER BY s.created_at, s.id LIMIT 2);
        IF cardinality(v_stores) <> 1 THEN
            RETURN QUERY SELECT 400, CASE WHEN cardinality(v_stores) = 0 THEN 'no_store' ELSE 'store_required' END,
                                NULL::jsonb, false;
            RETURN;
        END IF;
        v_store := v_stores[1];
    END IF;
    IF v_store IS NULL THEN
        RETURN QUERY SELECT 403, 'forbidden'::text, NULL::jsonb, false;
        RETURN;
    END IF;

    IF p_key IS NOT NULL THEN
        -- A placeholder the same transaction overwrites: a concurrent request with the key waits on this row,
        -- then finds it taken and replays. A row older than the window is claimed afresh.
        INSERT INTO idempotency_keys AS k (merchant_id, key, request_hash, status, body, created_at)
        VALUES (p_merchant, p_key, p_hash, 0, '{}'::jsonb, p_now)
        ON CONFLICT (merchant_id, key) DO UPDATE
            SET request_hash = EXCLUDED.request_hash, status = 0, body = '{}'::jsonb, created_at = EXCLUDED.created_at
            WHERE k.created_at <= p_now - p_key_window
        RETURNING 1 INTO v_claimed;
        IF v_claimed IS NULL THEN
            SELECT k.request_hash, k.status, k.body INTO v_kept
              FROM idempotency_keys k WHERE k.merchant_id = p_merchant AND k.key = p_key;
            IF v_kept.request_hash <> p_hash THEN
                RETURN QUERY SELECT 422, 'idempotency_key_reused'::text, NULL::jsonb, false;
            ELSE
                RETURN QUERY SELECT v_kept.status, NULL::text, v_kept.body, true;
            END IF;
            RETURN;
        END IF;
    END IF;

    SELECT v.id, v.client_id, v.perk_code, v.expires_at, m.status AS merchant_status,
           EXISTS (SELECT 1 FROM redemptions r WHERE r.voucher_id = v.id) AS redeemed,
           EXISTS (SELECT 1 FROM vouchers n
                    WHERE n.client_id = v.client_id AND n.perk_code = v.perk_code AND n.seq > v.seq) AS superseded,
           c.name AS client_name, c.tier_code,
           a.merchant_id IS NOT NULL AS offered, a.yearly_capacity, a.unit_price_fen,
           (SELECT COALESCE(sum(s.used), 0) FROM merchant_capacity_slots s
             WHERE s.merchant_id = m.id AND s.perk_code = v.perk_code AND s.year = p_year) AS merchant_used,
           d.refusal AS decided_refusal, d.grant_id AS decided_grant, d.entitled, d.yearly_quota, d.monthly_cap,
           d.used
      INTO f
      FROM merchants m
      LEFT JOIN vouchers v ON v.id = p_voucher
      LEFT JOIN clients c ON c.id = v.client_id
      LEFT JOIN agreements a ON a.merchant_id = m.id AND a.perk_code = v.perk_code
      -- In this statement, so that the decision reads the same snapshot as the voucher's facts (a redemption
      -- committing in between would otherwise look like a quota used up rather than a voucher spent).
      LEFT JOIN LATERAL perks_decide(v.client_id, v.perk_code, p_year, p_month, p_today) d ON true
     WHERE m.id = p_merchant;

    v_refusal := CASE
        -- Signed by us, yet unknown (or not a voucher at all): never issued here.
        WHEN f.id IS NULL THEN 'invalid_token'
        WHEN f.merchant_status <> 'active' THEN 'merchant_suspended'
        -- The stored expiry bounds the token's: a leaked signing key cannot mint long-lived vouchers.
        WHEN p_now > LEAST(p_token_deadline, f.expires_at + p_leeway) THEN 'token_expired'
        WHEN f.redeemed THEN 'voucher_already_redeemed'
        WHEN f.superseded THEN 'voucher_superseded'
    END;
    IF v_refusal IS NULL THEN
        v_refusal := CASE
            WHEN f.decided_refusal = 'client_blocked' THEN f.decided_refusal
            WHEN NOT f.offered THEN 'perk_not_offered'
            WHEN f.decided_refusal IS NOT NULL THEN f.decided_refusal
            WHEN f.yearly_capacity IS NOT NULL AND f.merchant_used >= f.yearly_capacity THEN 'merchant_capacity_exhausted'
        END;
    END IF;

    IF v_refusal IS NULL AND p_scan THEN
        v_used := CASE WHEN f.decided_grant IS NULL THEN f.used + 1 ELSE f.used END;
        RETURN QUERY SELECT 200, NULL::text, jsonb_build_object(
            'voucher_id', f.id, 'perk', f.perk_code,
            'client', jsonb_build_object('display_name', perks_mask_name(f.client_name), 'tier', f.tier_code),
            'remaining_after', CASE WHEN f.entitled THEN perks_remaining(f.yearly_quota, v_used) ELSE 0 END,
            'expires_at', perks_rfc3339(f.expires_at)), false;
        RETURN;
    END IF;

    IF v_refusal IS NULL THEN
        -- The UNIQUE voucher_id is the single-use guarantee: a racing redemption of the same voucher waits here
        -- for the first to commit, then inserts nothing.
        INSERT INTO redemptions (voucher_id, client_id, perk_code, merchant_id, store_id, redeemed_by, tier_code,
                                 redeemed_at, quota_year, quota_month, unit_price_fen)
        VALUES (f.id, f.client_id, f.perk_code, p_merchant, v_store, p_actor, f.tier_code,
                p_now, p_year, p_month, f.unit_price_fen)
        ON CONFLICT (voucher_id) DO NOTHING
        RETURNING id INTO v_id;
        IF v_id IS NULL THEN
            v_refusal := 'voucher_already_redeemed';
        END IF;
    END IF;

    IF v_refusal IS NULL THEN
        -- The conditional moves decide; what was read above only refused early. Counters last, the merchant's
        -- last of all: its rows are shared by every terminal, so their locks are held the shortest.
        IF f.decided_grant IS NULL THEN
            SELECT * INTO v_tier FROM perks_take_tier(f.client_id, f.perk_code, p_year, p_month,
                                                      f.yearly_quota, f.monthly_cap);
            v_refusal := v_tier.refusal;
            v_used := v_tier.used;
            IF v_refusal IS NOT NULL THEN
                -- Another terminal took the tier's last use meanwhile: a grant may still serve.
                v_grant := perks_take_grant(f.client_id, f.perk_code, p_today);
                IF v_grant IS NOT NULL THEN
                    v_refusal := NULL;
                    v_used := f.used + 1;
                END IF;
            END IF;
        ELSE
            v_grant := perks_take_grant(f.client_id, f.perk_code, p_today);
            v_used := f.used;
            IF v_grant IS NULL THEN
                v_refusal := 'quota_exhausted';
            END IF;
        END IF;
        IF v_refusal IS NULL AND perks_take_capacity(p_merchant, f.perk_code, p_year, f.yearly_capacity) IS NULL THEN
            v_refusal := 'merchant_capacity_exhausted';
            PERFORM perks_give_back(f.client_id, f.perk_code, p_year, p_month, v_grant);
        END IF;
        IF v_refusal IS NOT NULL THEN
            DELETE FROM redemptions WHERE id = v_id;
        ELSIF v_grant IS NOT NULL THEN
            UPDATE redemptions SET grant_id = v_grant WHERE id = v_id;
        END IF;
    END IF;

    IF v_refusal IS NOT NULL THEN
        v_status := perks_refusal_status(v_refusal);
        IF p_key IS NOT NULL THEN
            UPDATE idempotency_keys k SET status = v_status,
                   body = jsonb_build_object('error', jsonb_build_object('code', v_refusal))
             WHERE k.merchant_id = p_merchant AND k.key = p_key;
        END IF;
        RETURN QUERY SELECT v_status, v_refusal, NULL::jsonb, false;
        RETURN;
    END IF;

    v_after := jsonb_build_object(
        'id', v_id, 'status', 'redeemed', 'voucher_id', f.id, 'client_id', f.client_id, 'perk', f.perk_code,
        'tier', f.tier_code, 'merchant_id', p_merchant, 'store_id', v_store, 'redeemed_at', perks_rfc3339(p_now),
        'quota_year', p_year, 'quota_month', p_month, 'unit_price_fen', f.unit_price_fen);
    INSERT INTO audit_log (at, actor_id, actor_username, actor_role, action, entity_type, entity_id, before, after)
    VALUES (now(), p_actor, p_username, p_role, 'redemption.create', 'redemption', v_id::text, NULL, v_after);
    INSERT INTO events (type, occurred_at, data)
    VALUES ('redemption.created', p_now, jsonb_build_object(
        'redemption_id', v_id, 'voucher_id', f.id, 'client_id', f.client_id, 'perk', f.perk_code,
        'merchant_id', p_merchant, 'store_id', v_store, 'tier', f.tier_code, 'grant_id', v_grant,
        'redeemed_at', perks_rfc3339(p_now), 'quota_year', p_year, 'quota_month', p_month,
        'unit_price_fen', f.unit_price_fen));

    v_body := jsonb_build_object(
        'id', v_id, 'status', 'redeemed', 'voucher_id', f.id, 'perk', f.perk_code,
        'client', jsonb_build_object('display_name', perks_mask_name(f.client_name), 'tier', f.tier_code),
        'merchant_id', p_merchant, 'store_id', v_store, 'redeemed_at', perks_rfc3339(p_now),
        'client_remaining', CASE WHEN f.entitled THEN perks_remaining(f.yearly_quota, v_used) ELSE 0 END,
        'merchant_remaining', perks_remaining(f.yearly_capacity,
            (SELECT sum(s.used)::integer FROM merchant_capacity_slots s
              WHERE s.merchant_id = p_merchant AND s.perk_code = f.perk_code AND s.year = p_year)));
    IF p_key IS NOT NULL THEN
        UPDATE idempotency_keys k SET status = 201, body = v_body WHERE k.merchant_id = p_merchant AND k.key = p_key;
    END IF;
    RETURN QUERY SELECT 201, NULL::text, v_body, false;
END
$$;

-- ---- void: in one call ----------------------------------------------------------------------------------------
-- The redemption's row is locked first, then its counters. As a merchant (p_as_bank false) the manager must be of
-- the redemption's merchant (else not_found), the merchant not suspended, and within the window. Answers
-- (code, body): an error code, or the voided redemption as the API shows it.
CREATE FUNCTION perks_void(p_redemption uuid, p_actor uuid, p_username text, p_role text, p_merchant uuid,
                           p_as_bank boolean, p_reason text, p_now timestamptz, p_window interval)
RETURNS TABLE (code text, body jsonb)
LANGUAGE plpgsql AS $$
DECLARE
    r record;
    v_before jsonb;
    v_after jsonb;
BEGIN
    SELECT x.id, x.status, x.voucher_id, x.client_id, x.perk_code, x.tier_code, c.name AS client_name,
           x.merchant_id, x.store_id, x.redeemed_at, x.voided_at, x.void_reason, x.quota_year, x.quota_month,
           x.grant_id, m.status AS merchant_status
      INTO r
      FROM redemptions x JOIN clients c ON c.id = x.client_id JOIN merchants m ON m.id = x.merchant_id
     WHERE x.id = p_redemption
       FOR UPDATE OF x;
    IF NOT FOUND OR (NOT p_as_bank AND r.merchant_id IS DISTINCT FROM p_merchant) THEN
        RETURN QUERY SELECT 'not_found'::text, NULL::jsonb;
        RETURN;
    END IF;
    IF NOT p_as_bank AND r.merchant_status <> 'active' THEN
        RETURN QUERY SELECT 'merchant_suspended'::text, NULL::jsonb;
        RETURN;
    END IF;
    IF r.status = 'voided' THEN
        RETURN QUERY SELECT 'already_voided'::text, NULL::jsonb;
        RETURN;
    END IF;
    IF NOT p_as_bank AND p_now - r.redeemed_at > p_window THEN
        RETURN QUERY SELECT 'void_window_closed'::text, NULL::jsonb;
        RETURN;
    END IF;
    UPDATE redemptions SET status = 'voided', voided_at = p_now,
           voided_by = CASE WHEN p_role = 'system' THEN NULL ELSE p_actor END, void_reason = p_reason
     WHERE id = p_redemption;
    PERFORM perks_give_back(r.client_id, r.perk_code, r.quota_year, r.quota_month, r.grant_id);
    IF NOT perks_give_back_capacity(r.merchant_id, r.perk_code, r.quota_year) THEN
        RAISE EXCEPTION 'counter missing: merchant capacity' USING ERRCODE = 'data_exception';
    END IF;
    v_before := jsonb_build_object(
        'id', r.id, 'status', r.status, 'voucher_id', r.voucher_id, 'perk', r.perk_code,
        'client', jsonb_build_object('display_name', perks_mask_name(r.client_name), 'tier', r.tier_code),
        'merchant_id', r.merchant_id, 'store_id', r.store_id, 'redeemed_at', perks_rfc3339(r.redeemed_at),
        'voided_at', NULL, 'void_reason', NULL);
    v_after := v_before || jsonb_build_object('status', 'voided', 'voided_at', perks_rfc3339(p_now),
                                              'void_reason', p_reason);
    INSERT INTO audit_log (at, actor_id, actor_username, actor_role, action, entity_type, entity_id, before, after)
    VALUES (now(), p_actor, p_username, p_role,
            'redemption.void', 'redemption', r.id::text, v_before, v_after);
    INSERT INTO events (type, occurred_at, data)
    VALUES ('redemption.voided', p_now, jsonb_build_object(
        'redemption_id', r.id, 'voucher_id', r.voucher_id, 'client_id', r.client_id, 'perk', r.perk_code,
        'merchant_id', r.merchant_id, 'store_id', r.store_id, 'grant_id', r.grant_id,
        'voided_at', perks_rfc3339(p_now), 'quota_year', r.quota_year, 'quota_month', r.quota_month,
        'voided_by_role', p_role));
    RETURN QUERY SELECT NULL::text, v_after;
END
$$;
