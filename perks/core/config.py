"""The service's configuration, read once from the environment into one typed object."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class ConfigError(Exception):
    """The environment holds a setting the service cannot use."""


@dataclass(frozen=True)
class Config:
    """Every setting of the service; see the README's table of environment variables."""

    database_url: str | None
    data_dir: Path
    timezone: ZoneInfo
    secret: str
    host: str = "127.0.0.1"
    port: int = 8080
    max_body_bytes: int = 1024 * 1024
    session_ttl_seconds: int = 8 * 3600
    client_session_ttl_seconds: int = 3600
    secure_cookies: bool = False
    pool_max_size: int = 20
    log_level: str = "INFO"
    # Scans plus redemptions one merchant user may make per minute, across every worker: far above any real till.
    terminal_rate_limit_per_minute: int = 120
    # The service's public base URL (for links it hands out, such as wallet links); never taken from request headers.
    public_url: str | None = None
    # A bearer token that /metrics requires when set (keep /metrics internal otherwise).
    metrics_token: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def embedded(self) -> bool:
        """Whether the service runs on the embedded PostgreSQL under the data directory."""
        return not self.database_url

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Config":
        """Read the configuration from the environment (``os.environ`` by default)."""
        env = os.environ if environ is None else environ
        database_url = env.get("DATABASE_URL") or None
        data_dir = Path(env.get("PERKS_DATA_DIR") or "./.perks").expanduser().resolve()
        tz_name = env.get("PERKS_TIMEZONE") or "Asia/Shanghai"
        try:
            timezone = ZoneInfo(tz_name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(f"PERKS_TIMEZONE={tz_name!r} is not a known time zone") from exc
        secret = env.get("PERKS_SECRET") or ""
        if not secret:
            if database_url:
                raise ConfigError("PERKS_SECRET is required when DATABASE_URL is set")
            secret = embedded_secret(data_dir)
        elif len(secret) < 16:
            raise ConfigError("PERKS_SECRET must be at least 16 characters")
        return cls(
            database_url=database_url,
            data_dir=data_dir,
            timezone=timezone,
            secret=secret,
            host=env.get("PERKS_HOST") or "127.0.0.1",
            port=_int(env, "PERKS_PORT", 8080, 1, 65535),
            max_body_bytes=_int(env, "PERKS_MAX_BODY_BYTES", 1024 * 1024, 1024, 64 * 1024 * 1024),
            session_ttl_seconds=_int(env, "PERKS_SESSION_TTL_SECONDS", 8 * 3600, 60, 7 * 86400),
            client_session_ttl_seconds=_int(env, "PERKS_CLIENT_SESSION_TTL_SECONDS", 3600, 60, 7 * 86400),
            secure_cookies=(env.get("PERKS_SECURE_COOKIES") or "").lower() in ("1", "true", "yes"),
            pool_max_size=_int(env, "PERKS_DB_POOL_SIZE", 20, 1, 500),
            log_level=(env.get("PERKS_LOG_LEVEL") or "INFO").upper(),
            terminal_rate_limit_per_minute=_int(env, "PERKS_TERMINAL_RATE_LIMIT", 120, 1, 1_000_000),
            public_url=(env.get("PERKS_PUBLIC_URL") or "").rstrip("/") or None,
            metrics_token=env.get("PERKS_METRICS_TOKEN") or None,
        )


def _int(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be an integer") from exc
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}")
    return value


def embedded_secret(data_dir: Path) -> str:
    """The secret kept under the data directory for the embedded mode, made on first use."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "secret"
    if not path.exists():
        # Write a whole file aside, then link it into place: a process starting at the same
        # moment sees either no secret or a complete one, and only one secret ever wins.
        tmp = data_dir / f".secret.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
        try:
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    return path.read_text().strip()
