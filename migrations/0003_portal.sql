-- One-time links that open a client's wallet page; only a hash of each link's secret is kept.

CREATE TABLE wallet_links (
    token_hash  bytea PRIMARY KEY CHECK (length(token_hash) = 32),
    client_id   uuid NOT NULL REFERENCES clients (id),
    created_by  uuid REFERENCES users (id),
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    CHECK (expires_at > created_at)
);
CREATE INDEX wallet_links_client ON wallet_links (client_id, created_at DESC);
CREATE INDEX wallet_links_expires ON wallet_links (expires_at);
