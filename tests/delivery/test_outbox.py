"""At-least-once, measured: the daemon against a broker that dies, and a daemon that dies.

Real parts only: the monitor runs as a subprocess (``python -m monitor run``), the broker
is Tansu with durable ``s3://`` storage on a loopback moto S3 server (so a SIGKILLed
broker comes back with what it acknowledged, as Apache Kafka does), and the feed is a
real aiohttp server on 127.0.0.1. The tests wait on the monitor's own log events, never
on fixed sleeps, except for the few seconds the broker is deliberately kept down.
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
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.adapters.broker import EmbeddedBroker, free_port, wait_for_port
from monitor.adapters.store import Store
from monitor.engine import load_rules
from monitor.model import alert_id_for
from monitor.parse import parse_feed
from tests.support import RULES, FeedServer, alerts_from, read_topic

pytestmark = pytest.mark.integration

SANCTIONS = "alerts.sanctions"
#: How long the broker stays dead: "some seconds".
OUTAGE_SECONDS = 3.0


# -- durable broker ------------------------------------------------------------------


class S3Server:
    """moto's S3 server as a child process on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        moto = Path(sys.executable).with_name("moto_server")
        self._process = subprocess.Popen(
            [str(moto), "-H", "127.0.0.1", "-p", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        if not wait_for_port("127.0.0.1", self.port, 20.0):
            self.stop()
            raise RuntimeError(f"moto_server did not listen on {self.endpoint} within 20s")
        return self

    def env(self) -> dict[str, str]:
        """What Tansu needs to use this server as its S3."""
        return {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT": self.endpoint,
            "AWS_ALLOW_HTTP": "true",
        }

    def create_bucket(self) -> str:
        import boto3

        name = f"tansu-{uuid.uuid4().hex[:12]}"
        client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        )
        client.create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def durable_broker(s3: S3Server) -> Iterator[EmbeddedBroker]:
    """A Tansu broker of its own, storing in its own S3 bucket; restartable on the same port."""
    broker = EmbeddedBroker(port=free_port(), storage=f"s3://{s3.create_bucket()}/", env=s3.env())
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


# -- the monitor as a real process ----------------------------------------------------


class MonitorProcess:
    """``python -m monitor run --config ...`` with its JSON log events collected as they come."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.events: list[dict[str, Any]] = []
        self.process: asyncio.subprocess.Process | None = None
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> MonitorProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEWS_MONITOR_")}
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "monitor", "run", "--config", str(self.config),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        self._reader = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        async for line in self.process.stderr:
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                event = {"event": "<text>", "text": line.decode(errors="replace")}
            self.events.append(event if isinstance(event, dict) else {"event": "<json>", "value": event})
            self._changed.set()
        self._changed.set()

    def count(self, name: str, where: Callable[[dict[str, Any]], bool] = lambda e: True) -> int:
        return sum(1 for e in self.events if e.get("event") == name and where(e))

    async def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
        """Wait until ``condition()`` holds; fail naming ``what`` and the last events."""
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process is not None and self.process.returncode is not None and not condition():
                raise AssertionError(f"monitor exited ({self.process.returncode}) before {what}: {self.tail()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what}: {self.tail()}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))

    def tail(self, n: int = 8) -> str:
        return "\n".join(orjson.dumps(e).decode() for e in self.events[-n:])

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def terminate(self, timeout: float) -> tuple[int, float]:
        """SIGTERM; the exit code and the seconds it took."""
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.process.wait(), timeout)
        elapsed = time.monotonic() - started
        await self._finish()
        return code, elapsed

    async def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        await self.process.wait()
        await self._finish()

    async def _finish(self) -> None:
        if self._reader is not None:
            await asyncio.wait_for(self._reader, 10)


@pytest.fixture
async def monitors() -> AsyncIterator[list[MonitorProcess]]:
    """Monitor processes a test started; any still running at the end are killed."""
    started: list[MonitorProcess] = []
    yield started
    for monitor in started:
        if monitor.running:
            await monitor.kill()


def write_config(tmp_path: Path, bootstrap: str, feed_url: str, *, shutdown_timeout: float = 5.0) -> Path:
    state = tmp_path / "state"
    config = tmp_path / "monitor.toml"
    config.write_text(
        f"""
[kafka]
bootstrap_servers = "{bootstrap}"
enable_idempotence = "false"
linger_ms = 1
request_timeout_ms = 1500
retry_backoff_ms = 100
connect_timeout = 15

[state]
dir = "{state}"

[feeds]
interval = 1
# The feed's old pubDates would otherwise slow its polling down (adaptive schedule).
max_interval = 2
parse_workers = 0

[[feeds.feed]]
url = "{feed_url}"

[rules]
paths = ["{RULES}"]
watch = false

[delivery]
shutdown_timeout = {shutdown_timeout}
retry_backoff_initial = 0.2
retry_backoff_max = 1.0

[http]
enabled = false

[log]
level = "info"
format = "json"
""",
        encoding="utf-8",
    )
    return config


# -- feeds ----------------------------------------------------------------------------

_ITEM = """<item><title>EU adopts sanctions against Russia over {topic}</title>
<link>https://news.example.net/eu-sanctions/{run}/{n}</link>
<guid isPermaLink="false">urn:test:{run}:sanctions:{n}</guid>
<pubDate>Thu, 14 Aug 2025 16:30:00 +0000</pubDate>
<description>The European Union agreed economic sanctions against Russia. {filler}</description></item>"""


def _words(rng: random.Random, count: int) -> str:
    return " ".join(f"{rng.choice('bcdfgklmnprstvz')}{rng.getrandbits(24):x}" for _ in range(count))


def sanctions_feed(run: str, numbers: range) -> bytes:
    """An RSS feed whose every item matches the sanctions rule, with distinct guids.

    Each item has its own random text, so story grouping (near-duplicate wire copy)
    sees distinct stories and every item raises its own alert.
    """
    items = []
    for n in numbers:
        rng = random.Random(f"{run}:{n}")
        items.append(_ITEM.format(n=n, run=run, topic=_words(rng, 3), filler=_words(rng, 40)))
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>wire</title>'
        f"<link>https://news.example.net/</link>{chr(10).join(items)}</channel></rss>"
    ).encode()


def expected_alert_ids(body: bytes, feed_url: str) -> set[str]:
    """The alert ids the real parser and the real rules give for a feed body."""
    rules = load_rules([str(RULES)])
    return {alert_id_for(m.rule.id, a.id) for a in parse_feed(body, feed_url).articles for m in rules.match(a)}


async def delivered(bootstrap: str, feed_url: str, expected: set[str], timeout: float = 30.0) -> Counter[str]:
    """How often each alert id of this feed is on the sanctions topic, once all expected are there."""

    def complete(records: list[Any]) -> bool:
        return expected <= {orjson.loads(r.value)["alert_id"] for r in records}

    records = await read_topic(bootstrap, SANCTIONS, until=complete, timeout=timeout)
    # alerts_from validates every alert against the schema.
    return Counter(a["alert_id"] for a in alerts_from(records, [feed_url]))


def outbox_count(tmp_path: Path) -> int:
    store = Store(tmp_path / "state")
    try:
        return store.pending_count()
    finally:
        store.close()


def report(name: str, counts: Counter[str], expected: set[str]) -> None:
    duplicates = sum(counts.values()) - len(counts)
    missing = len(expected - set(counts))
    # Shown with -s or on failure: the measured duplicate rate of at-least-once.
    print(f"{name}: {len(expected)} expected, {len(counts)} delivered, {duplicates} duplicates, {missing} missing")


# -- the tests ------------------------------------------------------------------------


async def test_broker_outage_loses_no_alert(durable_broker, feed_server: FeedServer, monitors, tmp_path):
    run = uuid.uuid4().hex[:8]
    first_half = sanctions_feed(run, range(150))
    url = feed_server.serve("/wire.rss", first_half)
    full = sanctions_feed(run, range(200))
    expected = expected_alert_ids(full, url)
    assert len(expected) == 200

    monitor = await MonitorProcess(write_config(tmp_path, durable_broker.bootstrap_servers, url)).start()
    monitors.append(monitor)
    await monitor.wait_for(lambda: monitor.count("alert.published") >= 1, "the first alert to be published")

    durable_broker.kill()  # part-way through the first 150
    # Articles that appear while the broker is dead: their alerts can only wait.
    feed_server.serve("/wire.rss", full)
    await monitor.wait_for(lambda: monitor.count("delivery.unhealthy") >= 1, "delivery to notice the outage")
    await monitor.wait_for(
        lambda: monitor.count("feed.poll.ok", lambda e: e.get("new") == 50) >= 1,
        "the 50 new articles to be matched during the outage",
    )
    published_before = monitor.count("alert.published")
    await asyncio.sleep(OUTAGE_SECONDS)  # the outage itself: nothing to wait for but time
    assert monitor.running, "the monitor must not exit while the broker is down"
    assert monitor.count("alert.published") == published_before
    durable_broker.start()  # same port, same bucket

    await monitor.wait_for(lambda: monitor.count("delivery.recovered") >= 1, "delivery to recover by itself")
    counts = await delivered(durable_broker.bootstrap_servers, url, expected)
    report("outage", counts, expected)
    assert set(counts) == expected, f"lost alerts: {sorted(expected - set(counts))[:5]}"
    assert monitor.running
    code, _ = await monitor.terminate(15)
    assert code == 0
    assert outbox_count(tmp_path) == 0, "every acknowledged alert leaves the outbox"


async def test_crash_mid_publishing_resends_from_outbox(durable_broker, feed_server: FeedServer, monitors, tmp_path):
    run = uuid.uuid4().hex[:8]
    url = feed_server.serve("/wire.rss", sanctions_feed(run, range(60)))
    everything = sanctions_feed(run, range(100))
    expected = expected_alert_ids(everything, url)
    assert len(expected) == 100
    config = write_config(tmp_path, durable_broker.bootstrap_servers, url)

    first = await MonitorProcess(config).start()
    monitors.append(first)
    await first.wait_for(lambda: first.count("alert.published") >= 1, "the first alert to be published")
    durable_broker.kill()
    feed_server.serve("/wire.rss", everything)
    await first.wait_for(
        lambda: first.count("feed.poll.ok", lambda e: e.get("new") == 40) >= 1,
        "the 40 new articles to be matched while the broker is down",
    )
    await first.kill()  # SIGKILL with alerts pending
    left = outbox_count(tmp_path)
    assert left >= 40, f"the crash should leave the undelivered alerts in the outbox, found {left}"

    # The items leave the feed before the restart: only the outbox still knows their alerts.
    feed_server.serve("/wire.rss", sanctions_feed(run, range(0)))
    durable_broker.start()
    second = await MonitorProcess(config).start()
    monitors.append(second)
    await second.wait_for(lambda: second.count("delivery.outbox.resend") >= 1, "the outbox to be re-sent")

    counts = await delivered(durable_broker.bootstrap_servers, url, expected)
    report("crash", counts, expected)
    assert set(counts) == expected, f"lost alerts: {sorted(expected - set(counts))[:5]}"
    code, _ = await second.terminate(15)
    assert code == 0
    assert outbox_count(tmp_path) == 0


async def test_sigterm_with_pending_alerts_exits_zero_within_deadline(durable_broker, feed_server: FeedServer, monitors, tmp_path):
    run = uuid.uuid4().hex[:8]
    url = feed_server.serve("/wire.rss", sanctions_feed(run, range(20)))
    everything = sanctions_feed(run, range(50))
    expected = expected_alert_ids(everything, url)
    deadline = 3.0
    config = write_config(tmp_path, durable_broker.bootstrap_servers, url, shutdown_timeout=deadline)

    first = await MonitorProcess(config).start()
    monitors.append(first)
    await first.wait_for(lambda: first.count("alert.published") >= 1, "the first alert to be published")
    durable_broker.kill()
    feed_server.serve("/wire.rss", everything)
    await first.wait_for(
        lambda: first.count("feed.poll.ok", lambda e: e.get("new") == 30) >= 1,
        "the 30 new articles to be matched while the broker is down",
    )

    code, elapsed = await first.terminate(deadline + 10)
    assert code == 0, first.tail()
    # The deadline, plus a little for the interpreter to tear down.
    assert elapsed <= deadline + 1.5, f"shutdown took {elapsed:.1f}s, deadline {deadline}s"
    assert first.count("delivery.stop.undelivered") == 1
    assert outbox_count(tmp_path) >= 30

    feed_server.serve("/wire.rss", sanctions_feed(run, range(0)))
    durable_broker.start()
    second = await MonitorProcess(config).start()
    monitors.append(second)
    counts = await delivered(durable_broker.bootstrap_servers, url, expected)
    report("shutdown", counts, expected)
    assert set(counts) == expected, f"lost alerts: {sorted(expected - set(counts))[:5]}"
    code, _ = await second.terminate(15)
    assert code == 0
