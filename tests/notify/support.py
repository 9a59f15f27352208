"""Helpers for the notify tests: a webhook and an SMTP server on loopback, a clock the test
moves, alert records, and a notify process run in the test's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email
import socket
import time
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from email.message import Message as EmailMessage
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiosmtpd.smtp import SMTP

from monitor.adapters.kafka import TopicAdmin
from monitor.delivery.records import alert_record
from monitor.model import Alert, Hit, alert_id_for
from monitor.settings import KafkaSettings, Settings
from tests.support import make_settings


class FakeClock:
    """UNIX time that moves only when the test says so; ``sleep`` waits for that."""

    def __init__(self, start: float) -> None:
        self._now = start
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (self._now + seconds, future)
        self._sleepers.append(entry)
        try:
            await future
        finally:
            if entry in self._sleepers:
                self._sleepers.remove(entry)

    def advance_to(self, moment: float) -> None:
        self._now = max(self._now, moment)
        for deadline, future in list(self._sleepers):
            if deadline <= self._now and not future.done():
                future.set_result(None)


class Webhook:
    """A JSON webhook on 127.0.0.1: records every message Apprise's ``json://`` posts.

    ``fail_first`` answers that many requests with 500; ``fail_always`` every one;
    ``answer_first`` answers that many, then holds every later request unanswered (it is
    not recorded) until ``release()``.
    """

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.requests = 0
        #: Requests being held unanswered right now.
        self.holding = 0
        self.fail_first = 0
        self.fail_always = False
        self.answer_first: int | None = None
        self._released = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    def url(self, path: str = "hook") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def release(self) -> None:
        self.answer_first = None
        self._released.set()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests += 1
        if self.fail_always or self.requests <= self.fail_first:
            return web.Response(status=500, text="failing on purpose")
        if self.answer_first is not None and len(self.messages) >= self.answer_first:
            self.holding += 1
            try:
                await self._released.wait()
            finally:
                self.holding -= 1
        self.messages.append({"path": request.path, **orjson.loads(body)})
        return web.Response(text="ok")

    async def start(self) -> Webhook:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()

    def titles(self, path: str | None = None) -> list[str]:
        return [m["title"] for m in self.messages if path is None or m["path"] == f"/{path}"]

    def bodies(self, path: str | None = None) -> list[str]:
        return [m["message"] for m in self.messages if path is None or m["path"] == f"/{path}"]


class Trickle:
    """An HTTP server on 127.0.0.1 that never finishes its answer: a byte of a header every
    half second, so Apprise's read timeout never fires. ``asked`` is set by the first request."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self.requests = 0
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        self.requests += 1
        self.asked.set()
        writer.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
        with contextlib.suppress(ConnectionError):
            while not writer.is_closing():
                await asyncio.sleep(0.5)
                writer.write(b"a")
                await writer.drain()

    async def start(self) -> Trickle:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/hook"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()


class MailServer:
    """An SMTP server (aiosmtpd) on 127.0.0.1 that keeps every message it is given."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    async def handle_DATA(self, _server: Any, _session: Any, envelope: Any) -> str:
        self.messages.append(email.message_from_bytes(envelope.content))
        return "250 OK"

    async def start(self) -> MailServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: SMTP(self, hostname="127.0.0.1"), "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, to: str = "desk@example.org") -> str:
        return f"mailto://127.0.0.1:{self.port}?from=notify@example.org&to={to}"

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def alert_value(
    n: int,
    *,
    rule: str = "sanctions",
    topic: str = "alerts.sanctions",
    severity: str = "medium",
    tag: str = "run",
    url: str | None = "https://example.net/world/story",
    story_id: str | None = None,
) -> tuple[bytes, bytes, tuple[tuple[str, bytes], ...]]:
    """(key, value, headers) of a valid alert record whose title is ``Story N TAG``."""
    article_id = f"urn:notify-test:{tag}:{n}"
    alert = Alert(
        alert_id=alert_id_for(rule, article_id), rule_id=rule, topic=topic, severity=severity, tags=("geopolitics",),
        article_id=article_id, url=f"{url}-{n}" if url else None, title=f"Story {n} {tag}", published=None,
        feed_url="https://example.net/feed.xml", matches=(Hit("sanctions", "title", 0, 5, "Story"),),
        snippet=f"Snippet of story {n} <b>bold</b>", detected_at=datetime(2026, 12, 1, 8, 0, tzinfo=UTC),
        ruleset_version="test", story_id=story_id,
    )  # fmt: skip
    record = alert_record(alert)
    return record.key or b"", record.value, record.headers


async def create_topics(bootstrap: str, topics: list[str], partitions: int = 1) -> None:
    await TopicAdmin(KafkaSettings(topic_partitions=partitions), bootstrap).ensure(topics)


async def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes, tuple[tuple[str, bytes], ...]]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for key, value, headers in records:
            await producer.send_and_wait(topic, value, key=key, headers=list(headers))
    finally:
        await producer.stop()


def notify_settings(
    tmp_path: Path,
    bootstrap: str,
    prefix: str,
    destinations: list[dict[str, Any]],
    *,
    state: str = "state",
    **notify: Any,
) -> Settings:
    """Settings for a notify process reading the topics ``PREFIX*`` from their beginning."""
    base = make_settings(tmp_path, bootstrap, overrides={"state": {"dir": str(tmp_path / state)}})
    values = {
        "group": f"notify-test-{uuid.uuid4().hex[:8]}",
        "topics": (f"{prefix}*",),
        "from_beginning": True,
        "retry_backoff_initial": 0.05,
        "retry_backoff_max": 0.2,
        "listen": "",
        "shutdown_timeout": 5.0,
        "destination": tuple(destinations),
        **notify,
    }
    return dataclasses.replace(base, notify=dataclasses.replace(base.notify, **values))


def unique_prefix() -> str:
    return f"alerts.nt{uuid.uuid4().hex[:8]}"


@asynccontextmanager
async def running(settings: Settings, clock: Any = None):  # -> AsyncIterator[NotifyProcess]
    """A notify process in this event loop, stopped (and checked) on exit."""
    from monitor.app.notify import NotifyProcess

    process = NotifyProcess(settings, destinations=settings.notify_destinations({}), clock=clock)
    task = asyncio.create_task(process.run(handle_signals=False))
    try:
        await wait_until(lambda: (process._reader is not None and process._reader.assigned.is_set()) or task.done(), 20)
        if task.done():
            task.result()
        yield process
    finally:
        process.stop()
        assert await asyncio.wait_for(task, 30) == 0


async def wait_until(predicate: Callable[[], bool], timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.02)
