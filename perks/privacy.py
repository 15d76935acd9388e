"""How a client is shown to whoever need not reach the person: a merchant sees a masked name and nothing else
personal; an auditor the masked name and a masked phone."""

from __future__ import annotations


def mask_name(name: str) -> str:
    """The first and last character kept, the rest ``*`` (``罗升`` → ``罗*``, ``罗小升`` → ``罗*升``)."""
    chars = list(name.strip())
    if len(chars) <= 1:
        return "".join(chars) or "*"
    if len(chars) == 2:
        return chars[0] + "*"
    return chars[0] + "*" * (len(chars) - 2) + chars[-1]


def mask_phone(phone: str | None) -> str | None:
    """A phone number with all but its last four digits hidden."""
    if not phone:
        return phone
    return "*" * max(len(phone) - 4, 0) + phone[-4:]
