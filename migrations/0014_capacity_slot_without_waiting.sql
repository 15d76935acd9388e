-- A hot partner's redemption takes a capacity slot that no other redemption holds, rather than queueing behind
-- one that does. The slots of a large capacity exist so that a partner's terminals do not serialise on one row,
-- but a redemption that picked a random slot still waited for that slot's holder to commit (a durable commit:
-- the disk's flush) while other slots stood free: with 16 terminals over 16 slots, most picks met a holder. The
-- redemption now first takes, in one statement, a slot with room that nobody has locked (SKIP LOCKED), starting at
-- a random one; only when every slot with room is held does it fall back to migration 0009's way, waiting on the
-- slots in turn (and laying them on the year's first use), which still decides the last units of a capacity
-- exactly. A slot is moved only under its row lock and only while it is below its share, so the sum never passes
-- the capacity; no transaction holds one slot while waiting for another.
-- Measured with 0013 (whose note gives the figures): neither alone brought a partner's rate near the uniform one.
ALTER FUNCTION perks_take_capacity(uuid, text, integer, integer) RENAME TO perks_take_capacity_in_turn;

-- Take one unit of capacity; the slot taken, or NULL when no slot has room (the capacity is used up).
CREATE FUNCTION perks_take_capacity(p_merchant uuid, p_perk text, p_year integer, p_capacity integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer := perks_slot_count(p_capacity);
    start integer := floor(random() * n)::integer;
    s integer;
BEGIN
    IF n <= 0 THEN
        RETURN NULL;
    END IF;
    UPDATE merchant_capacity_slots SET used = used + 1
     WHERE (merchant_id, perk_code, year, slot) = (
           SELECT f.merchant_id, f.perk_code, f.year, f.slot FROM merchant_capacity_slots f
            WHERE f.merchant_id = p_merchant AND f.perk_code = p_perk AND f.year = p_year
              AND (p_capacity IS NULL OR f.used < perks_slot_share(p_capacity, f.slot))
            ORDER BY (f.slot - start + n) % n
            LIMIT 1 FOR UPDATE SKIP LOCKED)
    RETURNING slot INTO s;
    RETURN COALESCE(s, perks_take_capacity_in_turn(p_merchant, p_perk, p_year, p_capacity));
END
$$;
