"""A cluster of real ``news-monitor`` processes on loopback, for the multi-process test and
``benchmarks/cluster_bench.py``.

* :class:`HostedFeeds`: one aiohttp server listening on several loopback addresses
  (127.0.0.1, 127.0.0.2, ...: Linux routes all of 127/8 to ``lo``), so feeds have
  different hosts and are sharded by host as on the internet. Every request is logged
  with the feed, the time and the ``User-Agent``, which names the poller that made it.
* :class:`Cluster`: the config of each role process (its own state dir, HTTP port and
  ``[cluster] instance_id``; the topic and group names unique to one test), starting
  processes (``news-monitor run --role ...``, ``news-monitor feeds sync``), SIGKILL,
  SIGTERM.
* :class:`TopicTail`: every record of some topics, read continuously in the background.

Nothing here mocks Kafka or HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from monitor.adapters.broker import free_port
from monitor.cluster import feed_partition
from tests.support import ROOT

# -- feeds on several hosts -----------------------------------------------------------------


def spread_hosts(partitions: int, per_partition: int) -> list[str]:
    """Loopback addresses, ``per_partition`` of them in each feeds-topic partition (so
    every poller of a test gets feeds, whatever partitions it is given)."""
    chosen: dict[int, list[str]] = {p: [] for p in range(partitions)}
    for n in range(1, 250):
        host = f"127.0.0.{n}"
        bucket = chosen[feed_partition(f"http://{host}/", partitions)]
        if len(bucket) < per_partition:
            bucket.append(host)
        if all(len(b) == per_partition for b in chosen.values()):
            return [h for p in range(partitions) for h in chosen[p]]
    raise RuntimeError(f"cannot spread loopback hosts over {partitions} partitions")


def rss(title: str, items: Iterable[tuple[str, str, str]]) -> bytes:
    """An RSS document of (guid, title, description) items, newest first."""
    entries = "".join(
        f'<item><title>{t}</title><link>https://news.example/{g}</link><guid isPermaLink="false">urn:mp:{g}</guid>'
        f"<description>{d}</description></item>"
        for g, t, d in items
    )
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>{title}</title>{entries}</channel></rss>'.encode()


@dataclass
class Hit:
    feed: str
    at: float
    agent: str
    status: int


@dataclass
class HostedFeed:
    url: str
    items: list[tuple[str, str, str]]
    version: int = 0
    body: bytes = b""

    def render(self) -> None:
        self.version += 1
        self.body = rss(self.url, reversed(self.items))


@dataclass
class HostedFeeds:
    """Feeds served on several loopback hosts, each answering If-None-Match with 304."""

    hosts: list[str]
    feeds: dict[str, HostedFeed] = field(default_factory=dict)
    hits: list[Hit] = field(default_factory=list)
    #: Seconds every answer is held back (a remote server's latency).
    delay: float = 0.0
    #: Share of requests that find a new item on top of the feed (a busy feed).
    change_share: float = 0.0
    #: Items a feed keeps (oldest dropped first; 0 = all).
    max_items: int = 0
    #: Makes the new items of ``change_share``.
    new_item: Callable[[str, int], tuple[str, str, str]] | None = None
    seed: int = 15
    _runner: web.AppRunner | None = None
    _ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    async def start(self) -> HostedFeeds:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        for host in self.hosts:
            site = web.TCPSite(self._runner, host, 0)
            await site.start()
            self._ports[host] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def add(self, count: int, items: Callable[[int], list[tuple[str, str, str]]]) -> list[str]:
        """``count`` feeds spread round-robin over the hosts; feed ``n`` starts with ``items(n)``."""
        urls = []
        for n in range(len(self.feeds), len(self.feeds) + count):
            host = self.hosts[n % len(self.hosts)]
            url = f"http://{host}:{self._ports[host]}/feed/{n}.xml"
            feed = HostedFeed(url, list(items(n)))
            feed.render()
            self.feeds[url] = feed
            urls.append(url)
        return urls

    def publish(self, url: str, item: tuple[str, str, str]) -> None:
        """A new item on top of the feed at ``url`` (a new ETag)."""
        feed = self.feeds[url]
        feed.items.append(item)
        if self.max_items:
            del feed.items[: -self.max_items]
        feed.render()

    def of(self, url: str) -> list[Hit]:
        return [h for h in self.hits if h.feed == url]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        url = f"http://{request.host}{request.path}"
        feed = self.feeds.get(url)
        if self.delay:
            await asyncio.sleep(self.delay)
        agent = request.headers.get("User-Agent", "")
        if feed is None:
            self.hits.append(Hit(url, time.monotonic(), agent, 404))
            return web.Response(status=404)
        if self.new_item is not None and self.change_share and self._rng.random() < self.change_share:
            self.publish(url, self.new_item(url, feed.version))
        etag = f'"v{feed.version}"'
        status = 304 if request.headers.get("If-None-Match") == etag else 200
        self.hits.append(Hit(url, time.monotonic(), agent, status))
        if status == 304:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(body=feed.body, headers={"ETag": etag, "Content-Type": "application/rss+xml"})


# -- the role processes -----------------------------------------------------------------------


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_text(sections: dict[str, dict[str, Any]], feeds: Iterable[str] = ()) -> str:
    """A monitor.toml from ``{section: {key: value}}`` plus ``[[feeds.feed]]`` tables."""
    lines = []
    for section, keys in sections.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {_toml(value)}" for key, value in keys.items())
        lines.append("")
    for url in feeds:
        lines.append(f"[[feeds.feed]]\nurl = {_toml(url)}\n")
    return "\n".join(lines)


@dataclass
class Process:
    """One ``news-monitor`` OS process, its output in files."""

    name: str
    args: list[str]
    directory: Path
    popen: subprocess.Popen[bytes] | None = None
    #: Killed on purpose (its exit is no failure).
    killed: bool = False

    def start(self, env: dict[str, str]) -> Process:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.directory / "stdout.log", "ab") as out, open(self.directory / "stderr.log", "ab") as err:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "monitor", *self.args], cwd=ROOT, stdout=out, stderr=err, stdin=subprocess.DEVNULL, env=env
            )
        return self

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: no revoke, no flush, no goodbye to the group."""
        assert self.popen is not None
        self.killed = True
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; the exit code (None if killed)."""
        if self.popen is None or self.popen.poll() is not None:
            return self.popen.returncode if self.popen else None
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=10)
            return None

    def log_tail(self, lines: int = 15) -> str:
        text = ""
        for name in ("stderr.log", "stdout.log"):
            path = self.directory / name
            if path.exists():
                text += f"--- {self.name} {name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text


@dataclass
class Cluster:
    """Role processes sharing one broker, with topic and group names unique to this cluster."""

    bootstrap_servers: str
    directory: Path
    partitions: int = 6
    rules: tuple[str, ...] = ()
    feeds: dict[str, Any] = field(default_factory=dict)
    session_timeout: float = 6.0
    #: More settings for every process: ``{section: {key: value}}``.
    extra: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Cluster topic names to use instead of this cluster's own (e.g. a shared articles topic).
    topic_names: dict[str, str] = field(default_factory=dict)
    uid: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    processes: list[Process] = field(default_factory=list)
    #: The HTTP port of each process (its /status.json, /metrics) by name.
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def topics(self) -> dict[str, str]:
        return {
            "feeds_topic": f"mp.{self.uid}.feeds",
            "articles_topic": f"mp.{self.uid}.articles",
            "feed_state_topic": f"mp.{self.uid}.feed-state",
            "matcher_state_topic": f"mp.{self.uid}.matcher-state",
            **self.topic_names,
        }

    @property
    def poller_group(self) -> str:
        return f"mp.{self.uid}.pollers"

    @property
    def matcher_group(self) -> str:
        return f"mp.{self.uid}.matchers"

    def config(self, name: str, feed_urls: Iterable[str] = ()) -> Path:
        """The config file of process ``name``: its own state dir, HTTP port, instance id
        and User-Agent (the feed server tells the pollers apart by it)."""
        path = self.directory / name / "monitor.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        sections: dict[str, dict[str, Any]] = {
            "kafka": {"bootstrap_servers": self.bootstrap_servers, "topic_partitions": self.partitions,
                      "dead_letter_topic": f"mp.{self.uid}.dead-letter"},
            "state": {"dir": str(self.directory / name / "state")},
            # Well inside stop()'s 30 s before SIGKILL: a clean stop may use the whole budget.
            "delivery": {"shutdown_timeout": 10.0},
            "feeds": {"parse_workers": 0, "jitter": 0.0, "user_agent": f"mp-test/{name}", **self.feeds},
            "rules": {"paths": list(self.rules), "watch": False} if self.rules else {"watch": False},
            "http": {"listen": f"127.0.0.1:{self.ports.setdefault(name, free_port())}"},
            "health": {"topic": f"mp.{self.uid}.feed-health"},
            "log": {"level": "info", "format": "json"},
            "cluster": {"session_timeout": self.session_timeout, "instance_id": name,
                        "poller_group": self.poller_group, "matcher_group": self.matcher_group, **self.topics},
        }
        for section, keys in self.extra.items():
            sections.setdefault(section, {}).update(keys)
        path.write_text(config_text(sections, feed_urls), encoding="utf-8")
        return path

    async def status(self, name: str) -> dict[str, Any]:
        """``/status.json`` of process ``name``."""
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{self.ports[name]}/status.json") as response:
            response.raise_for_status()
            document: dict[str, Any] = await response.json()
            return document

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEWS_MONITOR_")}
        env["TMPDIR"] = str(self.directory)
        return env

    def start(self, name: str, role: str) -> Process:
        """``news-monitor run --role ROLE`` as process ``name``."""
        process = Process(name, ["run", "--role", role, "--config", str(self.config(name))], self.directory / name)
        self.processes.append(process.start(self.env()))
        return process

    def sync(self, feed_urls: Iterable[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """``news-monitor feeds sync`` with ``feed_urls`` in its config."""
        config = self.config("sync", feed_urls)
        out, err = self.directory / "sync" / "stdout.log", self.directory / "sync" / "stderr.log"
        with open(out, "wb") as o, open(err, "wb") as e:
            result = subprocess.run(
                [sys.executable, "-m", "monitor", "feeds", "sync", "--config", str(config)],
                cwd=ROOT, stdout=o, stderr=e, stdin=subprocess.DEVNULL, env=self.env(), timeout=timeout,
            )
        return subprocess.CompletedProcess(result.args, result.returncode, out.read_text(), err.read_text())

    async def create_topics(self, extra: Iterable[str] = ()) -> None:
        """The cluster's topics (and ``extra`` ones), ``partitions`` each, before any role starts."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap_servers)
        await admin.start()
        try:
            names = [*self.topics.values(), *extra]
            await admin.create_topics([NewTopic(name, self.partitions, 1) for name in names])
        finally:
            await admin.close()

    def stop_all(self) -> dict[str, int | None]:
        """SIGTERM every process still running (SIGKILL after 30 s); exit codes by name."""
        return {p.name: p.stop() for p in self.processes if p.alive}

    def logs(self) -> str:
        return "".join(p.log_tail() for p in self.processes)

    def check(self) -> None:
        """AssertionError (with the logs) when a process that should run has exited."""
        exited = [p for p in self.processes if not p.alive and not p.killed]
        if exited:
            names = ", ".join(f"{p.name} (exit {p.popen.returncode if p.popen else '?'})" for p in exited)
            raise AssertionError(f"exited: {names}\n{self.logs()}")


# -- reading topics -----------------------------------------------------------------------------


class TopicTail:
    """Every record of ``topics`` (``partitions`` each) from their beginning, kept in
    ``records[topic]`` by a background task until :meth:`stop`."""

    def __init__(self, bootstrap_servers: str, topics: Iterable[str], partitions: int) -> None:
        self.records: dict[str, list[Any]] = {topic: [] for topic in topics}
        self._partitions = partitions
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False, auto_offset_reset="earliest")
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> TopicTail:
        await self._consumer.start()
        assigned = [TopicPartition(t, p) for t in self.records for p in range(self._partitions)]
        self._consumer.assign(assigned)
        await self._consumer.seek_to_beginning(*assigned)
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                self.records[tp.topic].extend(records)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()


async def wait_for(
    condition: Callable[[], bool], timeout: float, what: str, *, cluster: Cluster | None = None, on_timeout: Callable[[], str] = lambda: ""
) -> float:
    """Wait until ``condition()`` holds (checked every 50 ms); the seconds it took.
    AssertionError naming ``what`` (and ``on_timeout()``) after ``timeout`` seconds, or as
    soon as a process of ``cluster`` exits unasked."""
    start = time.monotonic()
    while not condition():
        if cluster is not None:
            cluster.check()
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}\n{on_timeout()}")
        await asyncio.sleep(0.05)
    return time.monotonic() - start
