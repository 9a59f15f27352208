"""The daemon at its process boundary: killed, doubled, reloaded and stopped by real signals.

Real parts only: the monitor runs as a subprocess (``python -m monitor run``) with its
parser worker processes and its HTTP endpoint on a fixed loopback port, the feed is a
real aiohttp server on 127.0.0.1, and the broker is the session's Tansu or the daemon's
own embedded one. The tests wait on the monitor's log events and on /proc, never on
fixed sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from monitor.adapters.broker import EmbeddedBroker, free_port
from monitor.adapters.processes import port_holders
from monitor.adapters.statelock import StateLock
from monitor.adapters.web import WebServer
from monitor.errors import ConfigError
from monitor.model import Feed
from monitor.observe.observer import Observer
from tests.delivery.test_outbox import MonitorProcess, delivered, expected_alert_ids, outbox_count, sanctions_feed
from tests.support import ROOT, RULES, FeedServer, LocalServer

pytestmark = pytest.mark.integration


# -- helpers ---------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, str, str] | None:
    """(parent pid, state letter, start time) of a process, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after the last ")".
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), fields[0], fields[19]


def process_tree(root: int) -> dict[int, str]:
    """Every descendant of ``root`` now: pid -> start time (to tell a reused pid apart)."""
    children: dict[int, list[int]] = {}
    started: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            children.setdefault(stat[0], []).append(int(entry.name))
            started[int(entry.name)] = stat[2]
    tree: dict[int, str] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        if pid in started:
            tree[pid] = started[pid]
            todo.extend(children.get(pid, []))
    return tree


def survivors(tree: dict[int, str]) -> list[str]:
    """The processes of ``tree`` still alive (a zombie is dead; it only waits to be reaped)."""
    alive = []
    for pid, start in tree.items():
        stat = _stat(pid)
        if stat is not None and stat[2] == start and stat[1] != "Z":
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            alive.append(f"{pid}: {command[:120]}")
    return alive


async def wait_until(condition: Callable[[], Any], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def sigkill(monitor: MonitorProcess, tree: dict[int, str]) -> None:
    """SIGKILL the daemon (no clean-up of any kind runs) and wait for it and its log to end.

    Bounded: a child that survives the daemon keeps its stderr open, and asyncio waits
    for every pipe to close before it reports the exit.
    """
    assert monitor.process is not None
    pid = monitor.process.pid
    monitor.process.kill()
    await wait_until(lambda: _stat(pid) is None or _stat(pid)[1] == "Z", "the daemon to die")
    try:
        await asyncio.wait_for(monitor.process.wait(), 10)
        await monitor._finish()
    except TimeoutError:
        raise AssertionError(f"processes of the killed daemon still hold its stderr: {survivors(tree)}") from None


def write_config(
    tmp_path: Path,
    bootstrap: str,
    feeds: list[str | dict[str, Any]],
    *,
    http_port: int,
    embedded_port: int = 0,
    shutdown_timeout: float = 10.0,
    rules: Path = RULES,
    name: str = "monitor.toml",
    extra: str = "",
) -> Path:
    """A daemon config on ``tmp_path/state`` with real parser workers and the HTTP endpoint on."""
    tables = []
    for feed in feeds:
        table = feed if isinstance(feed, dict) else {"url": feed}
        lines = [f'{key} = "{value}"' if isinstance(value, str) else f"{key} = {value}" for key, value in table.items() if key != "headers"]
        if "headers" in table:
            lines.append("headers = { " + ", ".join(f'"{k}" = "{v}"' for k, v in table["headers"].items()) + " }")
        tables.append("[[feeds.feed]]\n" + "\n".join(lines))
    config = tmp_path / name
    config.write_text(
        f"""
[kafka]
bootstrap_servers = "{bootstrap}"
embedded_port = {embedded_port}
enable_idempotence = "false"
linger_ms = 1
request_timeout_ms = 1500
retry_backoff_ms = 100
connect_timeout = 15

[state]
dir = "{tmp_path / 'state'}"

[feeds]
interval = 1
max_interval = 2
parse_workers = 2

{chr(10).join(tables)}

[rules]
paths = ["{rules}"]
watch = false

[delivery]
shutdown_timeout = {shutdown_timeout}
retry_backoff_initial = 0.2
retry_backoff_max = 1.0

[http]
listen = "127.0.0.1:{http_port}"

[log]
level = "info"
format = "json"
{extra}
""",
        encoding="utf-8",
    )
    return config


def _cli(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    """``news-monitor ARGS``; output through files, not pipes, so a timeout cannot hang on a
    pipe that a child of the command still holds."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWS_MONITOR_")}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        result = subprocess.run(
            [sys.executable, "-m", "monitor", *args], cwd=ROOT, stdout=out, stderr=err, timeout=timeout, env=env, stdin=subprocess.DEVNULL
        )
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(result.args, result.returncode, out.read().decode(errors="replace"), err.read().decode(errors="replace"))


@pytest.fixture(autouse=True)
def child_tmpdir(tmp_path, monkeypatch):
    """The daemons' temporary files (the fork server's socket, left behind by a SIGKILL) go
    under the test's own directory."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))


@pytest.fixture
async def monitors():
    """Monitor processes a test started; any still running at the end are killed."""
    started: list[MonitorProcess] = []
    yield started
    for monitor in started:
        if monitor.running:
            assert monitor.process is not None
            monitor.process.kill()
            # Bounded (see sigkill): a surviving child would keep the exit from being reported.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(monitor.process.wait(), 10)


# -- SIGKILL: nothing survives, the restart starts cleanly -------------------------------


@pytest.mark.parametrize("embedded", [False, True], ids=["kafka", "embedded-broker"])
async def test_sigkilled_daemon_leaves_no_process_and_a_restart_delivers_everything(
    broker: EmbeddedBroker, feed_server: FeedServer, monitors, tmp_path, embedded
):
    run = uuid.uuid4().hex[:8]
    url = feed_server.serve("/wire.rss", sanctions_feed(run, range(30)))
    http_port = free_port()
    embedded_port = free_port() if embedded else 0
    bootstrap = f"127.0.0.1:{embedded_port}" if embedded else broker.bootstrap_servers
    config = write_config(
        tmp_path, "embedded" if embedded else broker.bootstrap_servers, [url], http_port=http_port, embedded_port=embedded_port
    )

    first = await MonitorProcess(config).start()
    monitors.append(first)
    await first.wait_for(lambda: first.count("alert.published") >= 1, "the first alert to be published")
    tree = process_tree(first.process.pid)
    assert len(tree) >= 2, f"the parser workers (and the embedded broker) should be running: {tree}"
    await sigkill(first, tree)

    await wait_until(lambda: not survivors(tree), "the daemon's processes to die with it")
    assert not survivors(tree)
    assert port_holders(http_port) == [], f"port {http_port} still held: {port_holders(http_port)}"
    if embedded:
        assert port_holders(embedded_port) == []

    # The feed grows while the daemon is down; the restart must start cleanly (same state
    # directory, same ports) and deliver what the first left in its outbox and the new items.
    everything = sanctions_feed(run, range(60))
    feed_server.serve("/wire.rss", everything)
    second = await MonitorProcess(config).start()
    monitors.append(second)
    await second.wait_for(lambda: second.count("monitor.started") == 1, "the restarted daemon to start")
    expected = expected_alert_ids(everything, url)
    if embedded:
        # An in-memory broker takes what it acknowledged with it: only the alerts the
        # restart sends (new items, and what was left in the outbox) can be read back.
        expected = expected_alert_ids(everything, url) - expected_alert_ids(sanctions_feed(run, range(30)), url)
    counts = await delivered(bootstrap, url, expected, timeout=60)
    assert expected <= set(counts), f"lost alerts: {sorted(expected - set(counts))[:5]}"

    tree = process_tree(second.process.pid)
    code, _ = await second.terminate(30)
    assert code == 0, second.tail()
    await wait_until(lambda: not survivors(tree), "the daemon's processes to end with a clean stop")
    assert outbox_count(tmp_path) == 0


async def test_embedded_broker_started_by_a_loop_outlives_the_loops_worker_threads():
    """The kernel's parent-death signal follows the thread that forked: the broker must not
    be forked by a short-lived executor thread, or it would die when that thread ends."""
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(max_workers=1)
    loop.set_default_executor(executor)
    thread_id = await asyncio.to_thread(threading.get_native_id)
    broker = EmbeddedBroker()
    await broker.__aenter__()
    try:
        loop.set_default_executor(ThreadPoolExecutor(max_workers=1))
        executor.shutdown(wait=True)
        await wait_until(lambda: not Path(f"/proc/self/task/{thread_id}").exists(), "the executor's thread to end")
        assert broker.running, "the broker died with the thread that started it"
        connection = await asyncio.to_thread(socket.create_connection, ("127.0.0.1", broker.port), 5)
        connection.close()
    finally:
        await broker.__aexit__(None, None, None)


async def test_port_in_use_names_the_process_holding_it():
    holder = subprocess.Popen(
        [sys.executable, "-c", "import socket,sys,time; s=socket.socket(); s.bind(('127.0.0.1',0)); s.listen(); print(s.getsockname()[1], flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        port = int(holder.stdout.readline())
        with pytest.raises(ConfigError) as raised:
            await WebServer(Observer([]), f"127.0.0.1:{port}").start()
        assert f"PID {holder.pid}" in str(raised.value), str(raised.value)
        assert "address already in use" in str(raised.value)
    finally:
        holder.kill()
        holder.wait()


# -- one daemon per state directory -------------------------------------------------------


def test_a_state_dir_that_cannot_be_a_directory_is_a_config_error_naming_the_setting(tmp_path):
    taken = tmp_path / "state"
    taken.write_text("a file where the state directory goes")
    # Before: an OSError, printed by the CLI as "PATH: File exists" without the setting.
    with pytest.raises(ConfigError, match=r"^\[state\] dir: cannot use .*/state as the state directory: it is a file, not a directory"):
        StateLock(taken).acquire()
    with pytest.raises(ConfigError, match=r"^\[signals\] state_dir: cannot use .*/state/x as the state directory: Not a directory"):
        StateLock(taken / "x", setting="[signals] state_dir").acquire()


def test_state_lock_is_exclusive_names_its_holder_and_dies_with_it(tmp_path):
    with StateLock(tmp_path):
        with pytest.raises(ConfigError) as raised:
            StateLock(tmp_path).acquire()
        assert f"PID {os.getpid()}" in str(raised.value)
        assert "[state] dir" in str(raised.value)
    StateLock(tmp_path).acquire().release()  # released on exit

    code = "import sys, time; from monitor.adapters.statelock import StateLock; StateLock(sys.argv[1]).acquire(); print('locked', flush=True); time.sleep(120)"
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=f"PID {holder.pid}"):
            StateLock(tmp_path).acquire()
    finally:
        holder.kill()  # SIGKILL: the kernel drops the lock, nothing is left to clean
        holder.wait()
    StateLock(tmp_path).acquire().release()


def test_a_state_dir_where_the_lock_file_cannot_be_written_is_one_line_naming_the_file_and_exit_2(tmp_path):
    # A full disk at start: the lock file is created (no block needed) and writing the PID
    # fails; the line was "news-monitor: error: No space left on device", naming no file.
    # No file may grow here (RLIMIT_FSIZE 0): the write fails as on a full disk, with EFBIG.
    import resource

    config = write_config(tmp_path, "127.0.0.1:9", ["http://127.0.0.1:9/feed.rss"], http_port=free_port())
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWS_MONITOR_")}
    result = subprocess.run(
        [sys.executable, "-m", "monitor", "run", "--once", "--config", str(config)], cwd=ROOT, capture_output=True, text=True,
        timeout=60, env=env, stdin=subprocess.DEVNULL, preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0)),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-2000:]
    lock = tmp_path / "state" / "monitor.lock"
    assert result.stderr == (
        f"news-monitor: error: [state] dir: cannot write {lock}: File too large (the file size limit (ulimit -f) of this "
        f"process allows no file in {lock.parent}; raise it)\n"
    )


async def test_a_second_daemon_on_the_same_state_dir_exits_2_naming_the_first(broker, feed_server: FeedServer, monitors, tmp_path):
    url = feed_server.serve("/wire.rss", sanctions_feed(uuid.uuid4().hex[:8], range(5)))
    config = write_config(tmp_path, broker.bootstrap_servers, [url], http_port=free_port())
    first = await MonitorProcess(config).start()
    monitors.append(first)
    await first.wait_for(lambda: first.count("monitor.started") == 1, "the first daemon to start")

    # Its own HTTP port, so only the state directory is shared.
    other = write_config(tmp_path, broker.bootstrap_servers, [url], http_port=free_port(), name="other.toml")
    for args in (["run"], ["run", "--once"]):
        result = await asyncio.to_thread(_cli, *args, "--config", str(other), timeout=60)
        assert result.returncode == 2, (args, result.stderr[-2000:])
        assert f"PID {first.process.pid}" in result.stderr and "[state] dir" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr

    status = await asyncio.to_thread(_cli, "status", "--config", str(config), "--format", "plain")
    assert status.returncode in (0, 1), status.stderr
    assert url in status.stdout
    assert first.running
    code, _ = await first.terminate(30)
    assert code == 0


# -- signals --------------------------------------------------------------------------------


async def test_sighup_reloads_feeds_and_rules_and_keeps_running_on_a_bad_config(broker, feed_server: FeedServer, monitors, tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    for rule_file in RULES.glob("*.yaml"):
        (rules / rule_file.name).write_bytes(rule_file.read_bytes())
    empty = '<?xml version="1.0"?><rss version="2.0"><channel><title>t</title></channel></rss>'
    kept = feed_server.serve("/kept.rss", empty)
    dropped = feed_server.serve("/dropped.rss", empty)
    added = feed_server.serve("/added.rss", empty)
    port = free_port()
    config = write_config(tmp_path, broker.bootstrap_servers, [kept, dropped], http_port=port, rules=rules)
    monitor = await MonitorProcess(config).start()
    monitors.append(monitor)
    resources = feed_server.resources
    await monitor.wait_for(lambda: resources["/kept.rss"].hits >= 1 and resources["/dropped.rss"].hits >= 1, "both feeds to be polled")

    # Edit the config: one feed removed, one added, one changed (a header it now sends), and a rule file.
    write_config(
        tmp_path, broker.bootstrap_servers, [{"url": kept, "headers": {"X-Reloaded": "yes"}}, added], http_port=port, rules=rules
    )
    (rules / "extra.yaml").write_text(
        "rules:\n  - id: reload-probe\n    query: '\"reload probe\"'\n    topic: alerts.summit\n", encoding="utf-8"
    )
    monitor.process.send_signal(signal.SIGHUP)
    await monitor.wait_for(lambda: monitor.count("feeds.reloaded") == 1, "the feed list to be reloaded")
    reloaded = next(e for e in monitor.events if e.get("event") == "feeds.reloaded")
    assert (reloaded["added"], reloaded["removed"], reloaded["changed"]) == (1, 1, 1), reloaded
    assert monitor.count("rules.reloaded", lambda e: "reload-probe" in str(e)) == 1, monitor.tail()

    await monitor.wait_for(lambda: resources["/added.rss"].hits >= 1, "the added feed to be polled")
    dropped_hits = resources["/dropped.rss"].hits
    with_header = lambda: sum(1 for path, headers in feed_server.requests if path == "/kept.rss" and headers.get("X-Reloaded") == "yes")  # noqa: E731
    await monitor.wait_for(lambda: with_header() >= 2, "the changed feed to poll with its new header")
    # Two polls of the changed feed later, at most one poll of the removed one was in flight.
    assert resources["/dropped.rss"].hits <= dropped_hits + 1

    # A broken config: the daemon keeps its feeds and says where the file is wrong.
    config.write_text(config.read_text() + "\n[feeds\n", encoding="utf-8")
    monitor.process.send_signal(signal.SIGHUP)
    await monitor.wait_for(lambda: monitor.count("feeds.reload.failed") == 1, "the bad config to be refused")
    failed = next(e for e in monitor.events if e.get("event") == "feeds.reload.failed")
    # <file>:<line>:<column>: the line of "[feeds" (the file's last), as every config error.
    assert failed["error"].startswith(f"{config}:{len(config.read_text().splitlines())}:"), failed
    added_hits = resources["/added.rss"].hits
    await monitor.wait_for(lambda: resources["/added.rss"].hits >= added_hits + 2, "polling to go on")
    assert monitor.running
    code, _ = await monitor.terminate(30)
    assert code == 0


async def test_a_second_sigterm_during_the_drain_stops_at_once_keeping_alerts_in_the_outbox(feed_server: FeedServer, monitors, tmp_path):
    run = uuid.uuid4().hex[:8]
    url = feed_server.serve("/wire.rss", sanctions_feed(run, range(5)))
    everything = sanctions_feed(run, range(25))
    shutdown_timeout = 60.0
    kafka = EmbeddedBroker(port=free_port()).start()
    try:
        config = write_config(tmp_path, kafka.bootstrap_servers, [url], http_port=free_port(), shutdown_timeout=shutdown_timeout)
        first = await MonitorProcess(config).start()
        monitors.append(first)
        await first.wait_for(lambda: first.count("alert.published") >= 1, "the first alert to be published")
        kafka.kill()  # the drain can now only wait
        feed_server.serve("/wire.rss", everything)
        await first.wait_for(lambda: first.count("feed.poll.ok", lambda e: e.get("new") == 20) >= 1, "20 alerts to be raised")

        started = time.monotonic()
        first.process.send_signal(signal.SIGTERM)
        await first.wait_for(lambda: first.count("monitor.stopping") == 1, "the drain to begin")
        first.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(first.process.wait(), shutdown_timeout)
        elapsed = time.monotonic() - started
        await first._finish()
        assert code == 0, first.tail()
        assert elapsed < shutdown_timeout / 4, f"the second SIGTERM did not stop the drain: {elapsed:.1f}s"
        assert first.count("monitor.stopping.now") == 1, first.tail()
        assert outbox_count(tmp_path) >= 20, "every pending alert stays in the outbox"

        # Nothing was lost: a restart against a broker sends all of it.
        kafka.start()  # same port, empty (in memory)
        feed_server.serve("/wire.rss", sanctions_feed(run, range(0)))
        second = await MonitorProcess(config).start()
        monitors.append(second)
        waiting = expected_alert_ids(everything, url) - expected_alert_ids(sanctions_feed(run, range(5)), url)
        counts = await delivered(kafka.bootstrap_servers, url, waiting, timeout=60)
        assert waiting <= set(counts)
        code, _ = await second.terminate(30)
        assert code == 0
        assert outbox_count(tmp_path) == 0
    finally:
        kafka.stop()


async def test_feed_list_reload_in_process_applies_added_removed_and_changed(tmp_path):
    """The same reload without a subprocess: the schedule and the health tracker follow."""
    from monitor.worker import Monitor
    from tests.support import make_settings

    settings = make_settings(tmp_path, "127.0.0.1:9", ["file:///a.xml", "file:///b.xml"])
    monitor = Monitor(settings)
    monitor.poller.schedule.start(["file:///a.xml", "file:///b.xml"], time.monotonic())
    monitor.apply_feeds([Feed("file:///a.xml", interval=5.0), Feed("file:///c.xml")])
    assert set(monitor.poller.feeds) == {"file:///a.xml", "file:///c.xml"}
    assert "file:///b.xml" not in monitor.poller.schedule
    assert {row.url for row in monitor.observer.tracker.rows()} == {"file:///a.xml", "file:///c.xml"}
    assert monitor.summary.feeds == 2


class StalledServer(LocalServer):
    """Answers nothing until the test ends: a poll of it is in flight for as long as it waits."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self._never = asyncio.Event()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.asked.set()
        await self._never.wait()
        return web.Response(status=204)


async def test_sighup_stops_run_once_within_the_shutdown_deadline(broker, tmp_path):
    server = await StalledServer().start()
    try:
        shutdown_timeout = 3.0
        config = write_config(
            tmp_path, broker.bootstrap_servers, [server.url("/stalled.rss")], http_port=free_port(), shutdown_timeout=shutdown_timeout
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEWS_MONITOR_")}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "monitor", "run", "--once", "--config", str(config),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
        )
        try:
            await asyncio.wait_for(server.asked.wait(), 60)
            started = time.monotonic()
            process.send_signal(signal.SIGHUP)
            out, err = await asyncio.wait_for(process.communicate(), 30)
            elapsed = time.monotonic() - started
        finally:
            if process.returncode is None:
                process.kill()
        assert process.returncode == 0, err.decode()[-2000:]
        assert b'"signal":"SIGHUP"' in err and b"monitor.stopping" in err
        assert b"feeds polled:" in out, "the summary is printed"
        # The poll in flight got what was left of the deadline, not its own 15 s read timeout.
        assert elapsed < shutdown_timeout + 5, f"took {elapsed:.1f}s"
    finally:
        await server.stop()
