-- A wallet link belongs to the client's session generation when it was minted: blocking the client (or the
-- client's logging out) bumps the generation, and every link minted before is dead, even after an unblock.
ALTER TABLE wallet_links ADD COLUMN session_generation integer NOT NULL DEFAULT 0 CHECK (session_generation >= 0);
