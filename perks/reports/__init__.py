"""The bank's reports of a quota year (usage, capacity, quota use) and the warning signs in its redemptions."""
