"""The roles a process can take with ``news-monitor run --role``."""

from __future__ import annotations

__all__ = ["ROLES", "parse_roles"]

#: Every role, in the order a process starts them.
ROLES = ("poller", "matcher")


def parse_roles(text: str) -> tuple[str, ...]:
    """``"poller"``, ``"matcher"`` or both (``"poller,matcher"``, any order, spaces allowed)
    as a tuple in :data:`ROLES` order; :class:`ValueError` saying what is wrong."""
    names = [name.strip().lower() for name in text.split(",")]
    if not names or any(not name for name in names):
        raise ValueError(f"--role {text!r} has an empty entry; use poller, matcher or poller,matcher")
    unknown = [name for name in names if name not in ROLES]
    if unknown:
        raise ValueError(f"--role: unknown role {unknown[0]!r}; use poller, matcher or poller,matcher")
    return tuple(role for role in ROLES if role in names)
