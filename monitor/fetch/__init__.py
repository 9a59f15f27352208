"""The fetch stage: what a poll asks a feed's server for, and what the answer means.

The policy (:mod:`monitor.fetch.policy`) is pure: conditional-GET validators, the answer
(:class:`FetchResult`), the errors a fetch raises, and the hints the scheduler honours.
The transports that implement :class:`Transport` (aiohttp, local files) are adapters:
:mod:`monitor.adapters.http`.
"""

from monitor.fetch.policy import (
    FeedHttpError,
    FeedTimeout,
    FetchResult,
    Transport,
    Validators,
    cache_max_age,
    error_kind,
    retry_after_seconds,
)

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
