"""Where quotas are counted and decided: periods, the entitlement decision, counters, and their invariant.

One home for the rules. Issuing (``POST /me/vouchers``), scanning, redeeming, voiding, ``/me/entitlements``, the
wallet and merchant usage all ask this package (or the database functions it documents, laid by migration 0009)
and decide nothing themselves.

Periods: a quota year and month are the calendar year and month of the instant in the bank's time zone; a grant's
``expires_on`` is compared with the instant's local date there (:mod:`perks.quotas.periods`).

The decision (SQL ``perks_decide``, read through :mod:`perks.quotas.decision`), for a client and a perk, first
that applies:

1. ``client_blocked`` -- the client's status is not ``active`` (issuing and redeeming apply the same rule).
2. The tier serves when it is entitled to the perk now -- the entitlement exists, its ``required_tag`` (if any)
   is one of the client's tags, and a ``birthday_only`` perk is in the birthday month -- and both the yearly
   quota and the monthly cap have room.
3. Else a grant serves: the soonest-expiring active grant for the perk with ``expires_on`` on or after the local
   date and a use left (tie: the oldest created). Grant uses count against neither the tier's yearly quota nor
   its monthly cap, but they do count against the merchant's capacity.
4. Else the refusal: ``not_entitled`` when the tier is not entitled and the client never had a grant for the
   perk; ``quota_exhausted`` when the tier is not entitled but a grant existed (expired, revoked or used up), or
   the yearly quota is used up; ``monthly_cap_reached`` otherwise.

Redeeming places these inside the contract's table (``perk_not_offered`` between ``client_blocked`` and
``not_entitled``; the merchant's capacity last) and then moves the counters with conditional updates, which are
what actually decide under concurrency (SQL ``perks_redeem``). A void gives the use back where it was taken: to
its grant, or to the tier's counters; and one unit of the merchant's capacity (:mod:`perks.quotas.counters`).
"""

from perks.quotas.counters import CAPACITY_SLOTS, remaining
from perks.quotas.decision import Entitlement, decision, entitlements
from perks.quotas.invariants import broken_invariants, mismatched_counters, over_limits, twice_redeemed
from perks.quotas.periods import Period, birthday_window, period, quota_period

__all__ = [
    "CAPACITY_SLOTS",
    "Entitlement",
    "Period",
    "birthday_window",
    "decision",
    "entitlements",
    "broken_invariants",
    "mismatched_counters",
    "over_limits",
    "twice_redeemed",
    "period",
    "quota_period",
    "remaining",
]
