"""structlog set-up: JSON lines for machines, readable coloured lines on a terminal.

Every event has a stable dotted name (``feed.poll.ok``, ``alert.published``...) and its
context as keys (``feed_url``, ``rule_id``, ``article_id``...), so logs can be filtered
and counted without parsing prose. ``docs/operations.md`` lists the events.

Libraries that log through the standard ``logging`` module (aiokafka, aiohttp, asyncio)
are routed through the same renderer, so a JSON log stays one JSON object per line. A
library line repeated word for word is logged once per :data:`REPEAT_WINDOW` seconds
(unless the level is debug), the next one saying how many were left out (``repeated``):
aiokafka retries a broker that is away several times a second per connection.

Secrets never reach a line: values of keys that name a secret (password, token,
authorization, ...) are masked, and credentials inside URLs (``https://user:pw@host``,
``?token=...``, by the rule of :mod:`monitor.redact`) are masked wherever they appear
in a value: a library's message and a formatted traceback included, at every level.
The masking is the last step before rendering, so nothing added later escapes it.
"""

from __future__ import annotations

import io
import logging
import sys
import time
from collections.abc import Callable, MutableMapping
from typing import Any, TextIO

import orjson
import structlog

from monitor.redact import MASK, scrub

__all__ = ["REPEAT_WINDOW", "SECRET_KEYS", "configure_logging", "get_logger", "redact"]

#: Seconds during which a library's line, once logged, is not logged again word for word.
REPEAT_WINDOW = 30.0

#: Key names (or parts of them) whose values never reach a log line.
SECRET_KEYS = frozenset(
    {"password", "passwd", "secret", "token", "authorization", "api_key", "apikey", "credential", "cookie", "private_key"}
)
_MASK = MASK


def _secret_key(key: str) -> bool:
    lowered = key.lower()
    return any(part in lowered for part in SECRET_KEYS)


def redact(value: Any, _depth: int = 0) -> Any:
    """``value`` with secrets masked: secret-named keys in mappings, credentials in URLs."""
    if _depth > 6:
        return value
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {k: (_MASK if isinstance(k, str) and _secret_key(k) else redact(v, _depth + 1)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v, _depth + 1) for v in value)
    return value


def _redact_secrets(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Mask every value of the finished event: the last processor before the renderer, so a
    library's message (moved to ``message``) and a formatted traceback are masked too."""
    for key, value in event.items():
        if key == "event":
            continue  # a literal dotted name (a library's is ``lib.<logger>``), never data
        event[key] = _MASK if _secret_key(key) else redact(value)
    return event


def _orjson_dumps(obj: object, default: Callable[[Any], Any] | None = None) -> str:
    return orjson.dumps(obj, default=default).decode()


def _stringify(obj: object) -> str:
    # Anything orjson cannot encode (exceptions, paths, sets) is logged as its text.
    return str(obj)


#: Bumped by every :func:`configure_logging`; loggers rebuild themselves when it moves.
_generation = 0


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog, and the standard ``logging`` module, for the whole process.

    ``fmt`` is ``json``, ``console`` or ``auto`` (console when ``stream`` is a terminal).
    Logs go to stderr so stdout stays clean for command output (``tail``, ``match``).
    """
    stream = stream or sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and stream.isatty())
    numeric_level = logging.getLevelName(level.upper())
    renderer: structlog.typing.Processor
    if use_console:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty(), exception_formatter=_masked_traceback)
    else:
        renderer = structlog.processors.JSONRenderer(serializer=lambda o, **_: _orjson_dumps(o, _stringify))
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    # The console renderer prints exceptions itself (masked: _masked_traceback); JSON
    # needs them as a string, masked by _redact_secrets. It runs last, after a library's
    # message has moved to "message" (_name_foreign_event), so that is masked too.
    tail: list[structlog.typing.Processor] = [] if use_console else [structlog.processors.format_exc_info]
    tail.append(_redact_secrets)
    global _generation
    structlog.configure(
        processors=[*shared, *tail, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    _generation += 1
    _route_stdlib_logging(numeric_level, stream, shared, tail, renderer)


def _route_stdlib_logging(
    level: int,
    stream: TextIO,
    shared: list[structlog.typing.Processor],
    tail: list[structlog.typing.Processor],
    renderer: structlog.typing.Processor,
) -> None:
    """Send records of the ``logging`` module (aiokafka, aiohttp...) through the same renderer."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, _name_foreign_event],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail, renderer],
        )
    )
    handler.set_name("news-monitor")
    if level > logging.DEBUG:
        handler.addFilter(_Repeats(REPEAT_WINDOW))
    root = logging.getLogger()
    for existing in list(root.handlers):
        if existing.get_name() == "news-monitor":
            root.removeHandler(existing)
    root.addHandler(handler)
    # Libraries are chatty at INFO (aiokafka reconnects): keep them at WARNING unless debugging.
    root.setLevel(level if level <= logging.DEBUG else max(level, logging.WARNING))


class _Repeats(logging.Filter):
    """Lets a library's line through once per ``window`` seconds: the same logger, level and
    text within it are left out, and the first one let through after it carries
    ``repeated``, how many were. A line with a traceback always goes through."""

    #: Distinct lines remembered at most (the oldest are forgotten first).
    _LIMIT = 1000

    def __init__(self, window: float) -> None:
        super().__init__()
        self._window = window
        #: (logger, level, text) -> [when last let through (monotonic), left out since].
        self._seen: dict[tuple[str, int, str], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info:
            return True
        key = (record.name, record.levelno, record.getMessage())
        now = _clock()
        seen = self._seen.pop(key, None)
        if seen is not None and now - seen[0] < self._window:
            seen[1] += 1
            self._seen[key] = seen
            return False
        if seen is not None and seen[1]:
            record.repeated = int(seen[1])
        if len(self._seen) >= self._LIMIT:
            del self._seen[next(iter(self._seen))]
        self._seen[key] = [now, 0]
        return True


#: The clock of :class:`_Repeats` (tests move it).
_clock = time.monotonic


def _masked_traceback(out: TextIO, exc_info: Any) -> None:
    """The console's traceback, plain (a pretty one wraps and colours URLs apart) and masked."""
    buffer = io.StringIO()
    structlog.dev.plain_traceback(buffer, exc_info)
    out.write(scrub(buffer.getvalue()))


def _name_foreign_event(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """A library's message becomes ``message``; the event name is ``lib.<logger>``, stable per
    logger, and the component the library (``aiokafka``), as every line has one."""
    logger_name = event.pop("logger", None) or "root"
    event["message"] = event.get("event")
    event["event"] = f"lib.{logger_name}"
    event.setdefault("component", logger_name.partition(".")[0])
    repeated = getattr(event.get("_record"), "repeated", 0)
    if repeated:
        event["repeated"] = repeated
    return event


class _Logger:
    """A module's logger: structlog's bound logger, built once per configuration.

    Modules create their loggers at import time, often before :func:`configure_logging`
    runs, and must still follow that configuration, so the logger is built on first use
    and rebuilt after a reconfiguration. structlog's own lazy proxy (with
    ``cache_logger_on_first_use`` off, which reconfiguration needs) builds a new bound
    logger on every call, output stream lookup included: a noticeable share of the daemon's
    work for a 304 poll, even for a debug line that is then filtered out.
    """

    __slots__ = ("_bound", "_built_for", "_context")

    def __init__(self, **context: Any) -> None:
        self._context = context
        self._bound: Any = None
        self._built_for = -1

    def _logger(self) -> Any:
        if self._built_for != _generation:
            self._bound = structlog.get_logger().bind(**self._context)
            self._built_for = _generation
        return self._bound

    def __getattr__(self, name: str) -> Any:
        return getattr(self._logger(), name)


def get_logger(name: str | None = None) -> structlog.typing.FilteringBoundLogger:
    """A logger bound to a component name (see :class:`_Logger`)."""
    # A stand-in for the bound logger: it forwards every call to one (see _Logger).
    return _Logger(component=name) if name else _Logger()
