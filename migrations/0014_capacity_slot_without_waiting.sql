-- A hot partner's redemption takes a capacity slot that no other redemption holds, rather than queueing behind
-- one that does. The slots of a large capacity exist so that a partner's terminals do not serialise on one row,
-- but a redemption that picked a random slot still waited for that slot's holder to commit (a durable commit:
-- the disk's flush) while other slots stood free: with 16 terminals over 16 slots, most picks met a holder. The
-- redemption now first takes, in one statement, a slot with room that nobody has locked (SKIP LOCKED), starting at
-- a random one; only when every slot with room is held does it fall back to waiting on them in turn, which still
-- decides the last units of a capacity exactly. A slot is moved only under its row lock and only while it is below
-- its share, so the sum never passes the capacity; no transaction holds one slot while waiting for another.
-- Measured with 0013 (whose note gives the figures): neither alone brought a partner's rate near the uniform one.
CREATE OR REPLACE FUNCTION perks_take_capacity(p_merchant uuid, p_perk text, p_year integer, p_capacity integer)
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
    UPDATE merchant_capacity_slots SET used = used + 1
     WHERE (merchant_id, perk_code, year, slot) = (
           SELECT f.merchant_id, f.perk_code, f.year, f.slot FROM merchant_capacity_slots f
            WHERE f.merchant_id = p_merchant AND f.perk_code = p_perk AND f.year = p_year
              AND (p_capacity IS NULL OR f.used < perks_slot_share(p_capacity, f.slot))
            ORDER BY (f.slot - start + n) % n
            LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING slot INTO s;
    IF s IS NOT NULL THEN
        RETURN s;
    END IF;
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
