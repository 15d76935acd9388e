"""HTTP: the API route by which bank staff mint a one-time wallet link (mounted with the portal, whose wallet
opens it); the links themselves are kept by perks.clients.wallet_links."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from pydantic import BaseModel

from perks.clients.wallet_links import link_url, mint
from perks.core.appkeys import CLOCK, CONFIG, POOL
from perks.core.auth import BANK_STAFF_WRITERS
from perks.core.endpoint import endpoint, principal_of
from perks.core.ids import parse_id
from perks.core.jsonutil import json_response

routes = web.RouteTableDef()


class WalletLink(BaseModel):
    url: str
    expires_at: datetime


@routes.post("/api/v1/clients/{client_id}/wallet-links")
@endpoint(
    roles=BANK_STAFF_WRITERS, response=WalletLink, status=201, errors=("not_found", "client_blocked"), tag="clients"
)
async def create_wallet_link(request: web.Request) -> web.Response:
    """Mint a one-time link that opens the client's wallet page in a browser.

    The link works once, within 15 minutes, and only while the client is not blocked (a blocked client gets
    none: 403 `client_blocked`); only a hash of it is stored. It is built on the configured public base URL
    (`PERKS_PUBLIC_URL`). Give it to the client only (it opens their wallet without a password)."""
    client_id = parse_id(request.match_info["client_id"])
    now = request.config_dict[CLOCK].now()
    async with request.config_dict[POOL].acquire() as conn:
        token, expires_at = await mint(conn, principal_of(request), client_id, now)
    url = link_url(request.config_dict[CONFIG], token)
    return json_response({"url": url, "expires_at": expires_at}, status=201)
