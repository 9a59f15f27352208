"""When a destination's messages go out: digest periods, quiet hours and rate limits.

All times are UNIX seconds (floats); wall-clock rules (``daily@08:00``, ``22:00-07:00``)
are read in the destination's time zone, so they follow daylight-saving changes.

:class:`Policy` combines the three for one destination:

* an alert is *held* (queued for the next digest, kept in the state store) when the
  destination has a digest, during its quiet hours, or when its rate limit is used up
  (or a digest of earlier held alerts is still waiting: nothing overtakes it);
* held alerts go out as one digest at :meth:`Policy.digest_due`: the end of the digest
  period the first of them fell in (at once without a digest), moved past quiet hours,
  and no sooner than the rate limit allows another message.

Pure: no I/O, the caller passes the time.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta, tzinfo

__all__ = [
    "DigestSchedule",
    "Policy",
    "QuietHours",
    "RateLimit",
    "parse_digest",
    "parse_duration",
    "parse_quiet_hours",
    "parse_rate_limit",
]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+)\s*([smhd])")
_CLOCK = re.compile(r"([01]?\d|2[0-3]):([0-5]\d)")
#: Shortest and longest digest period.
MIN_PERIOD = 1.0
MAX_PERIOD = 86400.0


def parse_duration(text: str) -> float:
    """``"90s"``, ``"15m"``, ``"1h"``, ``"1d"`` -> seconds; ValueError saying what is wrong."""
    found = _DURATION.fullmatch(text.strip().lower())
    if not found or int(found.group(1)) < 1:
        raise ValueError(f"{text!r} is not a duration (a whole number above 0 and a unit: s, m, h or d, e.g. 15m)")
    try:
        return float(int(found.group(1)) * _UNITS[found.group(2)])
    except OverflowError:
        raise ValueError(f"{text!r} is too long a duration (more seconds than a number holds)") from None


def _clock(text: str) -> time:
    found = _CLOCK.fullmatch(text.strip())
    if not found:
        raise ValueError(f"{text!r} is not a time of day (HH:MM, 24-hour, e.g. 08:00)")
    return time(int(found.group(1)), int(found.group(2)))


def _local_midnight(moment: float, zone: tzinfo) -> datetime:
    local = datetime.fromtimestamp(moment, zone)
    return datetime(local.year, local.month, local.day, tzinfo=zone)


def _at(day: datetime, clock: time, zone: tzinfo) -> float:
    """The UNIX time of ``clock`` on the local ``day`` (a time skipped by a DST change counts
    as the instant after the gap)."""
    return datetime(day.year, day.month, day.day, clock.hour, clock.minute, tzinfo=zone).timestamp()


@dataclass(frozen=True)
class DigestSchedule:
    """Digest boundaries: every ``period`` seconds from local midnight (``15m``: :00, :15,
    :30, :45), or at fixed local times (``daily@08:00``, ``daily@08:00,17:30``)."""

    zone: tzinfo
    period: float | None = None
    times: tuple[time, ...] = ()

    def next_boundary(self, moment: float) -> float:
        """The first boundary strictly after ``moment``."""
        midnight = _local_midnight(moment, self.zone)
        if self.period is not None:
            start = midnight.timestamp()
            following = (midnight + timedelta(days=1)).replace(tzinfo=self.zone)
            end = datetime(following.year, following.month, following.day, tzinfo=self.zone).timestamp()
            steps = int((moment - start) // self.period) + 1
            # The last period of a day ends at midnight (a 7h digest: 07:00, 14:00, 21:00, 00:00).
            return min(start + steps * self.period, end)
        for offset in range(3):
            day = midnight + timedelta(days=offset)
            for clock in self.times:
                candidate = _at(day, clock, self.zone)
                if candidate > moment:
                    return candidate
        raise AssertionError("a daily digest has a boundary within two days")  # pragma: no cover


def parse_digest(text: str, zone: tzinfo) -> DigestSchedule | None:
    """``"off"`` -> None; ``"15m"``, ``"1h"`` (1 s to 24 h) or ``"daily@08:00[,17:30...]"``."""
    value = text.strip().lower()
    if value in {"off", "", "none"}:
        return None
    if value.startswith("daily@"):
        times = tuple(sorted({_clock(part) for part in value[len("daily@") :].split(",")}))
        return DigestSchedule(zone, times=times)
    try:
        period = parse_duration(value)
    except ValueError:
        raise ValueError(f"{text!r} is not a digest: off, a period such as 15m or 1h, or daily@HH:MM") from None
    if not MIN_PERIOD <= period <= MAX_PERIOD:
        raise ValueError(f"{text!r}: a digest period is from 1s to 24h")
    return DigestSchedule(zone, period=period)


@dataclass(frozen=True)
class QuietHours:
    """A daily span of local time (may cross midnight: ``22:00-07:00``) when nothing is sent."""

    zone: tzinfo
    start: time
    end: time

    def _span_around(self, moment: float) -> tuple[float, float] | None:
        midnight = _local_midnight(moment, self.zone)
        for offset in (-1, 0):
            day = midnight + timedelta(days=offset)
            begin = _at(day, self.start, self.zone)
            end_day = day + timedelta(days=1) if self.end <= self.start else day
            finish = _at(end_day, self.end, self.zone)
            if begin <= moment < finish:
                return begin, finish
        return None

    def contains(self, moment: float) -> bool:
        return self._span_around(moment) is not None

    def end_after(self, moment: float) -> float:
        """When the quiet hours holding ``moment`` end (``moment`` itself when not quiet)."""
        span = self._span_around(moment)
        return span[1] if span is not None else moment


def parse_quiet_hours(text: str, zone: tzinfo) -> QuietHours | None:
    """``"off"`` -> None; ``"22:00-07:00"`` (local times, start before or after end)."""
    value = text.strip().lower()
    if value in {"off", "", "none"}:
        return None
    start, dash, end = value.partition("-")
    if not dash:
        raise ValueError(f"{text!r} is not a span of time: HH:MM-HH:MM, e.g. 22:00-07:00")
    first, last = _clock(start), _clock(end)
    if first == last:
        raise ValueError(f"{text!r} starts and ends at the same time")
    return QuietHours(zone, first, last)


@dataclass(frozen=True)
class RateLimit:
    """At most ``count`` messages in any ``period`` seconds (a sliding window)."""

    count: int
    period: float


def parse_rate_limit(text: str) -> RateLimit | None:
    """``"off"`` -> None; ``"10/1h"``: at most 10 messages in any hour (``"10/h"`` too)."""
    value = text.strip().lower()
    if value in {"off", "", "none"}:
        return None
    count, slash, period = value.partition("/")
    period = period.strip()
    if not slash or not re.fullmatch(r"[0-9]+", count.strip()) or int(count) < 1 or not period:
        raise ValueError(f"{text!r} is not a rate limit: N/PERIOD with N at least 1, e.g. 10/1h or 30/15m")
    seconds = parse_duration(period if period[:1].isdigit() else f"1{period}")
    return RateLimit(int(count), seconds)


@dataclass
class Policy:
    """One destination's digest, quiet hours and rate limit, with the times of its recent
    messages (for the rate limit; the caller restores them after a restart)."""

    digest: DigestSchedule | None = None
    quiet: QuietHours | None = None
    rate: RateLimit | None = None
    _sent: deque[float] = field(default_factory=deque)

    def restore(self, sent_times: Iterable[float]) -> None:
        """Times of earlier messages (a restart must not reset the rate limit)."""
        self._sent = deque(sorted(sent_times))

    def record_sent(self, moment: float) -> None:
        self._sent.append(moment)

    def _prune(self, now: float) -> None:
        if self.rate is None:
            self._sent.clear()
            return
        while self._sent and self._sent[0] <= now - self.rate.period:
            self._sent.popleft()

    def rate_free_at(self, now: float) -> float:
        """When the rate limit allows another message (``now`` when it does already)."""
        self._prune(now)
        if self.rate is None or len(self._sent) < self.rate.count:
            return now
        return self._sent[len(self._sent) - self.rate.count] + self.rate.period

    def quiet_at(self, moment: float) -> bool:
        return self.quiet is not None and self.quiet.contains(moment)

    def holds(self, now: float) -> bool:
        """Whether an alert arriving at ``now`` waits for a digest instead of going out alone
        (a held digest already waiting is the caller's to know)."""
        return self.digest is not None or self.quiet_at(now) or self.rate_free_at(now) > now

    def digest_due(self, first_held: float, now: float, not_before: float = 0.0) -> float:
        """When the digest of alerts held since ``first_held`` goes out (may be <= ``now``:
        due); ``not_before`` is a retry's back-off."""
        due = self.digest.next_boundary(first_held) if self.digest is not None else first_held
        due = max(due, not_before)
        rate_free = self.rate_free_at(now)
        for _ in range(4):
            moved = max(due, rate_free)
            if self.quiet is not None:
                moved = self.quiet.end_after(moved)
            if moved == due:
                break
            due = moved
        return due
