"""`perks demo --webhook-receiver`: a small local receiver subscribed to every event, printing what it verifies.

It runs in a thread of the demo's process, on its own port, and checks each delivery as docs/events.md tells a
receiver to (signature over ``timestamp.body``, at most 5 minutes old)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import datetime, timezone

import asyncpg
from aiohttp import web

from perks.core.auth import SYSTEM
from perks.core.config import Config
from perks.events.service import EVENT_TYPES
from perks.webhooks.service import create_webhook, rotate_secret
from perks.webhooks.signing import verify

SELECT_WEBHOOK_BY_URL = "SELECT id FROM webhooks WHERE url = $1 ORDER BY created_at LIMIT 1"


def receiver_url(port: int) -> str:
    """Where the demo's receiver listens."""
    return f"http://127.0.0.1:{port}/demo-webhook"


async def subscribe_receiver(conn: asyncpg.Connection, config: Config, port: int) -> str:
    """Subscribe the demo receiver to every event type (once) and return a secret it can verify with."""
    url, now = receiver_url(port), datetime.now(timezone.utc)
    existing = await conn.fetchval(SELECT_WEBHOOK_BY_URL, url)
    if existing is not None:
        # The secret is shown only once; a fresh one lets this run verify what it receives.
        return await rotate_secret(conn, SYSTEM, config.secret, existing, now=now)
    view = await create_webhook(
        conn, SYSTEM, config.secret, url=url, event_types=list(EVENT_TYPES), description="perks demo receiver",
        now=now,
    )
    return view["secret"]


def start_receiver(port: int, secret: str) -> threading.Thread:
    """Serve the receiver in a daemon thread until the process exits."""

    async def handle(request: web.Request) -> web.Response:
        body = await request.read()
        fine = verify(secret, request.headers.get("Perks-Timestamp", ""), body,
                      request.headers.get("Perks-Signature", ""), now=time.time())
        if not fine:
            print("demo webhook receiver: REFUSED a delivery with a bad or stale signature", flush=True)
            return web.Response(status=401)
        event = json.loads(body)
        print(f"demo webhook receiver: event {event['id']} {event['type']} {json.dumps(event['data'], ensure_ascii=False)}",
              flush=True)
        return web.Response(status=204)

    async def serve() -> None:
        app = web.Application()
        app.router.add_post("/demo-webhook", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        await asyncio.Event().wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), name="perks-demo-receiver", daemon=True)
    thread.start()
    return thread
