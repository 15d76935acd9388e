-- Signed vouchers, redemptions and the counters they move.

CREATE TABLE signing_keys (
    kid                    text PRIMARY KEY CHECK (kid ~ '^[A-Za-z0-9_-]{1,16}$'),
    public_key             bytea NOT NULL,
    private_key_encrypted  bytea NOT NULL,
    created_at             timestamptz NOT NULL DEFAULT now(),
    retired_at             timestamptz
);
-- At most one active key at a time.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys ((true)) WHERE retired_at IS NULL;

CREATE TABLE vouchers (
    id          text PRIMARY KEY CHECK (length(id) BETWEEN 8 AND 16),
    seq         bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    client_id   uuid NOT NULL REFERENCES clients (id),
    perk_code   code NOT NULL REFERENCES perks (code) ON UPDATE CASCADE,
    kid         text NOT NULL REFERENCES signing_keys (kid),
    token       text NOT NULL,
    issued_at   timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    CHECK (expires_at > issued_at)
);
-- The newest voucher of a client for a perk is the live one; older ones are superseded.
CREATE INDEX vouchers_client_perk ON vouchers (client_id, perk_code, seq DESC);

CREATE TABLE redemptions (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    voucher_id      text NOT NULL UNIQUE REFERENCES vouchers (id),
    client_id       uuid NOT NULL REFERENCES clients (id),
    perk_code       code NOT NULL REFERENCES perks (code) ON UPDATE CASCADE,
    merchant_id     uuid NOT NULL REFERENCES merchants (id),
    store_id        uuid NOT NULL,
    redeemed_by     uuid NOT NULL REFERENCES users (id),
    tier_code       code NOT NULL,
    redeemed_at     timestamptz NOT NULL,
    quota_year      integer NOT NULL,
    quota_month     integer NOT NULL CHECK (quota_month BETWEEN 1 AND 12),
    unit_price_fen  bigint NOT NULL CHECK (unit_price_fen >= 0),
    status          text NOT NULL DEFAULT 'redeemed' CHECK (status IN ('redeemed', 'voided')),
    voided_at       timestamptz,
    voided_by       uuid REFERENCES users (id),
    void_reason     text,
    FOREIGN KEY (merchant_id, store_id) REFERENCES stores (merchant_id, id),
    CHECK ((status = 'voided') = (voided_at IS NOT NULL))
);
CREATE INDEX redemptions_merchant ON redemptions (merchant_id, redeemed_at DESC, id);
CREATE INDEX redemptions_store ON redemptions (store_id, redeemed_at DESC);
CREATE INDEX redemptions_client ON redemptions (client_id, redeemed_at DESC, id);

-- Counters moved by conditional updates in the redemption's transaction; `used` counts redemptions not voided.
CREATE TABLE client_yearly_usage (
    client_id  uuid NOT NULL REFERENCES clients (id),
    perk_code  code NOT NULL REFERENCES perks (code) ON UPDATE CASCADE,
    year       integer NOT NULL,
    used       integer NOT NULL DEFAULT 0 CHECK (used >= 0),
    PRIMARY KEY (client_id, perk_code, year)
);

CREATE TABLE client_monthly_usage (
    client_id  uuid NOT NULL REFERENCES clients (id),
    perk_code  code NOT NULL REFERENCES perks (code) ON UPDATE CASCADE,
    year       integer NOT NULL,
    month      integer NOT NULL CHECK (month BETWEEN 1 AND 12),
    used       integer NOT NULL DEFAULT 0 CHECK (used >= 0),
    PRIMARY KEY (client_id, perk_code, year, month)
);

CREATE TABLE merchant_yearly_usage (
    merchant_id  uuid NOT NULL REFERENCES merchants (id),
    perk_code    code NOT NULL REFERENCES perks (code) ON UPDATE CASCADE,
    year         integer NOT NULL,
    used         integer NOT NULL DEFAULT 0 CHECK (used >= 0),
    PRIMARY KEY (merchant_id, perk_code, year)
);

-- A redemption request's first response, replayed for the same key and body within 24 hours.
CREATE TABLE idempotency_keys (
    merchant_id   uuid NOT NULL REFERENCES merchants (id),
    key           text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_hash  bytea NOT NULL,
    status        integer NOT NULL,
    body          jsonb NOT NULL,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (merchant_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
