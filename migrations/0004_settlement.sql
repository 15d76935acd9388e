-- Settlement, feedback and the indexes the bank's reports read.

-- A finalized monthly statement of one merchant: a snapshot that never changes (see the triggers below).
-- Names are copied so that renaming a merchant, store or perk later does not rewrite a paid statement.
CREATE TABLE statements (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    merchant_id       uuid NOT NULL REFERENCES merchants (id),
    year              integer NOT NULL,
    month             integer NOT NULL CHECK (month BETWEEN 1 AND 12),
    merchant_name     text NOT NULL,
    redeemed_count    bigint NOT NULL,
    redeemed_fen      bigint NOT NULL,
    adjustment_count  bigint NOT NULL CHECK (adjustment_count <= 0),
    adjustment_fen    bigint NOT NULL CHECK (adjustment_fen <= 0),
    finalized_at      timestamptz NOT NULL,
    finalized_by      uuid REFERENCES users (id),
    UNIQUE (merchant_id, year, month)
);

CREATE TABLE statement_lines (
    statement_id    uuid NOT NULL REFERENCES statements (id),
    line_no         integer NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('redemption', 'adjustment')),
    store_id        uuid NOT NULL,
    store_name      text NOT NULL,
    perk_code       text NOT NULL,
    perk_name       text NOT NULL,
    source_year     integer,
    source_month    integer,
    unit_price_fen  bigint NOT NULL,
    count           integer NOT NULL,
    amount_fen      bigint NOT NULL,
    PRIMARY KEY (statement_id, line_no),
    CHECK ((kind = 'adjustment') = (source_year IS NOT NULL AND source_month IS NOT NULL)),
    CHECK ((kind = 'adjustment') = (count < 0))
);

-- The month's redemptions that were already voided when its statement was finalized (so never paid): a void
-- of any other redemption of a finalized month is owed back, whatever the two instants' clocks said.
CREATE TABLE statement_exclusions (
    redemption_id  uuid PRIMARY KEY REFERENCES redemptions (id),
    statement_id   uuid NOT NULL REFERENCES statements (id)
);

-- Voids of earlier finalized months that a finalized statement took back as negative lines: each at most once.
CREATE TABLE statement_adjustments (
    redemption_id  uuid PRIMARY KEY REFERENCES redemptions (id),
    statement_id   uuid NOT NULL REFERENCES statements (id)
);
CREATE INDEX statement_adjustments_statement ON statement_adjustments (statement_id);
CREATE INDEX statement_exclusions_statement ON statement_exclusions (statement_id);

-- Voids owed back: redemptions of a finalized month, voided after its snapshot, not yet taken back by a later
-- finalized statement. An open month's statement shows those of the finalized months right before it.
CREATE VIEW owed_voids AS
SELECT r.id, r.merchant_id, r.store_id, r.perk_code, r.quota_year, r.quota_month, r.unit_price_fen
FROM redemptions r
JOIN statements s ON s.merchant_id = r.merchant_id AND s.year = r.quota_year AND s.month = r.quota_month
WHERE r.status = 'voided'
  AND NOT EXISTS (SELECT 1 FROM statement_exclusions x WHERE x.redemption_id = r.id)
  AND NOT EXISTS (SELECT 1 FROM statement_adjustments a WHERE a.redemption_id = r.id);

CREATE FUNCTION statement_is_final() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'a finalized statement never changes' USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER statements_final BEFORE UPDATE OR DELETE ON statements
    FOR EACH ROW EXECUTE FUNCTION statement_is_final();
CREATE TRIGGER statement_lines_final BEFORE UPDATE OR DELETE ON statement_lines
    FOR EACH ROW EXECUTE FUNCTION statement_is_final();
CREATE TRIGGER statement_exclusions_final BEFORE UPDATE OR DELETE ON statement_exclusions
    FOR EACH ROW EXECUTE FUNCTION statement_is_final();
CREATE TRIGGER statement_adjustments_final BEFORE UPDATE OR DELETE ON statement_adjustments
    FOR EACH ROW EXECUTE FUNCTION statement_is_final();
CREATE TRIGGER statements_no_truncate BEFORE TRUNCATE ON statements
    FOR EACH STATEMENT EXECUTE FUNCTION statement_is_final();
CREATE TRIGGER statement_lines_no_truncate BEFORE TRUNCATE ON statement_lines
    FOR EACH STATEMENT EXECUTE FUNCTION statement_is_final();
CREATE TRIGGER statement_exclusions_no_truncate BEFORE TRUNCATE ON statement_exclusions
    FOR EACH STATEMENT EXECUTE FUNCTION statement_is_final();
CREATE TRIGGER statement_adjustments_no_truncate BEFORE TRUNCATE ON statement_adjustments
    FOR EACH STATEMENT EXECUTE FUNCTION statement_is_final();

-- A month's redemptions (statements, settlement, reports by year): one index serves a merchant-month, a month
-- and a year alike.
CREATE INDEX redemptions_period ON redemptions (quota_year, quota_month, merchant_id);
-- Voids are rare: the adjustments of finalized months look only at them.
CREATE INDEX redemptions_voided ON redemptions (merchant_id, quota_year, quota_month) WHERE status = 'voided';

-- A client's rating of one of its redemptions, at most one each.
CREATE TABLE feedback (
    redemption_id  uuid PRIMARY KEY REFERENCES redemptions (id),
    client_id      uuid NOT NULL REFERENCES clients (id),
    merchant_id    uuid NOT NULL REFERENCES merchants (id),
    store_id       uuid NOT NULL,
    perk_code      code NOT NULL REFERENCES perks (code) ON UPDATE CASCADE,
    rating         smallint NOT NULL CHECK (rating BETWEEN 1 AND 5),
    comment        text CHECK (length(comment) BETWEEN 1 AND 500),
    created_at     timestamptz NOT NULL,
    FOREIGN KEY (merchant_id, store_id) REFERENCES stores (merchant_id, id)
);
CREATE INDEX feedback_merchant ON feedback (merchant_id, created_at DESC, redemption_id) INCLUDE (rating);
