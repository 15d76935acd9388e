-- v1.1: what several capabilities share, laid down once: account status and session generations (revocation),
-- the event outbox, grants, and client tags (segments).

-- A disabled user cannot log in; bumping a session generation refuses every session token issued before it.
ALTER TABLE users ADD COLUMN status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'disabled'));
ALTER TABLE users ADD COLUMN session_generation integer NOT NULL DEFAULT 0 CHECK (session_generation >= 0);
ALTER TABLE clients ADD COLUMN session_generation integer NOT NULL DEFAULT 0 CHECK (session_generation >= 0);

-- The outbox: one row per business event, inserted in the transaction of the change it reports. `tx` is the
-- writing transaction, so that a reader can hold back rows of transactions still in flight (ids are assigned
-- before commit, and a lower id may commit after a higher one).
CREATE TABLE events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    type         text NOT NULL CHECK (type IN ('redemption.created', 'redemption.voided', 'client.tier_changed',
                                               'statement.finalized', 'grant.created', 'merchant.suspended')),
    occurred_at  timestamptz NOT NULL,
    data         jsonb NOT NULL,
    tx           xid8 NOT NULL DEFAULT pg_current_xact_id()
);
CREATE INDEX events_type ON events (type, id);

-- One-off perks with an expiry: uses beyond the tier's quota until the end of `expires_on` (bank time zone).
CREATE TABLE grants (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    client_id      uuid NOT NULL REFERENCES clients (id),
    perk_code      code NOT NULL REFERENCES perks (code) ON UPDATE CASCADE,
    quantity       integer NOT NULL CHECK (quantity >= 1),
    used           integer NOT NULL DEFAULT 0 CHECK (used >= 0 AND used <= quantity),
    expires_on     date NOT NULL,
    reason         text NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    status         text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    created_at     timestamptz NOT NULL,
    created_by     uuid REFERENCES users (id),
    revoked_at     timestamptz,
    revoked_by     uuid REFERENCES users (id),
    revoke_reason  text CHECK (length(revoke_reason) <= 500),
    CHECK ((status = 'revoked') = (revoked_at IS NOT NULL))
);
CREATE INDEX grants_client_perk ON grants (client_id, perk_code, expires_on, created_at);
-- The grant a redemption drew on (NULL: the tier's quota), so that a void gives the use back where it took it.
ALTER TABLE redemptions ADD COLUMN grant_id uuid REFERENCES grants (id);

-- Segments: who a client is (car owner, parent...), and entitlements that require a tag.
ALTER TABLE clients ADD COLUMN tags code[] NOT NULL DEFAULT '{}' CHECK (cardinality(tags) <= 32);
CREATE INDEX clients_tags ON clients USING gin (tags);
ALTER TABLE entitlements ADD COLUMN required_tag code;

-- A per-user request counter for terminals (scan, redeem), shared by every worker and host: a stolen cashier token
-- cannot scan hundreds of times a second. UNLOGGED: after a crash it starts empty, which only forgives a minute.
CREATE UNLOGGED TABLE request_rates (
    user_id       uuid PRIMARY KEY,
    window_start  timestamptz NOT NULL,
    count         integer NOT NULL CHECK (count >= 0)
);
