"""One root error type that carries where the problem is and what to do about it.

Errors are values a person acts on: each names the file (and line/column when known),
says what is wrong, and, where we can tell, what would be right.
"""

from __future__ import annotations

from monitor.model import SourceLocation

__all__ = [
    "BrokerError",
    "ConfigError",
    "FeedError",
    "MonitorError",
    "PublishError",
    "RecordRefused",
    "RecordRejected",
    "RuleError",
    "StoreError",
]


class MonitorError(Exception):
    """Root of every error the monitor raises on purpose.

    ``str(error)`` is one line fit for an operator: ``path:line:col: problem (hint)``.
    """

    def __init__(
        self,
        message: str,
        *,
        location: SourceLocation | None = None,
        hint: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.location = location
        self.hint = hint

    def __str__(self) -> str:
        text = self.message
        if self.location is not None:
            text = f"{self.location}: {text}"
        if self.hint:
            text = f"{text} ({self.hint})"
        return text


class ConfigError(MonitorError):
    """The configuration file or an environment override is missing or invalid."""


class RuleError(MonitorError):
    """A rule file or a rule query is invalid."""


class FeedError(MonitorError):
    """A feed could not be fetched or parsed; the feed url is in the message."""


class BrokerError(MonitorError):
    """The Kafka broker cannot be reached or refused what we asked of it."""


class PublishError(BrokerError):
    """Sending one record failed in a way a retry may fix (broker away, timeout)."""


class RecordRefused(PublishError):
    """The broker answered with an error for one record that is neither an outage nor a
    known rejection (an unlisted or unknown error code): retried, but only
    ``[delivery] max_attempts`` times before the record goes to the dead-letter topic."""


class RecordRejected(BrokerError):
    """The broker refused one record for good (too large, invalid): retrying cannot help."""


class StoreError(MonitorError):
    """The state store (SQLite) cannot be opened, read or written: damaged, full, read-only.

    ``kind`` says which (``corrupt``, ``full``, ``readonly``, ``unavailable``), so the
    daemon can report it; the message names the file and the hint says what to do.
    """

    def __init__(self, message: str, *, kind: str, location: SourceLocation | None = None, hint: str | None = None) -> None:
        super().__init__(message, location=location, hint=hint)
        self.kind = kind
