-- The redemption's round trip made leaner, its rules unchanged (the order of refusals, the writes, the answers):
-- measured with pg_stat_statements (track = all, track_planning = on) under the bench's load, the call spent its
-- time in many small places rather than one, so each goes.
--  * perks_redeem and perks_redeem_decision are one function answering one row (OUT parameters), not two
--    functions passing a set through RETURN QUERY's tuplestore.
--  * perks_mask_name and perks_rfc3339 are PL/pgSQL: as SQL functions that cannot be inlined (a FROM clause; an
--    IMMUTABLE body calling STABLE to_char) their bodies were planned again on every call, three times a redemption.

CREATE OR REPLACE FUNCTION perks_rfc3339(at timestamptz) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    RETURN to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS')
        || CASE WHEN date_part('microseconds', at)::bigint % 1000000 = 0 THEN ''
                ELSE to_char(at AT TIME ZONE 'UTC', '.US') END
        || '+00:00';
END
$$;

CREATE OR REPLACE FUNCTION perks_mask_name(name text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    t text := btrim(name, E' \t\n\r\f\v\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000\u001c\u001d\u001e\u001f\u0085');
    n integer := char_length(t);
BEGIN
    RETURN CASE WHEN n = 0 THEN '*'
                WHEN n = 1 THEN t
                WHEN n = 2 THEN left(t, 1) || '*'
                ELSE left(t, 1) || repeat('*', n - 2) || right(t, 1) END;
END
$$;

DROP FUNCTION perks_redeem(uuid, text, text, integer, uuid, uuid, uuid, text, timestamptz, interval, timestamptz,
                           integer, integer, date, integer, text, bytea, interval, boolean);
DROP FUNCTION perks_redeem_decision(uuid, text, text, uuid, uuid, uuid, text, timestamptz, interval, timestamptz,
                                    integer, integer, date, text, bytea, interval, boolean);

-- ---- scan and redeem: the whole decision in one call ----------------------------------------------------------
-- Order: the acting user's session (401), the terminal's rate (429), the store (403, 404, 400), the idempotency
-- key (a replay, or 422), then the contract's refusal table, first match wins. A refusal leaves nothing behind but
-- the rate count and the key's record. Answers (status, code, body, replayed): code names an error, body a success
-- or a replay. p_scan: decide only, consume nothing.
CREATE FUNCTION perks_redeem(
    p_actor uuid, p_username text, p_role text, p_generation integer, p_merchant uuid, p_own_store uuid,
    p_store uuid, p_voucher text, p_token_deadline timestamptz, p_leeway interval, p_now timestamptz,
    p_year integer, p_month integer, p_today date, p_rate_limit integer, p_key text, p_hash bytea,
    p_key_window interval, p_scan boolean,
    OUT status integer, OUT code text, OUT body jsonb, OUT replayed boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_user record;
    v_rate record;
    v_window timestamptz := date_trunc('minute', p_now);
    v_store uuid;
    v_owner uuid;
    v_stores uuid[];
    v_claimed integer;
    v_kept record;
    f record;
    v_refusal text;
    v_id uuid;
    v_grant uuid;
    v_tier record;
    v_used integer;
    v_after jsonb;
BEGIN
    replayed := false;
    SELECT u.status, u.session_generation INTO v_user FROM users u WHERE u.id = p_actor;
    IF NOT FOUND OR v_user.status <> 'active' OR v_user.session_generation <> p_generation THEN
        status := 401;
        code := 'unauthorized';
        RETURN;
    END IF;
    -- The count is read here and moved last: the user's row is then locked only from the end of the decision to
    -- the commit, so one user's requests do not queue behind each other's counter waits. Requests already in
    -- flight when the limit is reached may pass it by their number; a real shop is far below it anyway.
    SELECT q.window_start, q.count INTO v_rate FROM request_rates q WHERE q.user_id = p_actor;
    IF v_rate.window_start = v_window AND v_rate.count >= p_rate_limit THEN
        status := 429;
        code := 'too_many_attempts';
    ELSE
        <<decision>>
        BEGIN
            -- The store.
            IF p_role = 'cashier' THEN
                IF p_store IS NULL OR p_store = p_own_store THEN
                    v_store := p_own_store;
                ELSE
                    SELECT s.merchant_id INTO v_owner FROM stores s WHERE s.id = p_store;
                    -- Another store of its own merchant: the cashier knows it exists, but may not act there.
                    status := CASE WHEN v_owner = p_merchant THEN 403 ELSE 404 END;
                    code := CASE WHEN v_owner = p_merchant THEN 'forbidden' ELSE 'not_found' END;
                    EXIT decision;
                END IF;
            ELSIF p_store IS NOT NULL THEN
                SELECT s.merchant_id INTO v_owner FROM stores s WHERE s.id = p_store;
                IF v_owner IS DISTINCT FROM p_merchant THEN
                    status := 404;
                    code := 'not_found';
                    EXIT decision;
                END IF;
                v_store := p_store;
            ELSIF p_own_store IS NOT NULL THEN
                v_store := p_own_store;
            ELSE
                v_stores := ARRAY(SELECT s.id FROM stores s WHERE s.merchant_id = p_merchant
                                   ORDER BY s.created_at, s.id LIMIT 2);
                IF cardinality(v_stores) <> 1 THEN
                    status := 400;
                    code := CASE WHEN cardinality(v_stores) = 0 THEN 'no_store' ELSE 'store_required' END;
                    EXIT decision;
                END IF;
                v_store := v_stores[1];
            END IF;
            IF v_store IS NULL THEN
                status := 403;
                code := 'forbidden';
                EXIT decision;
            END IF;

            -- The idempotency key.
            IF p_key IS NOT NULL THEN
                -- A placeholder the same transaction overwrites: a concurrent request with the key waits on this
                -- row, then finds it taken and replays. A row older than the window is claimed afresh.
                INSERT INTO idempotency_keys AS k (merchant_id, key, request_hash, status, body, created_at)
                VALUES (p_merchant, p_key, p_hash, 0, '{}'::jsonb, p_now)
                ON CONFLICT (merchant_id, key) DO UPDATE
                    SET request_hash = EXCLUDED.request_hash, status = 0, body = '{}'::jsonb,
                        created_at = EXCLUDED.created_at
                    WHERE k.created_at <= p_now - p_key_window
                RETURNING 1 INTO v_claimed;
                IF v_claimed IS NULL THEN
                    SELECT k.request_hash, k.status, k.body INTO v_kept
                      FROM idempotency_keys k WHERE k.merchant_id = p_merchant AND k.key = p_key;
                    IF v_kept.request_hash <> p_hash THEN
                        status := 422;
                        code := 'idempotency_key_reused';
                    ELSE
                        status := v_kept.status;
                        body := v_kept.body;
                        replayed := true;
                    END IF;
                    EXIT decision;
                END IF;
            END IF;

            -- The facts, and the refusal table in order.
            SELECT v.id, v.client_id, v.perk_code, v.expires_at, m.status AS merchant_status,
                   EXISTS (SELECT 1 FROM redemptions r WHERE r.voucher_id = v.id) AS redeemed,
                   EXISTS (SELECT 1 FROM vouchers n
                            WHERE n.client_id = v.client_id AND n.perk_code = v.perk_code AND n.seq > v.seq)
                       AS superseded,
                   c.name AS client_name, c.tier_code,
                   a.merchant_id IS NOT NULL AS offered, a.yearly_capacity, a.unit_price_fen,
                   (SELECT COALESCE(sum(s.used), 0) FROM merchant_capacity_slots s
                     WHERE s.merchant_id = m.id AND s.perk_code = v.perk_code AND s.year = p_year) AS merchant_used,
                   d.refusal AS decided_refusal, d.grant_id AS decided_grant, d.entitled, d.yearly_quota,
                   d.monthly_cap, d.used
              INTO f
              FROM merchants m
              LEFT JOIN vouchers v ON v.id = p_voucher
              LEFT JOIN clients c ON c.id = v.client_id
              LEFT JOIN agreements a ON a.merchant_id = m.id AND a.perk_code = v.perk_code
              -- In this statement, so that the decision reads the same snapshot as the voucher's facts (a
              -- redemption committing in between would otherwise look like a quota used up rather than a voucher
              -- spent).
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
                WHEN f.decided_refusal = 'client_blocked' THEN f.decided_refusal
                WHEN NOT f.offered THEN 'perk_not_offered'
                WHEN f.decided_refusal IS NOT NULL THEN f.decided_refusal
                WHEN f.yearly_capacity IS NOT NULL AND f.merchant_used >= f.yearly_capacity
                    THEN 'merchant_capacity_exhausted'
            END;

            IF v_refusal IS NULL AND p_scan THEN
                v_used := CASE WHEN f.decided_grant IS NULL THEN f.used + 1 ELSE f.used END;
                status := 200;
                body := jsonb_build_object(
                    'voucher_id', f.id, 'perk', f.perk_code,
                    'client', jsonb_build_object('display_name', perks_mask_name(f.client_name),
                                                 'tier', f.tier_code),
                    'remaining_after', CASE WHEN f.entitled THEN perks_remaining(f.yearly_quota, v_used) ELSE 0 END,
                    'expires_at', perks_rfc3339(f.expires_at));
                EXIT decision;
            END IF;

            IF v_refusal IS NULL THEN
                -- The UNIQUE voucher_id is the single-use guarantee: a racing redemption of the same voucher waits
                -- here for the first to commit, then inserts nothing.
                INSERT INTO redemptions (voucher_id, client_id, perk_code, merchant_id, store_id, redeemed_by,
                                         tier_code, redeemed_at, quota_year, quota_month, unit_price_fen)
                VALUES (f.id, f.client_id, f.perk_code, p_merchant, v_store, p_actor, f.tier_code,
                        p_now, p_year, p_month, f.unit_price_fen)
                ON CONFLICT (voucher_id) DO NOTHING
                RETURNING id INTO v_id;
                IF v_id IS NULL THEN
                    v_refusal := 'voucher_already_redeemed';
                END IF;
            END IF;

            IF v_refusal IS NULL THEN
                -- The conditional moves decide; what was read above only refused early. Counters last, the
                -- merchant's last of all: its rows are shared by every terminal, so their locks are held the
                -- shortest.
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
                IF v_refusal IS NULL
                   AND perks_take_capacity(p_merchant, f.perk_code, p_year, f.yearly_capacity) IS NULL THEN
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
                status := perks_refusal_status(v_refusal);
                code := v_refusal;
                IF p_key IS NOT NULL THEN
                    UPDATE idempotency_keys k SET status = perks_redeem.status,
                           body = jsonb_build_object('error', jsonb_build_object('code', v_refusal))
                     WHERE k.merchant_id = p_merchant AND k.key = p_key;
                END IF;
                EXIT decision;
            END IF;

            -- Redeemed: the audit entry, the event, the answer (kept for the key).
            v_after := jsonb_build_object(
                'id', v_id, 'status', 'redeemed', 'voucher_id', f.id, 'client_id', f.client_id,
                'perk', f.perk_code, 'tier', f.tier_code, 'merchant_id', p_merchant, 'store_id', v_store,
                'redeemed_at', perks_rfc3339(p_now), 'quota_year', p_year, 'quota_month', p_month,
                'unit_price_fen', f.unit_price_fen);
            INSERT INTO audit_log (at, actor_id, actor_username, actor_role, action, entity_type, entity_id,
                                   before, after)
            VALUES (now(), p_actor, p_username, p_role, 'redemption.create', 'redemption', v_id::text, NULL,
                    v_after);
            INSERT INTO events (type, occurred_at, data)
            VALUES ('redemption.created', p_now, jsonb_build_object(
                'redemption_id', v_id, 'voucher_id', f.id, 'client_id', f.client_id, 'perk', f.perk_code,
                'merchant_id', p_merchant, 'store_id', v_store, 'tier', f.tier_code, 'grant_id', v_grant,
                'redeemed_at', v_after->'redeemed_at', 'quota_year', p_year, 'quota_month', p_month,
                'unit_price_fen', f.unit_price_fen));
            status := 201;
            body := jsonb_build_object(
                'id', v_id, 'status', 'redeemed', 'voucher_id', f.id, 'perk', f.perk_code,
                'client', jsonb_build_object('display_name', perks_mask_name(f.client_name), 'tier', f.tier_code),
                'merchant_id', p_merchant, 'store_id', v_store, 'redeemed_at', v_after->'redeemed_at',
                'client_remaining', CASE WHEN f.entitled THEN perks_remaining(f.yearly_quota, v_used) ELSE 0 END,
                'merchant_remaining', perks_remaining(f.yearly_capacity,
                    (SELECT sum(s.used)::integer FROM merchant_capacity_slots s
                      WHERE s.merchant_id = p_merchant AND s.perk_code = f.perk_code AND s.year = p_year)));
            IF p_key IS NOT NULL THEN
                UPDATE idempotency_keys k SET status = 201, body = perks_redeem.body
                 WHERE k.merchant_id = p_merchant AND k.key = p_key;
            END IF;
        END;
    END IF;
    INSERT INTO request_rates AS q (user_id, window_start, count) VALUES (p_actor, v_window, 1)
    ON CONFLICT (user_id) DO UPDATE
        SET count = CASE WHEN q.window_start = EXCLUDED.window_start THEN q.count + 1 ELSE 1 END,
            window_start = EXCLUDED.window_start;
END
$$;
