"""perks: rewards for a bank's most valuable clients at partner merchants."""

__version__ = "0.1.0"
