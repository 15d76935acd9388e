-- v1.1 events: webhook subscriptions and their deliveries.

-- The outbox is read in the order events become final: by writing transaction, then id. Ids are assigned before
-- commit, so id order alone lets a reader pass a row that a slower transaction commits later; every row whose `tx`
-- is below the oldest running transaction is final, and in (tx, id) order nothing can appear behind a cursor.
CREATE INDEX events_tx_id ON events (tx, id);

CREATE TABLE webhooks (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    url               text NOT NULL CHECK (length(url) BETWEEN 1 AND 2000),
    event_types       text[] NOT NULL CHECK (cardinality(event_types) >= 1),
    description       text CHECK (length(description) <= 500),
    status            text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'paused')),
    -- AES-GCM (nonce || ciphertext) under a key derived from PERKS_SECRET; the id is the associated data.
    secret_encrypted  bytea NOT NULL,
    -- The last event (in outbox order) this subscription has taken into its deliveries.
    cursor_tx         xid8 NOT NULL,
    cursor_id         bigint NOT NULL,
    -- A worker delivering for this subscription holds it until then (no transaction stays open over HTTP).
    lease_until       timestamptz,
    lease_token       uuid,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL
);

CREATE TABLE webhook_deliveries (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    webhook_id       uuid NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    event_id         bigint NOT NULL REFERENCES events (id),
    -- The event's place in outbox order, so that a subscription's deliveries go out in that order.
    event_tx         xid8 NOT NULL,
    status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_status      integer,
    last_error       text,
    next_attempt_at  timestamptz NOT NULL,
    -- Retries stop 24 h (configurable) after this instant: the first attempt, or the last manual retry.
    retry_since      timestamptz,
    delivered_at     timestamptz,
    created_at       timestamptz NOT NULL,
    UNIQUE (webhook_id, event_id)
);
CREATE INDEX webhook_deliveries_pending ON webhook_deliveries (webhook_id, event_tx, event_id) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_list ON webhook_deliveries (webhook_id, created_at, id);
