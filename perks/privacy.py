"""What of a client may be shown to a merchant: a masked name, nothing else personal."""

from __future__ import annotations


def mask_name(name: str) -> str:
    """The first and last character kept, the rest ``*`` (``罗升`` → ``罗*``, ``罗小升`` → ``罗*升``)."""
    chars = list(name.strip())
    if len(chars) <= 1:
        return "".join(chars) or "*"
    if len(chars) == 2:
        return chars[0] + "*"
    return chars[0] + "*" * (len(chars) - 2) + chars[-1]
