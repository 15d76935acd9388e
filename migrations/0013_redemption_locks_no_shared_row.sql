-- A redemption's foreign-key checks lock no row that every terminal shares. Each check takes a KEY SHARE lock on
-- the row it finds, held to the commit; when many transactions hold one on the same row, PostgreSQL records them
-- as a multixact, written for every new holder. The merchant's row (every redemption at a partner, and every keyed
-- one once more through its idempotency record) and the perk's row (every redemption of that perk, at any partner)
-- were such rows. Measured with `scripts/bench --only hot` (16 terminals, 2 workers), one partner's rate against
-- the uniform rate of the same run: 0.67-0.72x before, 0.89-1.01x with this and 0014 (the absolute figures of
-- identical runs moved by half on this machine, so only ratios within a run are compared).
--  * The merchant: (merchant_id, store_id) already references stores, whose merchant_id references merchants.
--  * The perk: a redemption's perk is its voucher's perk, now a rule of the schema: (voucher_id, perk_code)
--    references the voucher, whose perk references perks; the voucher's own row is the one locked, and no two
--    redemptions share it. This replaces the plain voucher_id reference.
--  * The idempotency record keeps the merchant of the acting user's session, for a day; merchants are never
--    deleted.
ALTER TABLE vouchers ADD CONSTRAINT vouchers_id_perk_code_key UNIQUE (id, perk_code);
ALTER TABLE redemptions
    DROP CONSTRAINT redemptions_merchant_id_fkey,
    DROP CONSTRAINT redemptions_perk_code_fkey,
    DROP CONSTRAINT redemptions_voucher_id_fkey,
    ADD CONSTRAINT redemptions_voucher_perk_fkey FOREIGN KEY (voucher_id, perk_code)
        REFERENCES vouchers (id, perk_code) ON UPDATE CASCADE;
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_merchant_id_fkey;
