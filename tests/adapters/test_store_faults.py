"""A state store that is damaged, unwritable or full: one line and exit 2 at start-up; while
running, not-ready with the reason, nothing committed lost, and recovery by itself.

A full disk is SQLite's own SQLITE_FULL, made with ``PRAGMA max_page_count`` on the
daemon's connection (the database may not grow past the pages it has); "space returns"
when the limit is raised. Damaged files are garbage, or a real store with its pages
overwritten. Everything else is real: the broker, the feed server, the HTTP endpoint.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from monitor.adapters.broker import free_port
from monitor.adapters.store import AsyncStore, Store, store_error
from monitor.errors import StoreError
from monitor.model import alert_id_for
from monitor.worker import Monitor
from tests.support import RULES, FeedServer, alerts_from, make_settings, read_topic

SANCTIONS = "alerts.sanctions"
_RSS = """<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><link>https://example.net/</link>
{items}</channel></rss>"""
_ITEM = """<item><title>EU adopts sanctions against Russia, package {n}</title>
<link>https://example.net/{run}/{n}</link><guid isPermaLink="false">urn:store:{run}:{n}</guid>
<description>The European Union agreed economic sanctions against Russia. {filler}</description></item>"""


# -- start-up: one line, exit 2, the file untouched -----------------------------------


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(4096) * 3)


def _malformed(path: Path) -> None:
    """A real store whose pages after the first (the schema) are overwritten."""
    store = Store(path.parent)
    for n in range(300):
        store.set_feed_health(f"https://example.net/feed/{n}/" + "x" * 40, "ok")
    store.close()
    raw = bytearray(path.read_bytes())
    raw[4096:] = b"\x5a" * (len(raw) - 4096)
    path.write_bytes(bytes(raw))


def _config(tmp_path: Path, state: Path) -> Path:
    config = tmp_path / "monitor.toml"
    config.write_text(
        f"""
[kafka]
bootstrap_servers = "127.0.0.1:{free_port()}"
connect_timeout = 2
[state]
dir = "{state}"
[feeds]
parse_workers = 0
[[feeds.feed]]
url = "https://example.net/feed.xml"
[rules]
paths = ["{RULES}"]
watch = false
[http]
enabled = false
[log]
format = "json"
""",
        encoding="utf-8",
    )
    return config


@pytest.mark.parametrize(
    ("damage", "words"),
    [(_garbage, "is damaged: file is not a database"), (_malformed, "is damaged: database disk image is malformed")],
)
@pytest.mark.parametrize("command", [["run", "--once"], ["status"]])
def test_a_damaged_store_is_one_line_and_exit_2_and_the_file_is_left_alone(tmp_path, damage, words, command):
    state = tmp_path / "state"
    state.mkdir()
    path = state / Store.FILENAME
    damage(path)
    before = path.read_bytes()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWS_MONITOR_")}
    result = subprocess.run(
        [sys.executable, "-m", "monitor", *command, "--config", str(_config(tmp_path, state))],
        capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("news-monitor: error:")]
    assert len(errors) == 1, result.stderr
    assert f"state store {path} {words}" in errors[0]
    assert "keep a copy" in errors[0] and ".recover" in errors[0]
    assert path.read_bytes() == before


@pytest.mark.parametrize("command", [["run", "--once"], ["status"]])
def test_a_store_that_cannot_be_opened_is_one_line_and_exit_2(tmp_path, command):
    state = tmp_path / "state"
    (state / Store.FILENAME).mkdir(parents=True)  # a directory where the file should be
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWS_MONITOR_")}
    result = subprocess.run(
        [sys.executable, "-m", "monitor", *command, "--config", str(_config(tmp_path, state))],
        capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(
        f"news-monitor: error: state store {state / Store.FILENAME} cannot be opened for writing"
    )


def test_a_full_disk_at_start_says_to_start_again_and_while_running_that_it_recovers(tmp_path):
    # At start the process exits 2: "goes on by itself" would have the operator wait for nothing.
    full = sqlite3.OperationalError("database or disk is full")
    path = tmp_path / Store.FILENAME
    at_start = store_error(full, path, opening=True)
    running = store_error(full, path)
    assert at_start.kind == running.kind == "full"
    assert at_start.hint is not None and "then start the monitor again" in at_start.hint and "by itself" not in at_start.hint
    assert running.hint is not None and "goes on by itself" in running.hint


def test_damage_found_while_running_stays_reported_after_a_commit(tmp_path):
    store = Store(tmp_path)
    for n in range(300):
        store.set_feed_health(f"https://example.net/feed/{n}/" + "x" * 40, "ok")
    # Damage the feeds table's pages behind the open connection (a fresh connection reads them).
    other = sqlite3.connect(store.path)
    other.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    other.close()
    store.close()
    raw = bytearray(store.path.read_bytes())
    raw[3 * 4096 :] = b"\x5a" * (len(raw) - 3 * 4096)
    store.path.write_bytes(bytes(raw))
    store = Store(tmp_path)
    with pytest.raises(StoreError) as raised:
        store.all_feed_states()
    assert raised.value.kind == "corrupt" and store.failure is raised.value
    store.enqueue([])  # a write that commits: a full disk would count as recovered, damage does not
    assert store.failure is not None and store.failure.kind == "corrupt"
    store.close()


# -- while running: a full disk --------------------------------------------------------


class FullDisk:
    """Keeps the daemon's store and makes it full (SQLITE_FULL) from its first write on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.store: AsyncStore | None = None
        opened = AsyncStore.open

        def open_full(state_dir: Path | str) -> AsyncStore:
            store = opened(state_dir)
            db = store.sync._db
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            db.execute(f"PRAGMA max_page_count = {pages}")
            self.store = store
            return store

        monkeypatch.setattr(AsyncStore, "open", staticmethod(open_full))

    async def free_space(self) -> None:
        assert self.store is not None
        await self.store.call(self.store.sync._db.execute, "PRAGMA max_page_count = 1073741823")


async def _until(condition: Callable[[], Any], what: str, timeout: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await _holds(condition):
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _holds(condition: Callable[[], Any]) -> bool:
    result = condition()
    if asyncio.iscoroutine(result):
        result = await result
    return bool(result)


async def _readyz(address: tuple[str, int]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http, http.get(f"http://{address[0]}:{address[1]}/readyz") as response:
        return response.status, await response.json()


def _feed(feed_server: FeedServer, run: str, count: int) -> str:
    filler = "Officials said more measures could follow. " * 12
    items = "".join(_ITEM.format(run=run, n=n, filler=filler) for n in range(count))
    return feed_server.serve(f"/store-{run}.rss", _RSS.format(items=items))


def _settings(tmp_path: Path, broker, url: str):
    return make_settings(
        tmp_path,
        broker.bootstrap_servers,
        [url],
        overrides={
            "kafka": {"enable_idempotence": "false"},
            "http": {"enabled": True, "listen": f"127.0.0.1:{free_port()}"},
            "health": {"check_interval": 0.2},
            "stories": {"enabled": False},
        },
    )


@pytest.mark.integration
async def test_a_full_disk_makes_the_daemon_not_ready_and_it_recovers_when_space_returns(
    broker, feed_server: FeedServer, tmp_path, monkeypatch
):
    run = uuid.uuid4().hex[:8]
    count = 40
    url = _feed(feed_server, run, count)
    disk = FullDisk(monkeypatch)
    monitor = Monitor(_settings(tmp_path, broker, url))
    with capture_logs() as logs:
        await _recover(monitor, disk, broker, url, [alert_id_for("sanctions", f"urn:store:{run}:{n}") for n in range(count)])
    assert monitor.summary.undelivered == 0
    store = Store(tmp_path / "state")
    assert store.pending_count() == 0
    store.close()
    events = [entry["event"] for entry in logs]
    assert "state.store.failing" in events and "feed.poll.store_failed" in events
    assert "feed.poll.crashed" not in events


async def _recover(monitor: Monitor, disk: FullDisk, broker, url: str, alert_ids: list[str]) -> None:
    """Run the daemon into the full disk (/readyz 503 naming it), free space, and wait for
    /readyz 200 and for every one of ``alert_ids`` on the topic."""
    task = asyncio.create_task(monitor.run(handle_signals=False))
    try:
        await _until(lambda: monitor.http_address is not None and disk.store is not None, "the daemon to start")
        assert monitor.http_address is not None

        async def store_reported() -> bool:
            status, body = await _readyz(monitor.http_address)
            return status == 503 and any("the state store is failing" in p and "disk is full" in p for p in body["problems"])

        await _until(store_reported, "/readyz to report the full disk")
        assert monitor.summary.failures >= 1
        await disk.free_space()

        async def ready() -> bool:
            return (await _readyz(monitor.http_address))[0] == 200

        await _until(ready, "/readyz to be ready again")
        wanted = set(alert_ids)
        records = await read_topic(
            broker.bootstrap_servers,
            SANCTIONS,
            until=lambda rs: wanted <= {a["alert_id"] for a in alerts_from(rs, [url])},
            timeout=30,
        )
        assert wanted <= {a["alert_id"] for a in alerts_from(records, [url])}
    finally:
        monitor.stop()
        await asyncio.wait_for(task, 30)


@pytest.mark.integration
async def test_alerts_committed_while_the_disk_is_full_are_sent_and_counted_at_shutdown(
    broker, feed_server: FeedServer, tmp_path, monkeypatch
):
    """The disk stays full: alerts whose transaction committed before a later step of the
    same poll failed are sent in the drain, and the summary counts the outbox truly."""
    run = uuid.uuid4().hex[:8]
    url = _feed(feed_server, run, 40)
    FullDisk(monkeypatch)
    monitor = Monitor(_settings(tmp_path, broker, url))
    with capture_logs() as logs:
        task = asyncio.create_task(monitor.run(handle_signals=False))
        try:
            # A third fetch: two polls met the full disk (each feed is polled by one poller at a time).
            await _until(lambda: feed_server.resources[f"/store-{run}.rss"].hits >= 3, "two polls to meet the full disk")
        finally:
            monitor.stop()
            await asyncio.wait_for(task, 30)
    store = Store(tmp_path / "state")
    committed = [row[0] for row in store._db.execute("SELECT id FROM articles")]
    left = store.pending_count()
    store.close()
    assert committed, "some articles fit before the disk was full"
    assert monitor.summary.undelivered == left
    wanted = {alert_id_for("sanctions", article_id) for article_id in committed}
    records = await read_topic(
        broker.bootstrap_servers, SANCTIONS, until=lambda rs: wanted <= {a["alert_id"] for a in alerts_from(rs, [url])}
    )
    assert wanted <= {a["alert_id"] for a in alerts_from(records, [url])}
    assert any(entry["event"] == "delivery.outbox.requeued" for entry in logs)
