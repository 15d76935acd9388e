-- Points and tiers: points rules per source, contribution events, manual tier overrides and the tier history.

-- How many points a unit of contribution earns: `points_per_yuan` points per 100 fen, exact to 1/10000 of a point.
-- An event earns floor(amount_fen * points_per_yuan / 100) points, computed once, when it is ingested.
CREATE TABLE points_rules (
    source           code PRIMARY KEY,
    points_per_yuan  numeric(12, 4) NOT NULL CHECK (points_per_yuan >= 0 AND points_per_yuan <= 10000),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- A contribution reported by the bank's systems; `event_ref` makes every replay a no-op.
-- No foreign keys: events are only ever written by a join with clients and points_rules (neither is ever deleted),
-- and the per-row checks would triple the time of a bulk import (measured: 23 s instead of 7 s for 1.2M rows).
CREATE TABLE points_events (
    event_ref    text PRIMARY KEY CHECK (length(event_ref) BETWEEN 1 AND 64),
    client_id    uuid NOT NULL,
    source       code NOT NULL,
    amount_fen   bigint NOT NULL CHECK (amount_fen >= 0),
    points       bigint NOT NULL CHECK (points >= 0),
    occurred_at  timestamptz NOT NULL,
    batch_id     uuid NOT NULL,
    ingested_at  timestamptz NOT NULL
);
-- A client's trailing-window sum reads only this index (an index-only scan).
CREATE INDEX points_events_client ON points_events (client_id, occurred_at) INCLUDE (source, points);

-- A manual tier holds until this instant; tier evaluation leaves the client alone until then.
ALTER TABLE clients ADD COLUMN tier_override_until timestamptz;
CREATE INDEX clients_tier_override ON clients (tier_override_until) WHERE tier_override_until IS NOT NULL;

-- Every change of a client's tier made by evaluation, override, a manual change or an import. Never altered.
-- Rows come from updates of existing clients (never deleted); a foreign key would only slow a million-row evaluation.
CREATE TABLE tier_history (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    client_id       uuid NOT NULL,
    from_tier       code,
    to_tier         code,
    reason          text NOT NULL CHECK (reason IN ('evaluation', 'override', 'manual', 'import')),
    points          bigint,
    override_until  timestamptz,
    changed_at      timestamptz NOT NULL,
    actor_id        uuid,
    actor_username  text NOT NULL,
    actor_role      text NOT NULL
);
CREATE INDEX tier_history_client ON tier_history (client_id, id DESC);

CREATE FUNCTION tier_history_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'tier_history is append-only' USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER tier_history_no_update BEFORE UPDATE OR DELETE ON tier_history
    FOR EACH ROW EXECUTE FUNCTION tier_history_is_append_only();

-- An instant spelled as the API spells it (Python's isoformat in UTC), for audit entries written set-based in SQL.
CREATE FUNCTION iso_utc(instant timestamptz) RETURNS text LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT to_char(instant AT TIME ZONE 'UTC',
                   CASE WHEN date_part('microseconds', instant)::bigint % 1000000 = 0
                        THEN 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'
                        ELSE 'YYYY-MM-DD"T"HH24:MI:SS.US"+00:00"' END)
$$;
