"""Test helpers shared by the suite: a local feed server, a Kafka reader, settings.

Everything here talks to real things on loopback: a real aiohttp server and the real
embedded broker. Nothing is mocked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition

from monitor.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT / "seeds"
RULES = ROOT / "rules"
SHARED = ROOT.parent / "shared"
#: Test data: feeds, article pages, story texts, labeled passages.
DATA = ROOT / "tests" / "data"
REFERENCE_TOPICS = ("alerts.summit", "alerts.sanctions", "alerts.arms-control")


@dataclass
class Resource:
    """What the feed server answers for one path."""

    body: bytes = b""
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    #: Honour If-None-Match with 304 when set.
    etag: str | None = None
    hits: int = 0


class LocalServer:
    """A real aiohttp server on a free 127.0.0.1 port; subclasses answer in :meth:`handle`."""

    port = 0
    _runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.StreamResponse:  # pragma: no cover - abstract
        raise NotImplementedError

    async def start(self):  # -> Self
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self.handle)
        # handler_cancellation: a client that gives up (a timeout under test) ends the handler too.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class FeedServer(LocalServer):
    """Serves whatever the test puts in ``resources``."""

    def __init__(self) -> None:
        self.resources: dict[str, Resource] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []

    def serve(self, path: str, body: bytes | str, **kwargs: Any) -> str:
        """Serve ``body`` at ``path``; returns the full url."""
        data = body.encode() if isinstance(body, str) else body
        self.resources[path] = Resource(body=data, **kwargs)
        return self.url(path)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path, dict(request.headers)))
        resource = self.resources.get(request.path)
        if resource is None:
            return web.Response(status=404, text="not found")
        resource.hits += 1
        headers = dict(resource.headers)
        if resource.etag:
            headers["ETag"] = resource.etag
            if request.headers.get("If-None-Match") == resource.etag:
                return web.Response(status=304, headers=headers)
        headers.setdefault("Content-Type", "application/rss+xml; charset=utf-8")
        return web.Response(status=resource.status, body=resource.body, headers=headers)



def make_settings(
    tmp_path: Path,
    bootstrap_servers: str,
    feeds: Iterable[str | dict[str, Any]] = (),
    *,
    rules: Iterable[Path | str] = (RULES,),
    overrides: dict[str, dict[str, Any]] | None = None,
) -> Settings:
    """Settings for a test: its own state dir, the given feeds, a real broker.

    ``overrides`` maps a section name to the keys to change, e.g. ``{"feeds": {"interval": 2.0}}``.
    """
    base = load_settings(None, environ={})
    feed_tables = tuple(f if isinstance(f, dict) else {"url": f} for f in feeds)
    changed: dict[str, Any] = {
        "kafka": dataclasses.replace(base.kafka, bootstrap_servers=bootstrap_servers, connect_timeout=10.0, linger_ms=1),
        "state": dataclasses.replace(base.state, dir=str(tmp_path / "state")),
        "feeds": dataclasses.replace(base.feeds, feed=feed_tables, interval=1.0, parse_workers=0, opml=""),
        "rules": dataclasses.replace(base.rules, paths=tuple(str(r) for r in rules)),
        "http": dataclasses.replace(base.http, enabled=False),
        "delivery": dataclasses.replace(base.delivery, shutdown_timeout=10.0),
    }
    for section, values in (overrides or {}).items():
        changed[section] = dataclasses.replace(changed.get(section, getattr(base, section)), **values)
    return dataclasses.replace(base, source=None, **changed)


async def read_topic(
    bootstrap_servers: str,
    topic: str,
    *,
    until: Callable[[list[Any]], bool] | None = None,
    timeout: float = 15.0,
    idle: float = 1.0,
) -> list[Any]:
    """Every record in ``topic`` from the beginning.

    Stops as soon as ``until(records)`` holds, or (without ``until``) after ``idle``
    seconds with nothing new; never later than ``timeout``.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        client_id=f"test-reader-{uuid.uuid4().hex[:8]}",
    )
    await consumer.start()
    records: list[Any] = []
    try:
        partitions = None
        deadline = time.monotonic() + timeout
        while partitions is None and time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic)
            if partitions is None:
                await consumer._client.force_metadata_update()  # the topic may not exist yet
                partitions = consumer.partitions_for_topic(topic)
                if partitions is None:
                    await asyncio.sleep(0.1)
        if not partitions:
            return records
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            got = [r for rs in batch.values() for r in rs]
            if got:
                records.extend(got)
                last_new = time.monotonic()
            if until is not None:
                if until(records):
                    return records
            elif time.monotonic() - last_new >= idle:
                return records
        return records
    finally:
        await consumer.stop()


ALERT_SCHEMA_PATH = ROOT / "schemas" / "alert-v1.json"
SIGNAL_SCHEMA_PATH = ROOT / "schemas" / "signal-v1.json"
SIGHTING_SCHEMA_PATH = ROOT / "schemas" / "sighting-v1.json"


@functools.cache
def _validator(path: Path) -> Any:
    from jsonschema import Draft202012Validator, FormatChecker

    schema = orjson.loads(path.read_bytes())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


def _alert_validator() -> Any:
    return _validator(ALERT_SCHEMA_PATH)


def validate_signal(signal: Any) -> None:
    """Fail unless ``signal`` (decoded JSON) conforms to ``schemas/signal-v1.json``, times in UTC."""
    errors = sorted(_validator(SIGNAL_SCHEMA_PATH).iter_errors(signal), key=lambda e: list(e.path))
    if errors:
        details = "; ".join(f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors[:5])
        raise AssertionError(f"signal does not match {SIGNAL_SCHEMA_PATH.name}: {details}")
    for moment in (signal["detected_at"], signal["window"]["start"], signal["window"]["end"]):
        assert moment.endswith("Z"), f"timestamp {moment!r} is not UTC with a Z suffix"


def validate_sighting(sighting: Any) -> None:
    """Fail unless ``sighting`` (decoded JSON) conforms to ``schemas/sighting-v1.json``, times in UTC."""
    errors = sorted(_validator(SIGHTING_SCHEMA_PATH).iter_errors(sighting), key=lambda e: list(e.path))
    if errors:
        details = "; ".join(f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors[:5])
        raise AssertionError(f"sighting does not match {SIGHTING_SCHEMA_PATH.name}: {details}")
    for moment in (sighting["detected_at"], sighting["article"]["published"]):
        assert moment is None or moment.endswith("Z"), f"timestamp {moment!r} is not UTC with a Z suffix"


def validate_alert(alert: Any) -> None:
    """Fail unless ``alert`` (decoded JSON) conforms to ``schemas/alert-v1.json``.

    Timestamps are checked here too: jsonschema checks ``date-time`` only when an
    optional RFC 3339 package is installed, and the contract also promises UTC ("Z").
    """
    errors = sorted(_alert_validator().iter_errors(alert), key=lambda e: list(e.path))
    if errors:
        details = "; ".join(f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors[:5])
        raise AssertionError(f"alert does not match {ALERT_SCHEMA_PATH.name}: {details}")
    for moment in (alert["detected_at"], alert["article"]["published"]):
        if moment is not None:
            assert moment.endswith("Z"), f"timestamp {moment!r} is not UTC with a Z suffix"
            datetime.fromisoformat(moment.replace("Z", "+00:00"))


ARTICLE_SCHEMA_PATH = ROOT / "schemas" / "article-v1.json"


@functools.cache
def _article_validator() -> Any:
    from jsonschema import Draft202012Validator, FormatChecker

    schema = orjson.loads(ARTICLE_SCHEMA_PATH.read_bytes())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=FormatChecker())


def validate_article(document: Any) -> None:
    """Fail unless ``document`` (decoded JSON) conforms to ``schemas/article-v1.json``
    (timestamps in UTC with a "Z", as for alerts)."""
    errors = sorted(_article_validator().iter_errors(document), key=lambda e: list(e.path))
    if errors:
        details = "; ".join(f"{'/'.join(map(str, e.path)) or '<root>'}: {e.message}" for e in errors[:5])
        raise AssertionError(f"article does not match {ARTICLE_SCHEMA_PATH.name}: {details}")
    for moment in (document["observed_at"], document["published"]):
        if moment is not None:
            assert moment.endswith("Z"), f"timestamp {moment!r} is not UTC with a Z suffix"
            datetime.fromisoformat(moment.replace("Z", "+00:00"))


def alerts_from(records: Iterable[Any], feed_urls: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Decoded alert JSON of the records, keeping only those from ``feed_urls`` when given.

    Every alert read is validated against the alert schema, so each test that reads
    alerts also checks the contract.
    """
    wanted = set(feed_urls) if feed_urls is not None else None
    alerts = [orjson.loads(r.value) for r in records]
    for alert in alerts:
        validate_alert(alert)
    if wanted is None:
        return alerts
    return [a for a in alerts if a["article"]["feed_url"] in wanted]


async def read_alerts(
    bootstrap_servers: str,
    feed_urls: Iterable[str],
    topics: Iterable[str] = REFERENCE_TOPICS,
    *,
    expect: int | None = None,
    timeout: float = 15.0,
) -> list[dict[str, Any]]:
    """Alerts from this test's feeds across ``topics`` (other tests share the broker)."""
    urls = list(feed_urls)
    found: list[dict[str, Any]] = []
    for topic in topics:
        records = await read_topic(bootstrap_servers, topic, timeout=timeout)
        found.extend(alerts_from(records, urls))
    if expect is not None and len(found) < expect:
        # Publishing may still be under way: read again until the deadline.
        deadline = time.monotonic() + timeout
        while len(found) < expect and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            found = []
            for topic in topics:
                found.extend(alerts_from(await read_topic(bootstrap_servers, topic, timeout=timeout, idle=0.3), urls))
    return found


# -- a daemon polling a server that records every request ------------------------------------------


def rss(items: list[tuple[str, str, str]], title: str = "feed") -> bytes:
    """An RSS document with (guid, title, text) items."""
    entries = "".join(
        f"<item><title>{t}</title><link>https://news.example/{g}</link><guid isPermaLink=\"false\">urn:t:{g}</guid>"
        f"<description>{x}</description></item>"
        for g, t, x in items
    )
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>{title}</title>{entries}</channel></rss>'.encode()


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    at: float
    status: int = 0


@dataclass
class PollServer(LocalServer):
    """A real aiohttp server on 127.0.0.1 with per-path handlers and a request log."""

    handlers: dict[str, Handler] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    #: Seconds every answer is held back (to make concurrency visible).
    delay: float = 0.0
    in_flight: int = 0
    max_in_flight: int = 0

    def of(self, path: str) -> list[Hit]:
        return [h for h in self.hits if h.path == path]

    def feed(self, path: str, body: bytes, **headers: str) -> str:
        async def handler(request: web.Request) -> web.StreamResponse:
            return web.Response(body=body, headers={"Content-Type": "application/rss+xml", **headers})

        self.handlers[path] = handler
        return self.url(path)

    def status(self, path: str, status: int, **headers: str) -> str:
        async def handler(request: web.Request) -> web.StreamResponse:
            return web.Response(status=status, text="", headers=headers)

        self.handlers[path] = handler
        return self.url(path)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        hit = Hit(request.path, dict(request.headers), time.monotonic())
        self.hits.append(hit)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            handler = self.handlers.get(request.path)
            response = await handler(request) if handler else web.Response(status=404, text="not found")
            hit.status = response.status
            return response
        finally:
            self.in_flight -= 1


async def until(condition: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    """Wait for ``condition`` to hold (checked every 20 ms), failing after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Running:
    """A daemon running in the background for the body of an ``async with``."""

    def __init__(self, settings) -> None:
        from monitor.worker import Monitor  # the daemon's imports are heavy: only tests that run it pay

        self.monitor = Monitor(settings)
        self.task: asyncio.Task | None = None

    async def __aenter__(self) -> Any:
        self.task = asyncio.create_task(self.monitor.run(handle_signals=False))
        return self.monitor

    async def __aexit__(self, *exc: object) -> None:
        self.monitor.stop()
        await asyncio.wait_for(self.task, timeout=30)


def stored(settings, url: str):
    """A feed's state as the store has it now."""
    from monitor.adapters.store import Store

    store = Store(Path(settings.state_dir))
    try:
        return store.feed_state(url)
    finally:
        store.close()
