"""Settlement: monthly statements per merchant, their finalization and adjustments, the month across merchants."""
