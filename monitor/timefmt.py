"""Times as people read them: ISO 8601 in UTC, and durations (``2h01m``, ``in 4m10s``).

Standard library only.
"""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["format_duration", "relative", "utc_iso"]


def utc_iso(moment: datetime | float, timespec: str = "seconds") -> str:
    """``2026-11-25T08:00:00Z``: a Unix time, or a datetime (naive ones taken as UTC), in UTC."""
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    elif moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def format_duration(seconds: float) -> str:
    """``95`` -> ``1m35s``; ``7300`` -> ``2h01m``; ``200000`` -> ``2d07h``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def relative(moment: float, now: float) -> str:
    """``in 4m10s`` for a time ahead of ``now``, ``2h01m ago`` for one behind it."""
    delta = moment - now
    return f"in {format_duration(delta)}" if delta > 0.5 else f"{format_duration(-delta)} ago"
