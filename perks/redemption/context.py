"""What every scan and redemption call carries, in one small object."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Mapping
from uuid import UUID
from zoneinfo import ZoneInfo

from perks.core.appkeys import CLOCK, CONFIG, METRICS
from perks.core.auth import Principal
from perks.vouchers.appkeys import KEYRING

if TYPE_CHECKING:
    from perks.core.metrics import Metrics
    from perks.vouchers.keyring import KeyRing


@dataclass(frozen=True)
class Terminal:
    """A merchant user at a terminal, at one instant: who acts, at which store (as asked), with which key ring,
    in which time zone, under which rate limit, counting into which metrics."""

    keyring: KeyRing
    actor: Principal
    now: datetime
    tz: ZoneInfo
    rate_limit_per_minute: int
    store_id: UUID | None = None
    metrics: Metrics | None = None

    @classmethod
    def of_app(cls, app: Mapping[Any, Any], actor: Principal, store_id: UUID | None) -> Terminal:
        """The terminal of a request, from the application's shared resources (``request.config_dict``)."""
        config = app[CONFIG]
        return cls(
            keyring=app[KEYRING],
            actor=actor,
            now=app[CLOCK].now(),
            tz=config.timezone,
            rate_limit_per_minute=config.terminal_rate_limit_per_minute,
            store_id=store_id,
            metrics=app[METRICS],
        )
