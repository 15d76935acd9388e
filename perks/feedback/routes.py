"""HTTP: a client rates its redemption; merchants and the bank read a merchant's ratings and comments."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from aiohttp import web
from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from perks.core.appkeys import CLOCK, POOL
from perks.core.auth import BANK_STAFF_AND_MANAGERS, ensure_merchant_scope
from perks.core.endpoint import endpoint, principal_of
from perks.core.ids import parse_id
from perks.core.jsonutil import json_response
from perks.core.pagination import PageQuery
from perks.core.validation import Body
from perks.feedback import service as feedback

routes = web.RouteTableDef()


# Line breaks and tabs are welcome in a comment; other control characters (NUL above all) are not.
Comment = Annotated[
    str,
    StringConstraints(strip_whitespace=True, max_length=500, pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$"),
    AfterValidator(lambda text: text or None),
]


class FeedbackRequest(Body):
    rating: int = Field(ge=1, le=5, description="1 (poor) to 5 (excellent).")
    comment: Comment | None = Field(None, description="Up to 500 characters; blank is no comment.")


class FeedbackView(BaseModel):
    redemption_id: str
    rating: int
    comment: str | None
    created_at: datetime


class FeedbackClient(BaseModel):
    display_name: str = Field(description="The client's name, masked: first and last character kept, the rest `*`.")


class MerchantFeedbackItem(FeedbackView):
    perk: str
    perk_name: str
    store_id: str
    store_name: str
    client: FeedbackClient


class MerchantFeedbackPage(BaseModel):
    items: list[MerchantFeedbackItem]
    next_cursor: str | None
    average: float | None = Field(description="The merchant's mean rating over all its ratings, two decimals.")
    count: int = Field(description="How many ratings the merchant has received.")


@routes.post("/api/v1/me/redemptions/{redemption_id}/feedback")
@endpoint(
    roles={"client"},
    body=FeedbackRequest,
    response=FeedbackView,
    status=201,
    errors=("not_found", "conflict"),
    tag="client",
)
async def give_feedback(request: web.Request, body: FeedbackRequest) -> web.Response:
    """Rate one of your redemptions, 1 to 5, with an optional comment.

    Once per redemption, within 30 days of redeeming; a voided redemption cannot be rated (409 `conflict` for
    each, the message says which). Another client's redemption is 404. Audited as `feedback.create`."""
    redemption_id = parse_id(request.match_info["redemption_id"])
    now = request.config_dict[CLOCK].now()
    async with request.config_dict[POOL].acquire() as conn:
        view = await feedback.give_feedback(
            conn, principal_of(request), redemption_id, body.rating, body.comment, now
        )
    return json_response(view, status=201)


@routes.get("/api/v1/merchants/{merchant_id}/feedback")
@endpoint(
    roles=BANK_STAFF_AND_MANAGERS,
    query=PageQuery,
    response=MerchantFeedbackPage,
    errors=("not_found",),
    tag="merchants",
)
async def merchant_feedback(request: web.Request, query: PageQuery) -> web.Response:
    """A merchant's ratings and comments, newest first, with its average rating and their count.

    Clients appear as masked names only. A manager reads its own merchant's (another's: 404)."""
    merchant_id = parse_id(request.match_info["merchant_id"])
    ensure_merchant_scope(principal_of(request), merchant_id)
    async with request.config_dict[POOL].acquire() as conn:
        result = await feedback.list_feedback(conn, merchant_id, cursor=query.cursor, limit=query.limit)
    return json_response(result)
