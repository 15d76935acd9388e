"""The counters redemptions move, and what is left of a limit.

- ``client_yearly_usage`` and ``client_monthly_usage``: the tier's uses (grant uses are not counted there).
- ``grants.used``: a grant's uses.
- ``merchant_capacity_slots``: a merchant's yearly use of a perk, split over :data:`CAPACITY_SLOTS` rows so
  that a busy partner's terminals rarely wait on one row lock. One slot per 16 units of capacity, at most 16
  (``perks_slot_count``; 16 without a cap): a small capacity keeps one exact, ordered row. Slot ``i`` holds at
  most its share of the capacity (``perks_slot_share``: divided as evenly as it goes), so the sum
  never passes the capacity; a redemption takes a slot with room that no other transaction holds (SKIP LOCKED,
  from a random start), and only when every such slot is held waits on them in turn (a plain conditional UPDATE,
  which locks no row it does not change: no transaction holds a slot while waiting for another). A void gives
  one unit back to a slot holding one. A changed capacity re-spreads the year's use under
  the new shares (a trigger on ``agreements``), and the view ``merchant_yearly_usage`` keeps the sum for readers.

The SQL lives in migration 0009 (``perks_take_tier``, ``perks_take_grant``, ``perks_take_capacity``, taken over
by 0014, ``perks_give_back``, ``perks_give_back_capacity``), so that a redemption moves all of them in one round
trip.
"""

from __future__ import annotations

CAPACITY_SLOTS = 16


def remaining(limit: int | None, used: int) -> int | None:
    """What is left of a limit (``None``: unlimited); never below zero, even after a limit was lowered.

    Its database twin is ``perks_remaining``, used by the redemption's own answer."""
    if limit is None:
        return None
    return max(limit - used, 0)
