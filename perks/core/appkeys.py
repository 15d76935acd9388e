"""Typed keys for what the application and each request carry."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
from aiohttp import web

from perks.core.clock import Clock
from perks.core.config import Config

if TYPE_CHECKING:
    from perks.core.auth import Principal
    from perks.core.metrics import Metrics

CONFIG = web.AppKey("config", Config)
POOL = web.AppKey("pool", asyncpg.Pool)
CLOCK = web.AppKey("clock", Clock)
METRICS = web.AppKey("metrics", "Metrics")

PRINCIPAL = web.RequestKey("principal", "Principal")
REQUEST_ID = web.RequestKey("request_id", str)
