-- Generated from a database with every migration applied: scripts/schema rewrites it, and a test checks it.
-- Read it to see each table whole; change the schema with a new file in migrations/, never here.
CREATE DOMAIN code AS text CHECK ((VALUE ~ '^[a-z0-9_]{1,32}$'::text));

CREATE TABLE agreements (
    merchant_id uuid NOT NULL,
    perk_code code NOT NULL,
    yearly_capacity integer,
    unit_price_fen bigint NOT NULL,
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    updated_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT agreements_pkey PRIMARY KEY (merchant_id, perk_code),
    CONSTRAINT agreements_merchant_id_fkey FOREIGN KEY (merchant_id) REFERENCES merchants(id),
    CONSTRAINT agreements_perk_code_fkey FOREIGN KEY (perk_code) REFERENCES perks(code) ON UPDATE CASCADE,
    CONSTRAINT agreements_unit_price_fen_check CHECK ((unit_price_fen >= 0)),
    CONSTRAINT agreements_yearly_capacity_check CHECK ((yearly_capacity >= 0))
);

CREATE TABLE audit_log (
    id bigint GENERATED ALWAYS AS IDENTITY NOT NULL,
    at timestamp with time zone NOT NULL DEFAULT now(),
    actor_id uuid,
    actor_username text NOT NULL,
    actor_role text NOT NULL,
    action text NOT NULL,
    entity_type text NOT NULL,
    entity_id text NOT NULL,
    before jsonb,
    after jsonb,
    CONSTRAINT audit_log_pkey PRIMARY KEY (id)
);
CREATE INDEX audit_log_actor ON public.audit_log USING btree (actor_username, id DESC);
CREATE INDEX audit_log_at ON public.audit_log USING btree (at);
CREATE INDEX audit_log_entity ON public.audit_log USING btree (entity_type, entity_id, id DESC);

CREATE TABLE client_monthly_usage (
    client_id uuid NOT NULL,
    perk_code code NOT NULL,
    year integer NOT NULL,
    month integer NOT NULL,
    used integer NOT NULL DEFAULT 0,
    CONSTRAINT client_monthly_usage_pkey PRIMARY KEY (client_id, perk_code, year, month),
    CONSTRAINT client_monthly_usage_client_id_fkey FOREIGN KEY (client_id) REFERENCES clients(id),
    CONSTRAINT client_monthly_usage_perk_code_fkey FOREIGN KEY (perk_code) REFERENCES perks(code) ON UPDATE CASCADE,
    CONSTRAINT client_monthly_usage_month_check CHECK (((month >= 1) AND (month <= 12))),
    CONSTRAINT client_monthly_usage_used_check CHECK ((used >= 0))
);

CREATE TABLE client_yearly_usage (
    client_id uuid NOT NULL,
    perk_code code NOT NULL,
    year integer NOT NULL,
    used integer NOT NULL DEFAULT 0,
    CONSTRAINT client_yearly_usage_pkey PRIMARY KEY (client_id, perk_code, year),
    CONSTRAINT client_yearly_usage_client_id_fkey FOREIGN KEY (client_id) REFERENCES clients(id),
    CONSTRAINT client_yearly_usage_perk_code_fkey FOREIGN KEY (perk_code) REFERENCES perks(code) ON UPDATE CASCADE,
    CONSTRAINT client_yearly_usage_used_check CHECK ((used >= 0))
);

CREATE TABLE clients (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    external_ref text NOT NULL,
    name text NOT NULL,
    phone text,
    birthday date,
    tier_code code,
    status text NOT NULL DEFAULT 'active'::text,
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    updated_at timestamp with time zone NOT NULL DEFAULT now(),
    tier_override_until timestamp with time zone,
    session_generation integer NOT NULL DEFAULT 0,
    tags code[] NOT NULL DEFAULT '{}'::code[],
    CONSTRAINT clients_pkey PRIMARY KEY (id),
    CONSTRAINT clients_external_ref_key UNIQUE (external_ref),
    CONSTRAINT clients_tier_code_fkey FOREIGN KEY (tier_code) REFERENCES tiers(code) ON UPDATE CASCADE,
    CONSTRAINT clients_external_ref_check CHECK (((length(external_ref) >= 1) AND (length(external_ref) <= 64))),
    CONSTRAINT clients_name_check CHECK (((length(name) >= 1) AND (length(name) <= 200))),
    CONSTRAINT clients_phone_check CHECK ((length(phone) <= 32)),
    CONSTRAINT clients_session_generation_check CHECK ((session_generation >= 0)),
    CONSTRAINT clients_status_check CHECK ((status = ANY (ARRAY['active'::text, 'blocked'::text]))),
    CONSTRAINT clients_tags_check CHECK ((cardinality(tags) <= 32))
) WITH (fillfactor=50);
CREATE INDEX clients_created ON public.clients USING btree (created_at, id);
CREATE INDEX clients_tags ON public.clients USING gin (tags);
CREATE INDEX clients_tier_override ON public.clients USING btree (tier_override_until) WHERE (tier_override_until IS NOT NULL);

CREATE TABLE entitlements (
    tier_code code NOT NULL,
    perk_code code NOT NULL,
    yearly_quota integer,
    monthly_cap integer,
    updated_at timestamp with time zone NOT NULL DEFAULT now(),
    required_tag code,
    CONSTRAINT entitlements_pkey PRIMARY KEY (tier_code, perk_code),
    CONSTRAINT entitlements_perk_code_fkey FOREIGN KEY (perk_code) REFERENCES perks(code) ON UPDATE CASCADE,
    CONSTRAINT entitlements_tier_code_fkey FOREIGN KEY (tier_code) REFERENCES tiers(code) ON UPDATE CASCADE,
    CONSTRAINT entitlements_monthly_cap_check CHECK ((monthly_cap >= 1)),
    CONSTRAINT entitlements_yearly_quota_check CHECK ((yearly_quota >= 0))
);

CREATE TABLE events (
    id bigint GENERATED ALWAYS AS IDENTITY NOT NULL,
    type text NOT NULL,
    occurred_at timestamp with time zone NOT NULL,
    data jsonb NOT NULL,
    tx xid8 NOT NULL DEFAULT pg_current_xact_id(),
    CONSTRAINT events_pkey PRIMARY KEY (id),
    CONSTRAINT events_type_check CHECK ((type = ANY (ARRAY['redemption.created'::text, 'redemption.voided'::text, 'client.tier_changed'::text, 'statement.finalized'::text, 'grant.created'::text, 'merchant.suspended'::text])))
);
CREATE INDEX events_tx_id ON public.events USING btree (tx, id);
CREATE INDEX events_type ON public.events USING btree (type, id);

CREATE TABLE feedback (
    redemption_id uuid NOT NULL,
    client_id uuid NOT NULL,
    merchant_id uuid NOT NULL,
    store_id uuid NOT NULL,
    perk_code code NOT NULL,
    rating smallint NOT NULL,
    comment text,
    created_at timestamp with time zone NOT NULL,
    CONSTRAINT feedback_pkey PRIMARY KEY (redemption_id),
    CONSTRAINT feedback_client_id_fkey FOREIGN KEY (client_id) REFERENCES clients(id),
    CONSTRAINT feedback_merchant_id_fkey FOREIGN KEY (merchant_id) REFERENCES merchants(id),
    CONSTRAINT feedback_merchant_id_store_id_fkey FOREIGN KEY (merchant_id, store_id) REFERENCES stores(merchant_id, id),
    CONSTRAINT feedback_perk_code_fkey FOREIGN KEY (perk_code) REFERENCES perks(code) ON UPDATE CASCADE,
    CONSTRAINT feedback_redemption_id_fkey FOREIGN KEY (redemption_id) REFERENCES redemptions(id),
    CONSTRAINT feedback_comment_check CHECK (((length(comment) >= 1) AND (length(comment) <= 500))),
    CONSTRAINT feedback_rating_check CHECK (((rating >= 1) AND (rating <= 5)))
);
CREATE INDEX feedback_merchant ON public.feedback USING btree (merchant_id, created_at DESC, redemption_id) INCLUDE (rating);

CREATE TABLE grants (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    client_id uuid NOT NULL,
    perk_code code NOT NULL,
    quantity integer NOT NULL,
    used integer NOT NULL DEFAULT 0,
    expires_on date NOT NULL,
    reason text NOT NULL,
    status text NOT NULL DEFAULT 'active'::text,
    created_at timestamp with time zone NOT NULL,
    created_by uuid,
    revoked_at timestamp with time zone,
    revoked_by uuid,
    revoke_reason text,
    CONSTRAINT grants_pkey PRIMARY KEY (id),
    CONSTRAINT grants_client_id_fkey FOREIGN KEY (client_id) REFERENCES clients(id),
    CONSTRAINT grants_created_by_fkey FOREIGN KEY (created_by) REFERENCES users(id),
    CONSTRAINT grants_perk_code_fkey FOREIGN KEY (perk_code) REFERENCES perks(code) ON UPDATE CASCADE,
    CONSTRAINT grants_revoked_by_fkey FOREIGN KEY (revoked_by) REFERENCES users(id),
    CONSTRAINT grants_check CHECK (((used >= 0) AND (used <= quantity))),
    CONSTRAINT grants_check1 CHECK (((status = 'revoked'::text) = (revoked_at IS NOT NULL))),
    CONSTRAINT grants_quantity_check CHECK ((quantity >= 1)),
    CONSTRAINT grants_reason_check CHECK (((length(reason) >= 1) AND (length(reason) <= 500))),
    CONSTRAINT grants_revoke_reason_check CHECK ((length(revoke_reason) <= 500)),
    CONSTRAINT grants_status_check CHECK ((status = ANY (ARRAY['active'::text, 'revoked'::text])))
);
CREATE INDEX grants_client_perk ON public.grants USING btree (client_id, perk_code, expires_on, created_at);

CREATE TABLE idempotency_keys (
    merchant_id uuid NOT NULL,
    key text NOT NULL,
    request_hash bytea NOT NULL,
    status integer NOT NULL,
    body jsonb NOT NULL,
    created_at timestamp with time zone NOT NULL,
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (merchant_id, key),
    CONSTRAINT idempotency_keys_key_check CHECK (((length(key) >= 1) AND (length(key) <= 255)))
);
CREATE INDEX idempotency_keys_created ON public.idempotency_keys USING btree (created_at);

CREATE TABLE login_failures (
    id bigint GENERATED ALWAYS AS IDENTITY NOT NULL,
    username text NOT NULL,
    failed_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT login_failures_pkey PRIMARY KEY (id)
);
CREATE INDEX login_failures_recent ON public.login_failures USING btree (username, failed_at);

CREATE TABLE merchant_capacity_slots (
    merchant_id uuid NOT NULL,
    perk_code code NOT NULL,
    year integer NOT NULL,
    slot smallint NOT NULL,
    used integer NOT NULL DEFAULT 0,
    CONSTRAINT merchant_capacity_slots_pkey PRIMARY KEY (merchant_id, perk_code, year, slot),
    CONSTRAINT merchant_capacity_slots_merchant_id_fkey FOREIGN KEY (merchant_id) REFERENCES merchants(id),
    CONSTRAINT merchant_capacity_slots_perk_code_fkey FOREIGN KEY (perk_code) REFERENCES perks(code) ON UPDATE CASCADE,
    CONSTRAINT merchant_capacity_slots_slot_check CHECK (((slot >= 0) AND (slot <= 15))),
    CONSTRAINT merchant_capacity_slots_used_check CHECK ((used >= 0))
);

CREATE TABLE merchants (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    name text NOT NULL,
    category text NOT NULL,
    city text,
    contact_phone text,
    status text NOT NULL DEFAULT 'active'::text,
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    updated_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT merchants_pkey PRIMARY KEY (id),
    CONSTRAINT merchants_category_check CHECK (((length(category) >= 1) AND (length(category) <= 64))),
    CONSTRAINT merchants_city_check CHECK ((length(city) <= 100)),
    CONSTRAINT merchants_contact_phone_check CHECK ((length(contact_phone) <= 32)),
    CONSTRAINT merchants_name_check CHECK (((length(name) >= 1) AND (length(name) <= 200))),
    CONSTRAINT merchants_status_check CHECK ((status = ANY (ARRAY['active'::text, 'suspended'::text])))
);
CREATE INDEX merchants_created ON public.merchants USING btree (created_at, id);

CREATE TABLE perks (
    code code NOT NULL,
    name text NOT NULL,
    category text NOT NULL,
    description text,
    voucher_ttl_seconds integer NOT NULL DEFAULT 300,
    birthday_only boolean NOT NULL DEFAULT false,
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    updated_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT perks_pkey PRIMARY KEY (code),
    CONSTRAINT perks_category_check CHECK (((length(category) >= 1) AND (length(category) <= 64))),
    CONSTRAINT perks_description_check CHECK ((length(description) <= 2000)),
    CONSTRAINT perks_name_check CHECK (((length(name) >= 1) AND (length(name) <= 100))),
    CONSTRAINT perks_voucher_ttl_seconds_check CHECK (((voucher_ttl_seconds >= 30) AND (voucher_ttl_seconds <= 2592000)))
);

CREATE TABLE points_events (
    event_ref text NOT NULL,
    client_id uuid NOT NULL,
    source code NOT NULL,
    amount_fen bigint NOT NULL,
    points bigint NOT NULL,
    occurred_at timestamp with time zone NOT NULL,
    batch_id uuid NOT NULL,
    ingested_at timestamp with time zone NOT NULL,
    CONSTRAINT points_events_pkey PRIMARY KEY (event_ref),
    CONSTRAINT points_events_amount_fen_check CHECK ((amount_fen >= 0)),
    CONSTRAINT points_events_event_ref_check CHECK (((length(event_ref) >= 1) AND (length(event_ref) <= 64))),
    CONSTRAINT points_events_points_check CHECK ((points >= 0))
);
CREATE INDEX points_events_client ON public.points_events USING btree (client_id, occurred_at) INCLUDE (source, points);

CREATE TABLE points_rules (
    source code NOT NULL,
    points_per_yuan numeric(12,4) NOT NULL,
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    updated_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT points_rules_pkey PRIMARY KEY (source),
    CONSTRAINT points_rules_points_per_yuan_check CHECK (((points_per_yuan >= (0)::numeric) AND (points_per_yuan <= (10000)::numeric)))
);

CREATE TABLE redemptions (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    voucher_id text NOT NULL,
    client_id uuid NOT NULL,
    perk_code code NOT NULL,
    merchant_id uuid NOT NULL,
    store_id uuid NOT NULL,
    redeemed_by uuid NOT NULL,
    tier_code code,
    redeemed_at timestamp with time zone NOT NULL,
    quota_year integer NOT NULL,
    quota_month integer NOT NULL,
    unit_price_fen bigint NOT NULL,
    status text NOT NULL DEFAULT 'redeemed'::text,
    voided_at timestamp with time zone,
    voided_by uuid,
    void_reason text,
    grant_id uuid,
    CONSTRAINT redemptions_pkey PRIMARY KEY (id),
    CONSTRAINT redemptions_voucher_id_key UNIQUE (voucher_id),
    CONSTRAINT redemptions_client_id_fkey FOREIGN KEY (client_id) REFERENCES clients(id),
    CONSTRAINT redemptions_grant_id_fkey FOREIGN KEY (grant_id) REFERENCES grants(id),
    CONSTRAINT redemptions_merchant_id_store_id_fkey FOREIGN KEY (merchant_id, store_id) REFERENCES stores(merchant_id, id),
    CONSTRAINT redemptions_redeemed_by_fkey FOREIGN KEY (redeemed_by) REFERENCES users(id),
    CONSTRAINT redemptions_voided_by_fkey FOREIGN KEY (voided_by) REFERENCES users(id),
    CONSTRAINT redemptions_voucher_perk_fkey FOREIGN KEY (voucher_id, perk_code) REFERENCES vouchers(id, perk_code) ON UPDATE CASCADE,
    CONSTRAINT redemptions_check CHECK (((status = 'voided'::text) = (voided_at IS NOT NULL))),
    CONSTRAINT redemptions_quota_month_check CHECK (((quota_month >= 1) AND (quota_month <= 12))),
    CONSTRAINT redemptions_status_check CHECK ((status = ANY (ARRAY['redeemed'::text, 'voided'::text]))),
    CONSTRAINT redemptions_unit_price_fen_check CHECK ((unit_price_fen >= 0))
);
CREATE INDEX redemptions_client ON public.redemptions USING btree (client_id, redeemed_at DESC, id);
CREATE INDEX redemptions_grant ON public.redemptions USING btree (grant_id) WHERE (grant_id IS NOT NULL);
CREATE INDEX redemptions_merchant ON public.redemptions USING btree (merchant_id, redeemed_at DESC, id);
CREATE INDEX redemptions_period ON public.redemptions USING btree (quota_year, quota_month, merchant_id);
CREATE INDEX redemptions_store ON public.redemptions USING btree (store_id, redeemed_at DESC);
CREATE INDEX redemptions_voided ON public.redemptions USING btree (merchant_id, quota_year, quota_month) WHERE (status = 'voided'::text);

CREATE UNLOGGED TABLE request_rates (
    user_id uuid NOT NULL,
    window_start timestamp with time zone NOT NULL,
    count integer NOT NULL,
    CONSTRAINT request_rates_pkey PRIMARY KEY (user_id),
    CONSTRAINT request_rates_count_check CHECK ((count >= 0))
);

CREATE TABLE schema_migrations (
    version integer NOT NULL,
    name text NOT NULL,
    applied_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT schema_migrations_pkey PRIMARY KEY (version)
);

CREATE TABLE signing_keys (
    kid text NOT NULL,
    public_key bytea NOT NULL,
    private_key_encrypted bytea NOT NULL,
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    retired_at timestamp with time zone,
    activates_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT signing_keys_pkey PRIMARY KEY (kid),
    CONSTRAINT signing_keys_kid_check CHECK ((kid ~ '^[A-Za-z0-9_-]{1,16}$'::text))
);
CREATE UNIQUE INDEX signing_keys_one_active ON public.signing_keys USING btree ((true)) WHERE (retired_at IS NULL);

CREATE TABLE statement_adjustments (
    redemption_id uuid NOT NULL,
    statement_id uuid NOT NULL,
    CONSTRAINT statement_adjustments_pkey PRIMARY KEY (redemption_id),
    CONSTRAINT statement_adjustments_redemption_id_fkey FOREIGN KEY (redemption_id) REFERENCES redemptions(id),
    CONSTRAINT statement_adjustments_statement_id_fkey FOREIGN KEY (statement_id) REFERENCES statements(id)
);
CREATE INDEX statement_adjustments_statement ON public.statement_adjustments USING btree (statement_id);

CREATE TABLE statement_exclusions (
    redemption_id uuid NOT NULL,
    statement_id uuid NOT NULL,
    CONSTRAINT statement_exclusions_pkey PRIMARY KEY (redemption_id),
    CONSTRAINT statement_exclusions_redemption_id_fkey FOREIGN KEY (redemption_id) REFERENCES redemptions(id),
    CONSTRAINT statement_exclusions_statement_id_fkey FOREIGN KEY (statement_id) REFERENCES statements(id)
);
CREATE INDEX statement_exclusions_statement ON public.statement_exclusions USING btree (statement_id);

CREATE TABLE statement_lines (
    statement_id uuid NOT NULL,
    line_no integer NOT NULL,
    kind text NOT NULL,
    store_id uuid NOT NULL,
    store_name text NOT NULL,
    perk_code text NOT NULL,
    perk_name text NOT NULL,
    source_year integer,
    source_month integer,
    unit_price_fen bigint NOT NULL,
    count integer NOT NULL,
    amount_fen bigint NOT NULL,
    CONSTRAINT statement_lines_pkey PRIMARY KEY (statement_id, line_no),
    CONSTRAINT statement_lines_statement_id_fkey FOREIGN KEY (statement_id) REFERENCES statements(id),
    CONSTRAINT statement_lines_check CHECK (((kind = 'adjustment'::text) = ((source_year IS NOT NULL) AND (source_month IS NOT NULL)))),
    CONSTRAINT statement_lines_check1 CHECK (((kind = 'adjustment'::text) = (count < 0))),
    CONSTRAINT statement_lines_kind_check CHECK ((kind = ANY (ARRAY['redemption'::text, 'adjustment'::text])))
);

CREATE TABLE statements (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    merchant_id uuid NOT NULL,
    year integer NOT NULL,
    month integer NOT NULL,
    merchant_name text NOT NULL,
    redeemed_count bigint NOT NULL,
    redeemed_fen bigint NOT NULL,
    adjustment_count bigint NOT NULL,
    adjustment_fen bigint NOT NULL,
    finalized_at timestamp with time zone NOT NULL,
    finalized_by uuid,
    CONSTRAINT statements_pkey PRIMARY KEY (id),
    CONSTRAINT statements_merchant_id_year_month_key UNIQUE (merchant_id, year, month),
    CONSTRAINT statements_finalized_by_fkey FOREIGN KEY (finalized_by) REFERENCES users(id),
    CONSTRAINT statements_merchant_id_fkey FOREIGN KEY (merchant_id) REFERENCES merchants(id),
    CONSTRAINT statements_adjustment_count_check CHECK ((adjustment_count <= 0)),
    CONSTRAINT statements_adjustment_fen_check CHECK ((adjustment_fen <= 0)),
    CONSTRAINT statements_month_check CHECK (((month >= 1) AND (month <= 12)))
);

CREATE TABLE stores (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    merchant_id uuid NOT NULL,
    name text NOT NULL,
    address text,
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    updated_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT stores_pkey PRIMARY KEY (id),
    CONSTRAINT stores_merchant_id_id_key UNIQUE (merchant_id, id),
    CONSTRAINT stores_merchant_id_fkey FOREIGN KEY (merchant_id) REFERENCES merchants(id),
    CONSTRAINT stores_address_check CHECK ((length(address) <= 500)),
    CONSTRAINT stores_name_check CHECK (((length(name) >= 1) AND (length(name) <= 200)))
);
CREATE INDEX stores_merchant ON public.stores USING btree (merchant_id, created_at, id);

CREATE TABLE tier_history (
    id bigint GENERATED ALWAYS AS IDENTITY NOT NULL,
    client_id uuid NOT NULL,
    from_tier code,
    to_tier code,
    reason text NOT NULL,
    points bigint,
    override_until timestamp with time zone,
    changed_at timestamp with time zone NOT NULL,
    actor_id uuid,
    actor_username text NOT NULL,
    actor_role text NOT NULL,
    CONSTRAINT tier_history_pkey PRIMARY KEY (id),
    CONSTRAINT tier_history_reason_check CHECK ((reason = ANY (ARRAY['evaluation'::text, 'override'::text, 'manual'::text, 'import'::text])))
);
CREATE INDEX tier_history_client ON public.tier_history USING btree (client_id, id DESC);

CREATE TABLE tiers (
    code code NOT NULL,
    name text NOT NULL,
    rank integer NOT NULL,
    min_points bigint NOT NULL DEFAULT 0,
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    updated_at timestamp with time zone NOT NULL DEFAULT now(),
    CONSTRAINT tiers_pkey PRIMARY KEY (code),
    CONSTRAINT tiers_rank_key UNIQUE (rank),
    CONSTRAINT tiers_min_points_check CHECK ((min_points >= 0)),
    CONSTRAINT tiers_name_check CHECK (((length(name) >= 1) AND (length(name) <= 100))),
    CONSTRAINT tiers_rank_check CHECK ((rank >= 0))
);

CREATE TABLE users (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    username text NOT NULL,
    password_hash text NOT NULL,
    role text NOT NULL,
    merchant_id uuid,
    store_id uuid,
    created_at timestamp with time zone NOT NULL DEFAULT now(),
    updated_at timestamp with time zone NOT NULL DEFAULT now(),
    status text NOT NULL DEFAULT 'active'::text,
    session_generation integer NOT NULL DEFAULT 0,
    CONSTRAINT users_pkey PRIMARY KEY (id),
    CONSTRAINT users_username_key UNIQUE (username),
    CONSTRAINT users_merchant_id_fkey FOREIGN KEY (merchant_id) REFERENCES merchants(id),
    CONSTRAINT users_merchant_id_store_id_fkey FOREIGN KEY (merchant_id, store_id) REFERENCES stores(merchant_id, id),
    CONSTRAINT users_check CHECK ((((role = ANY (ARRAY['admin'::text, 'operator'::text, 'auditor'::text])) AND (merchant_id IS NULL) AND (store_id IS NULL)) OR ((role = 'manager'::text) AND (merchant_id IS NOT NULL)) OR ((role = 'cashier'::text) AND (merchant_id IS NOT NULL) AND (store_id IS NOT NULL)))),
    CONSTRAINT users_role_check CHECK ((role = ANY (ARRAY['admin'::text, 'operator'::text, 'auditor'::text, 'manager'::text, 'cashier'::text]))),
    CONSTRAINT users_session_generation_check CHECK ((session_generation >= 0)),
    CONSTRAINT users_status_check CHECK ((status = ANY (ARRAY['active'::text, 'disabled'::text]))),
    CONSTRAINT users_username_check CHECK (((length(username) >= 1) AND (length(username) <= 64)))
);
CREATE INDEX users_merchant ON public.users USING btree (merchant_id, created_at, id) WHERE (merchant_id IS NOT NULL);

CREATE TABLE vouchers (
    id text NOT NULL,
    seq bigint GENERATED ALWAYS AS IDENTITY NOT NULL,
    client_id uuid NOT NULL,
    perk_code code NOT NULL,
    kid text NOT NULL,
    token text NOT NULL,
    issued_at timestamp with time zone NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    CONSTRAINT vouchers_pkey PRIMARY KEY (id),
    CONSTRAINT vouchers_id_perk_code_key UNIQUE (id, perk_code),
    CONSTRAINT vouchers_seq_key UNIQUE (seq),
    CONSTRAINT vouchers_client_id_fkey FOREIGN KEY (client_id) REFERENCES clients(id),
    CONSTRAINT vouchers_kid_fkey FOREIGN KEY (kid) REFERENCES signing_keys(kid),
    CONSTRAINT vouchers_perk_code_fkey FOREIGN KEY (perk_code) REFERENCES perks(code) ON UPDATE CASCADE,
    CONSTRAINT vouchers_check CHECK ((expires_at > issued_at)),
    CONSTRAINT vouchers_id_check CHECK (((length(id) >= 8) AND (length(id) <= 16)))
);
CREATE INDEX vouchers_client_perk ON public.vouchers USING btree (client_id, perk_code, seq DESC);

CREATE TABLE wallet_links (
    token_hash bytea NOT NULL,
    client_id uuid NOT NULL,
    created_by uuid,
    created_at timestamp with time zone NOT NULL,
    expires_at timestamp with time zone NOT NULL,
    used_at timestamp with time zone,
    session_generation integer NOT NULL DEFAULT 0,
    CONSTRAINT wallet_links_pkey PRIMARY KEY (token_hash),
    CONSTRAINT wallet_links_client_id_fkey FOREIGN KEY (client_id) REFERENCES clients(id),
    CONSTRAINT wallet_links_created_by_fkey FOREIGN KEY (created_by) REFERENCES users(id),
    CONSTRAINT wallet_links_check CHECK ((expires_at > created_at)),
    CONSTRAINT wallet_links_session_generation_check CHECK ((session_generation >= 0)),
    CONSTRAINT wallet_links_token_hash_check CHECK ((length(token_hash) = 32))
);
CREATE INDEX wallet_links_client ON public.wallet_links USING btree (client_id, created_at DESC);
CREATE INDEX wallet_links_expires ON public.wallet_links USING btree (expires_at);

CREATE TABLE webhook_deliveries (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    webhook_id uuid NOT NULL,
    event_id bigint NOT NULL,
    event_tx xid8 NOT NULL,
    status text NOT NULL DEFAULT 'pending'::text,
    attempts integer NOT NULL DEFAULT 0,
    last_status integer,
    last_error text,
    next_attempt_at timestamp with time zone NOT NULL,
    retry_since timestamp with time zone,
    delivered_at timestamp with time zone,
    created_at timestamp with time zone NOT NULL,
    CONSTRAINT webhook_deliveries_pkey PRIMARY KEY (id),
    CONSTRAINT webhook_deliveries_webhook_id_event_id_key UNIQUE (webhook_id, event_id),
    CONSTRAINT webhook_deliveries_event_id_fkey FOREIGN KEY (event_id) REFERENCES events(id),
    CONSTRAINT webhook_deliveries_webhook_id_fkey FOREIGN KEY (webhook_id) REFERENCES webhooks(id) ON DELETE CASCADE,
    CONSTRAINT webhook_deliveries_attempts_check CHECK ((attempts >= 0)),
    CONSTRAINT webhook_deliveries_status_check CHECK ((status = ANY (ARRAY['pending'::text, 'delivered'::text, 'failed'::text])))
);
CREATE INDEX webhook_deliveries_list ON public.webhook_deliveries USING btree (webhook_id, created_at, id);
CREATE INDEX webhook_deliveries_pending ON public.webhook_deliveries USING btree (webhook_id, event_tx, event_id) WHERE (status = 'pending'::text);

CREATE TABLE webhooks (
    id uuid NOT NULL DEFAULT gen_random_uuid(),
    url text NOT NULL,
    event_types text[] NOT NULL,
    description text,
    status text NOT NULL DEFAULT 'active'::text,
    secret_encrypted bytea NOT NULL,
    cursor_tx xid8 NOT NULL,
    cursor_id bigint NOT NULL,
    lease_until timestamp with time zone,
    lease_token uuid,
    created_at timestamp with time zone NOT NULL,
    updated_at timestamp with time zone NOT NULL,
    CONSTRAINT webhooks_pkey PRIMARY KEY (id),
    CONSTRAINT webhooks_description_check CHECK ((length(description) <= 500)),
    CONSTRAINT webhooks_event_types_check CHECK ((cardinality(event_types) >= 1)),
    CONSTRAINT webhooks_status_check CHECK ((status = ANY (ARRAY['active'::text, 'paused'::text]))),
    CONSTRAINT webhooks_url_check CHECK (((length(url) >= 1) AND (length(url) <= 2000)))
);

-- A view; its query is in the migration that made it.
CREATE VIEW merchant_yearly_usage (
    merchant_id uuid,
    perk_code code,
    year integer,
    used integer
);

-- A view; its query is in the migration that made it.
CREATE VIEW owed_voids (
    id uuid,
    merchant_id uuid,
    store_id uuid,
    perk_code code,
    quota_year integer,
    quota_month integer,
    unit_price_fen bigint
);

-- Functions (bodies in their migrations):
--   audit_log_is_append_only() RETURNS trigger
--   iso_utc(instant timestamp with time zone) RETURNS text
--   perks_capacity_changed() RETURNS trigger
--   perks_decide(p_client uuid, p_perk text, p_year integer, p_month integer, p_today date) RETURNS TABLE(perk text, refusal text, grant_id uuid, entitled boolean, usable_by_tier boolean, yearly_quota integer, monthly_cap integer, used integer, used_this_month integer)
--   perks_give_back(p_client uuid, p_perk text, p_year integer, p_month integer, p_grant uuid) RETURNS void
--   perks_give_back_capacity(p_merchant uuid, p_perk text, p_year integer) RETURNS boolean
--   perks_mask_name(name text) RETURNS text
--   perks_redeem(p_actor uuid, p_username text, p_role text, p_generation integer, p_merchant uuid, p_own_store uuid, p_store uuid, p_voucher text, p_token_deadline timestamp with time zone, p_leeway interval, p_now timestamp with time zone, p_year integer, p_month integer, p_today date, p_rate_limit integer, p_key text, p_hash bytea, p_key_window interval, p_scan boolean, OUT status integer, OUT code text, OUT body jsonb, OUT replayed boolean) RETURNS record
--   perks_refusal_status(code text) RETURNS integer
--   perks_remaining(p_limit integer, p_used integer) RETURNS integer
--   perks_rfc3339(at timestamp with time zone) RETURNS text
--   perks_slot_count(capacity integer) RETURNS integer
--   perks_slot_share(capacity integer, slot integer) RETURNS integer
--   perks_spread_slots(p_merchant uuid, p_perk text, p_year integer, p_total integer) RETURNS void
--   perks_take_capacity(p_merchant uuid, p_perk text, p_year integer, p_capacity integer) RETURNS integer
--   perks_take_capacity_in_turn(p_merchant uuid, p_perk text, p_year integer, p_capacity integer) RETURNS integer
--   perks_take_grant(p_client uuid, p_perk text, p_today date) RETURNS uuid
--   perks_take_tier(p_client uuid, p_perk text, p_year integer, p_month integer, p_quota integer, p_cap integer, OUT used integer, OUT refusal text) RETURNS record
--   perks_usage_view_insert() RETURNS trigger
--   perks_void(p_redemption uuid, p_actor uuid, p_username text, p_role text, p_merchant uuid, p_as_bank boolean, p_reason text, p_now timestamp with time zone, p_window interval) RETURNS TABLE(code text, body jsonb)
--   statement_is_final() RETURNS trigger
--   tier_history_is_append_only() RETURNS trigger

CREATE TRIGGER agreements_capacity_changed AFTER UPDATE OF yearly_capacity ON public.agreements FOR EACH ROW WHEN ((old.yearly_capacity IS DISTINCT FROM new.yearly_capacity)) EXECUTE FUNCTION perks_capacity_changed();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON public.audit_log FOR EACH STATEMENT EXECUTE FUNCTION audit_log_is_append_only();
CREATE TRIGGER audit_log_no_update BEFORE DELETE OR UPDATE ON public.audit_log FOR EACH ROW EXECUTE FUNCTION audit_log_is_append_only();
CREATE TRIGGER merchant_yearly_usage_insert INSTEAD OF INSERT ON public.merchant_yearly_usage FOR EACH ROW EXECUTE FUNCTION perks_usage_view_insert();
CREATE TRIGGER statement_adjustments_final BEFORE DELETE OR UPDATE ON public.statement_adjustments FOR EACH ROW EXECUTE FUNCTION statement_is_final();
CREATE TRIGGER statement_adjustments_no_truncate BEFORE TRUNCATE ON public.statement_adjustments FOR EACH STATEMENT EXECUTE FUNCTION statement_is_final();
CREATE TRIGGER statement_exclusions_final BEFORE DELETE OR UPDATE ON public.statement_exclusions FOR EACH ROW EXECUTE FUNCTION statement_is_final();
CREATE TRIGGER statement_exclusions_no_truncate BEFORE TRUNCATE ON public.statement_exclusions FOR EACH STATEMENT EXECUTE FUNCTION statement_is_final();
CREATE TRIGGER statement_lines_final BEFORE DELETE OR UPDATE ON public.statement_lines FOR EACH ROW EXECUTE FUNCTION statement_is_final();
CREATE TRIGGER statement_lines_no_truncate BEFORE TRUNCATE ON public.statement_lines FOR EACH STATEMENT EXECUTE FUNCTION statement_is_final();
CREATE TRIGGER statements_final BEFORE DELETE OR UPDATE ON public.statements FOR EACH ROW EXECUTE FUNCTION statement_is_final();
CREATE TRIGGER statements_no_truncate BEFORE TRUNCATE ON public.statements FOR EACH STATEMENT EXECUTE FUNCTION statement_is_final();
CREATE TRIGGER tier_history_no_update BEFORE DELETE OR UPDATE ON public.tier_history FOR EACH ROW EXECUTE FUNCTION tier_history_is_append_only();
