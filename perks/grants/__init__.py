"""Grants: one-off uses of a perk given to one client, beyond the tier's quota, until an expiry date."""
