"""One root error type that carries where the problem is and what to do about it.

Errors are values a person acts on: each names the file (and line/column when known),
says what is wrong, and, where we can tell, what would be right. :func:`error_text` puts
any other exception into such words, for the part of a message that says why.
"""

from __future__ import annotations

import os

from monitor.model import SourceLocation

__all__ = [
    "SYSTEM_FAULTS",
    "BrokerError",
    "ConfigError",
    "FeedError",
    "MonitorError",
    "PublishError",
    "RecordRefused",
    "RecordRejected",
    "RuleError",
    "StoreError",
    "error_text",
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


#: What a step of one article's matching may raise without it being that article's own
#: fault (docs/scaling.md, "An article that fails"): the store, the broker, the CPU pool,
#: memory. These keep their paths; anything else raised there is a bug met on that article.
SYSTEM_FAULTS: tuple[type[BaseException], ...] = (StoreError, BrokerError, FeedError, MemoryError)


#: What an operating-system error with no text of its own means.
_SILENT_OS_ERRORS: tuple[tuple[type[OSError], str], ...] = (
    (TimeoutError, "timed out"),
    (ConnectionRefusedError, "connection refused"),
    (ConnectionResetError, "connection reset"),
    (ConnectionAbortedError, "connection aborted"),
    (BrokenPipeError, "connection closed (broken pipe)"),
    (ConnectionError, "connection failed"),
)


def error_text(exc: BaseException) -> str:
    """Why something failed, from ``exc``, in one line for a person: the part after the
    what and where of a message (``f"cannot write {path}: {error_text(exc)}"``), in a log
    field, on the status page, in a dead-letter reason.

    - a :class:`MonitorError`: its own text (it names the place and the remedy);
    - an operating-system error (a file, the disk, a socket; :class:`OSError`): the
      system's words and the file, ``/var/lib/x: No space left on device``, without
      ``[Errno 28]`` or the Python class; one with no text says what happened
      (``timed out``, ``connection reset``);
    - anything else is unexpected (a library's failure, a bug): its class name stays in
      front, as a bug report needs it, and alone when the exception has no text.

    Line breaks are folded: the result is always one line.
    """
    if isinstance(exc, MonitorError):
        text = str(exc)
    elif isinstance(exc, OSError):
        text = _os_error_text(exc)
    else:
        name = type(exc).__name__
        text = str(exc)
        # Some libraries (aiokafka) start their text with the class name already.
        text = text if name in text else f"{name}: {text}" if text else name
    return " ".join(text.split())


def _os_error_text(exc: OSError) -> str:
    if type(exc).__str__ is not OSError.__str__:
        text = str(exc)  # a subclass that words itself (aiohttp's, requests')
    elif type(exc).__module__ == "builtins" and exc.errno is not None and exc.errno > 0:
        # The system's words for the code: asyncio puts "Connect call failed ('h', p)"
        # in strerror where os.strerror(111) says "Connection refused". (socket.gaierror's
        # codes are not errno codes: its strerror is used.)
        text = os.strerror(exc.errno)
    else:
        text = exc.strerror or (str(exc.args[0]) if len(exc.args) == 1 else str(exc))
    if text and exc.filename is not None:
        target = f" -> {exc.filename2}" if exc.filename2 is not None else ""
        text = f"{exc.filename}{target}: {text}"
    return text or next((words for kind, words in _SILENT_OS_ERRORS if isinstance(exc, kind)), f"{type(exc).__name__} (no message)")
