"""Apprise at the edge: one destination's messages to Slack, Teams, email, ntfy, webhooks...

:class:`AppriseSender` turns a destination's URL into Apprise's plugin for it once, at
start-up (a URL Apprise cannot use is a :class:`~monitor.errors.ConfigError` naming the
table and key, exit 2), and sends each message in a thread (Apprise's plugins are
blocking): a daemon thread of its own (:class:`SendThreads`), so that a send that never
ends (a service that trickles its answer past Apprise's read timeout) cannot keep the
process from exiting once ``[notify] shutdown_timeout`` is over. A failure comes back as its reason: the last warning Apprise logged while
sending (``Failed to send JSON POST notification: Internal server error., error=500.``).

Secrets: the destination's URL is never logged. What is shown is Apprise's privacy form
(``slack://T...2/B...D/...``), and every part of the real URL that the privacy form
hides is masked in the reasons Apprise gives.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import re
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar
from urllib.parse import unquote

import apprise
from apprise import NotifyFormat

from monitor.errors import ConfigError, error_text
from monitor.notify.config import Destination
from monitor.notify.message import Message

__all__ = ["AppriseSender", "SendThreads"]

_capture = threading.local()
_T = TypeVar("_T")


class SendThreads(Executor):
    """Daemon threads for the blocking sends, reused, and one more started whenever none is
    idle. ThreadPoolExecutor's threads are joined when the interpreter exits, and it never
    has more than its maximum: a send that never ends would keep a stopped process alive
    for good, or take a thread from the others. How many sends run at once is the
    service's to bound (``concurrency``)."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._work: queue.SimpleQueue[tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]] = (
            queue.SimpleQueue()
        )
        self._idle = 0
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        future: Future[_T] = Future()
        self._work.put((future, fn, args, kwargs))
        with self._lock:
            if self._idle:
                self._idle -= 1  # that thread takes it
                return future
        threading.Thread(target=self._serve, name=self._name, daemon=True).start()
        return future

    def _serve(self) -> None:
        while True:
            future, fn, args, kwargs = self._work.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except BaseException as exc:  # noqa: BLE001 - handed to the awaiting coroutine, as an executor does
                    future.set_exception(exc)
            with self._lock:
                self._idle += 1


class _Capture(logging.Handler):
    """Keeps the warnings Apprise logs on the sending thread, for the failure's reason."""

    def emit(self, record: logging.LogRecord) -> None:
        lines = getattr(_capture, "lines", None)
        if lines is not None and record.levelno >= logging.WARNING:
            lines.append(record.getMessage())


def _install_capture() -> None:
    logger = logging.getLogger(apprise.LOGGER_NAME)
    if not any(isinstance(handler, _Capture) for handler in logger.handlers):
        logger.addHandler(_Capture())
        # Apprise's own lines would repeat (less safely) what notify.send.failed says.
        logger.propagate = False
        logger.setLevel(logging.WARNING)


def _preferred(plugin: Any) -> Any:
    fmt = getattr(plugin, "notify_format", NotifyFormat.TEXT)
    return fmt[0] if isinstance(fmt, (tuple, list)) else fmt


class AppriseSender:
    """Sends one destination's messages through Apprise (see the module docstring)."""

    def __init__(self, destination: Destination, executor: Executor) -> None:
        _install_capture()
        self.destination = destination
        self._executor = executor
        scheme = destination.url.split("://", 1)[0] if "://" in destination.url else ""
        try:
            plugin = apprise.Apprise.instantiate(destination.url, suppress_exceptions=True)
        except Exception:  # noqa: BLE001 - a plugin's URL parser may raise anything: the URL is reported as unusable below
            plugin = None
        if plugin is None:
            raise ConfigError(
                f"{destination.label}: url is not a URL Apprise can use"
                + (f" (scheme {scheme!r})" if scheme and len(scheme) < 20 else " (no scheme://)"),
                location=destination.url_location,
                hint="e.g. slack://..., msteams://..., mailto://..., ntfy://..., json://host/path; "
                "every service's URL form is in Apprise's wiki (the URL itself is not shown: it may hold secrets)",
            )
        self._plugin = plugin
        #: What may be shown of the URL (Apprise's privacy form).
        self.safe_url: str = plugin.url(privacy=True)  # type: ignore[no-untyped-call]  # Apprise has no annotations
        self._secrets = _secret_parts(destination.url, self.safe_url)
        if destination.format == "auto":
            self.markdown = _preferred(plugin) in (NotifyFormat.MARKDOWN, NotifyFormat.HTML)
        else:
            self.markdown = destination.format == "markdown"

    async def send(self, message: Message) -> str | None:
        """None when the service accepted ``message``, else why not (secrets masked)."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._send, message)

    def _send(self, message: Message) -> str | None:
        lines: list[str] = []
        _capture.lines = lines
        try:
            accepted = self._plugin.notify(
                body=message.body or " ",
                title=message.title,
                body_format=NotifyFormat.MARKDOWN if message.markdown else NotifyFormat.TEXT,
            )
        except Exception as exc:  # noqa: BLE001 - a service plugin's failure is this message's: reported, retried
            return self.mask(error_text(exc))
        finally:
            _capture.lines = None
        if accepted:
            return None
        return self.mask(lines[-1] if lines else f"{self.destination.name} did not accept the message")

    def mask(self, text: str) -> str:
        """``text`` with every secret part of the URL replaced by ``***``."""
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text[:500]


def _secret_parts(url: str, safe: str) -> list[str]:
    """Parts of ``url`` (tokens, passwords, webhook ids) that its privacy form ``safe`` hides."""
    parts = set()
    for token in re.split(r"[/:@?&=#,;+ ]", url):
        for form in {token, unquote(token)}:
            if len(form) >= 4 and form not in safe:
                parts.add(form)
    return sorted(parts, key=len, reverse=True)
