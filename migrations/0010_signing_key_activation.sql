-- A signing key is published (in the JWKS, in every process's key ring) before it signs: a rotation makes the new
-- key with activates_at in the future and schedules the old key's retirement for that same instant. The newest key
-- is still the only one with retired_at NULL.
ALTER TABLE signing_keys ADD COLUMN activates_at timestamptz;
UPDATE signing_keys SET activates_at = created_at;
ALTER TABLE signing_keys ALTER COLUMN activates_at SET NOT NULL, ALTER COLUMN activates_at SET DEFAULT now();
