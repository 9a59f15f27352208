"""structlog set-up: JSON lines for machines, readable lines on a terminal.

Every event has a stable dotted name (``feed.poll.ok``, ``alert.published``...) and its
context as keys, so logs can be filtered and counted without parsing prose.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import orjson
import structlog

__all__ = ["configure_logging", "get_logger", "SECRET_KEYS"]

#: Keys whose values never reach a log line.
SECRET_KEYS = frozenset({"password", "sasl_password", "ssl_password", "secret", "token", "authorization"})


def _redact_secrets(_logger: object, _name: str, event: dict) -> dict:
    for key in event.keys() & SECRET_KEYS:
        event[key] = "***"
    return event


def _orjson_dumps(obj: object, default: object = None) -> str:
    return orjson.dumps(obj, default=default).decode()


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog for the whole process.

    ``fmt`` is ``json``, ``console`` or ``auto`` (console when ``stream`` is a terminal).
    Logs go to stderr so stdout stays clean for command output (``tail``, ``match``).
    """
    stream = stream or sys.stderr
    use_console = fmt == "console" or (fmt == "auto" and stream.isatty())
    renderer: structlog.typing.Processor
    if use_console:
        renderer = structlog.dev.ConsoleRenderer(colors=stream.isatty())
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_orjson_dumps)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact_secrets,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )


def get_logger(name: str | None = None) -> structlog.typing.FilteringBoundLogger:
    """A logger bound to a component name."""
    logger = structlog.get_logger()
    return logger.bind(component=name) if name else logger
