-- The configuration side of the program: accounts, catalogue, merchants, clients, audit.

CREATE DOMAIN code AS text CHECK (VALUE ~ '^[a-z0-9_]{1,32}$');

CREATE TABLE tiers (
    code        code PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    rank        integer NOT NULL UNIQUE CHECK (rank >= 0),
    min_points  bigint NOT NULL DEFAULT 0 CHECK (min_points >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE perks (
    code                 code PRIMARY KEY,
    name                 text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    category             text NOT NULL CHECK (length(category) BETWEEN 1 AND 64),
    description          text CHECK (length(description) <= 2000),
    voucher_ttl_seconds  integer NOT NULL DEFAULT 300 CHECK (voucher_ttl_seconds BETWEEN 30 AND 2592000),
    birthday_only        boolean NOT NULL DEFAULT false,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE entitlements (
    tier_code     code NOT NULL REFERENCES tiers (code) ON UPDATE CASCADE,
    perk_code     code NOT NULL REFERENCES perks (code) ON UPDATE CASCADE,
    yearly_quota  integer CHECK (yearly_quota >= 0),
    monthly_cap   integer CHECK (monthly_cap >= 1),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tier_code, perk_code)
);

CREATE TABLE merchants (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name           text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    category       text NOT NULL CHECK (length(category) BETWEEN 1 AND 64),
    city           text CHECK (length(city) <= 100),
    contact_phone  text CHECK (length(contact_phone) <= 32),
    status         text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'suspended')),
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX merchants_created ON merchants (created_at, id);

CREATE TABLE stores (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    merchant_id  uuid NOT NULL REFERENCES merchants (id),
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    address      text CHECK (length(address) <= 500),
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (merchant_id, id)
);
CREATE INDEX stores_merchant ON stores (merchant_id, created_at, id);

-- The partner agreement: which perks a merchant honours, how many a year the bank pays for, at what price.
CREATE TABLE agreements (
    merchant_id      uuid NOT NULL REFERENCES merchants (id),
    perk_code        code NOT NULL REFERENCES perks (code) ON UPDATE CASCADE,
    yearly_capacity  integer CHECK (yearly_capacity >= 0),
    unit_price_fen   bigint NOT NULL CHECK (unit_price_fen >= 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (merchant_id, perk_code)
);

CREATE TABLE users (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    username       text NOT NULL UNIQUE CHECK (length(username) BETWEEN 1 AND 64),
    password_hash  text NOT NULL,
    role           text NOT NULL CHECK (role IN ('admin', 'operator', 'auditor', 'manager', 'cashier')),
    merchant_id    uuid REFERENCES merchants (id),
    store_id       uuid,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (merchant_id, store_id) REFERENCES stores (merchant_id, id),
    CHECK (
        (role IN ('admin', 'operator', 'auditor') AND merchant_id IS NULL AND store_id IS NULL)
        OR (role = 'manager' AND merchant_id IS NOT NULL)
        OR (role = 'cashier' AND merchant_id IS NOT NULL AND store_id IS NOT NULL)
    )
);
CREATE INDEX users_merchant ON users (merchant_id, created_at, id) WHERE merchant_id IS NOT NULL;

-- Failed logins, kept so that throttling holds across processes and hosts.
CREATE TABLE login_failures (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username   text NOT NULL,
    failed_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_recent ON login_failures (username, failed_at);

CREATE TABLE clients (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    external_ref  text NOT NULL UNIQUE CHECK (length(external_ref) BETWEEN 1 AND 64),
    name          text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    phone         text CHECK (length(phone) <= 32),
    birthday      date,
    tier_code     code REFERENCES tiers (code) ON UPDATE CASCADE,
    status        text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'blocked')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX clients_created ON clients (created_at, id);
CREATE INDEX clients_tier ON clients (tier_code);

-- Who changed what, when, from what to what. Written in the transaction of the change; never altered.
CREATE TABLE audit_log (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at              timestamptz NOT NULL DEFAULT now(),
    actor_id        uuid,
    actor_username  text NOT NULL,
    actor_role      text NOT NULL,
    action          text NOT NULL,
    entity_type     text NOT NULL,
    entity_id       text NOT NULL,
    before          jsonb,
    after           jsonb
);
CREATE INDEX audit_log_entity ON audit_log (entity_type, entity_id, id DESC);
CREATE INDEX audit_log_actor ON audit_log (actor_username, id DESC);
CREATE INDEX audit_log_at ON audit_log (at);

CREATE FUNCTION audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();
