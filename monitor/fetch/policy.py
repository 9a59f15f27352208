"""The fetch stage: what a poll asks for and what the answer means.

A poll is a conditional GET (``If-None-Match`` / ``If-Modified-Since`` from the last
answer). :class:`FetchResult` carries the answer plus the hints the scheduler honours
(``Cache-Control: max-age``, ``Expires``, ``Retry-After``), read by small named
functions so the HTTP policy reads like prose. The transports themselves (aiohttp,
local files) live in :mod:`monitor.adapters.http`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

from monitor.errors import FeedError
from monitor.feeds.schedule import MAX_RETRY_AFTER
from monitor.timefmt import format_duration

__all__ = [
    "FeedHttpError",
    "FeedTimeout",
    "FetchResult",
    "Transport",
    "Validators",
    "cache_max_age",
    "error_kind",
    "retry_after_seconds",
]


@dataclass(frozen=True, slots=True)
class Validators:
    """What the last answer let us send back to ask "has it changed?"."""

    etag: str | None = None
    last_modified: str | None = None

    def request_headers(self) -> dict[str, str]:
        headers: dict[str, str] = {}
        if self.etag:
            headers["If-None-Match"] = self.etag
        if self.last_modified:
            headers["If-Modified-Since"] = self.last_modified
        return headers


@dataclass(frozen=True, slots=True)
class FetchResult:
    """One successful answer (200 or 304)."""

    url: str
    status: int
    body: bytes | None
    content_type: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    #: The new address when the feed answered with a permanent redirect (301/308).
    moved_to: str | None = None
    #: Seconds the server says the answer stays fresh (Cache-Control max-age or Expires).
    max_age: float | None = None
    elapsed: float = 0.0
    #: The answer's ``Link`` headers, joined with commas (WebSub hub discovery reads them).
    links: str | None = None

    @property
    def not_modified(self) -> bool:
        return self.status == 304

    @property
    def validators(self) -> Validators:
        return Validators(self.etag, self.last_modified)


class FeedHttpError(FeedError):
    """The server answered with an error status; ``retry_after`` when it said when to come back."""

    def __init__(self, url: str, status: int, reason: str = "", retry_after: float | None = None) -> None:
        hint = None
        if status == 410:
            hint = "the feed is gone for good: it is disabled; remove it from the feed list"
        elif status in (401, 403):
            hint = "the server refuses us: check the url and any headers the feed needs"
        elif status == 404:
            hint = "check the feed url"
        elif retry_after is not None:
            hint = f"the server asked us to come back in {format_duration(retry_after)}"
            if retry_after > MAX_RETRY_AFTER:
                hint += f"; the next poll is in {format_duration(MAX_RETRY_AFTER)}, the longest wait honoured"
        super().__init__(f"{url}: HTTP {status} {reason}".rstrip(), hint=hint)
        self.url = url
        self.status = status
        self.retry_after = retry_after

    @property
    def gone(self) -> bool:
        return self.status == 410


class FeedTimeout(FeedError):
    """The server did not answer (or finish answering) within the configured time."""


def error_kind(exc: FeedError) -> str:
    """The counter a failed poll goes to: ``http_4xx``, ``http_5xx``, ``timeout`` or ``other``."""
    if isinstance(exc, FeedHttpError):
        return "http_5xx" if exc.status >= 500 else "http_4xx"
    if isinstance(exc, FeedTimeout):
        return "timeout"
    return "other"


class Transport(Protocol):
    """Something that can fetch a feed location (http(s) or a local file)."""

    async def fetch(
        self, url: str, validators: Validators, headers: Mapping[str, str]
    ) -> FetchResult:  # pragma: no cover - protocol
        ...


_MAX_AGE = re.compile(r"(?:^|,)\s*(?:s-)?max-age\s*=\s*\"?(\d+)", re.IGNORECASE)


def cache_max_age(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Freshness the server granted: ``Cache-Control: max-age`` first, then ``Expires``.

    ``no-cache``/``no-store`` grant nothing (None), as does a missing or past date.
    """
    cache_control = headers.get("Cache-Control", "")
    if cache_control:
        lowered = cache_control.lower()
        if "no-store" in lowered or "no-cache" in lowered:
            return None
        found = _MAX_AGE.search(cache_control)
        if found:
            return float(found.group(1))
    expires = headers.get("Expires")
    if expires:
        moment = _http_date(expires)
        if moment is not None:
            remaining = moment.timestamp() - (time.time() if now is None else now)
            return remaining if remaining > 0 else None
    return None


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # not '²', which isdigit() takes and float() refuses
        # Past ten digits (317 years) the 24 h cap decides anyway; 309 digits are float infinity.
        return float(value) if len(value) <= 10 else 1e10
    moment = _http_date(value)
    if moment is None:
        return None
    return max(0.0, moment.timestamp() - (time.time() if now is None else now))


def _http_date(value: str) -> datetime | None:
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment
