"""Clients' ratings of their redemptions: giving one, and what merchants and the bank read of them."""
