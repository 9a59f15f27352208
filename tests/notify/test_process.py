"""The notify process as operators run it (``python -m monitor notify``, real subprocesses):
SIGKILL and restart, two instances in one consumer group, ``--test`` and start-up errors."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections import Counter
from pathlib import Path

import aiohttp
import pytest

from tests.notify.support import Trickle, Webhook, alert_value, create_topics, free_port, produce, unique_prefix, wait_until
from tests.support import ROOT

pytestmark = pytest.mark.integration


def _config(tmp_path: Path, name: str, bootstrap: str, prefix: str, destinations: str, *, port: int, extra: str = "") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'[kafka]\nbootstrap_servers = "{bootstrap}"\nconnect_timeout = 10\n\n'
        f'[state]\ndir = "{tmp_path / name}"\n\n[log]\nformat = "json"\n\n'
        f'[notify]\ngroup = "group-{prefix}"\ntopics = ["{prefix}*"]\nfrom_beginning = true\n'
        f'listen = "127.0.0.1:{port}"\nretry_backoff_initial = 0.05\nretry_backoff_max = 0.2\n{extra}\n{destinations}'
    )
    return path


async def _start(config: Path, log: Path, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    # Output to a file: a pipe nobody reads would block the process.
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "monitor", "notify", "--config", str(config),
            stdout=out, stderr=out, cwd=ROOT, env={**os.environ, **(env or {})},
        )  # fmt: skip


async def _metric(port: int, name: str, destination: str) -> float:
    async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/metrics") as response:
        text = await response.text()
    found = re.search(rf'^{name}\{{destination="{destination}"\}} (\S+)$', text, flags=re.MULTILINE)
    return float(found.group(1)) if found else 0.0


async def _ready(port: int) -> bool:
    try:
        async with aiohttp.ClientSession() as session, session.get(f"http://127.0.0.1:{port}/readyz") as response:
            return response.status == 200
    except aiohttp.ClientError:
        return False


async def _until(check, timeout: float = 30.0, what: str = "") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _stop(process: asyncio.subprocess.Process) -> int:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(process.wait(), 30)


def _stories(texts: list[str], prefix: str) -> Counter[int]:
    return Counter(int(n) for text in texts for n in re.findall(rf"Story (\d+) {re.escape(prefix)}", text))


async def test_sigkill_and_restart_send_nothing_twice_and_lose_nothing(broker, tmp_path):
    prefix = unique_prefix()
    topic = f"{prefix}.sanctions"
    await create_topics(broker.bootstrap_servers, [topic], partitions=3)
    alerts, digests = await Webhook().start(), await Webhook().start()
    # Killed with 20 messages answered, more in flight (never answered), a digest in flight too.
    alerts.answer_first, digests.answer_first = 20, 0
    port = free_port()
    destinations = (
        f'[[notify.destination]]\nname = "alerts"\nurl = "{alerts.url()}"\n\n'
        f'[[notify.destination]]\nname = "digest"\nurl = "{digests.url()}"\ndigest = "2s"\ndigest_max_items = 100\n'
    )
    config = _config(tmp_path, "one", broker.bootstrap_servers, prefix, destinations, port=port, extra="concurrency = 3")
    log = tmp_path / "notify.log"
    try:
        await produce(broker.bootstrap_servers, topic, [alert_value(n, tag=prefix) for n in range(60)])
        first = await _start(config, log)
        try:
            await _until(lambda: _until_metric(port, "alerts", 20), what="20 alerts sent (answered)")
            await wait_until(lambda: digests.requests >= 1 and alerts.holding >= 1, 20, "a digest and alerts in flight")
        finally:
            first.kill()
            await first.wait()
        await wait_until(lambda: alerts.holding == 0 and digests.holding == 0, 10, "the killed process's requests to end")
        assert len(alerts.messages) == 20 and digests.messages == []
        alerts.release()
        digests.release()

        second = await _start(config, log)
        try:
            await wait_until(lambda: len(alerts.messages) >= 60, 30, "60 alerts")
            await wait_until(lambda: sum(_stories(digests.bodies(), prefix).values()) >= 60, 30, "60 alerts in digests")
            await asyncio.sleep(0.5)  # a duplicate would show now
        finally:
            assert await _stop(second) == 0
        assert _stories(alerts.titles(), prefix) == Counter(range(60)), "every alert once, none twice"
        assert _stories(digests.bodies(), prefix) == Counter(range(60)), "every alert in exactly one digest"
        assert "notify.resume" in log.read_text()
    finally:
        await alerts.stop()
        await digests.stop()


async def _until_metric(port: int, destination: str, value: float) -> bool:
    try:
        return await _metric(port, "news_monitor_notify_sent_total", destination) >= value
    except aiohttp.ClientError:
        return False


async def test_two_instances_share_the_partitions_without_double_sends(broker, tmp_path):
    prefix = unique_prefix()
    topic = f"{prefix}.summit"
    await create_topics(broker.bootstrap_servers, [topic], partitions=4)
    webhook = await Webhook().start()
    destinations = f'[[notify.destination]]\nname = "hook"\nurl = "{webhook.url()}"\n'
    ports = free_port(), free_port()
    log = tmp_path / "notify.log"
    first = await _start(_config(tmp_path, "a", broker.bootstrap_servers, prefix, destinations, port=ports[0]), log)
    second = None
    try:
        await _until(lambda: _ready(ports[0]), what="the first instance to be ready")
        # Some alerts while it is alone, more during and after the second one's arrival.
        await produce(broker.bootstrap_servers, topic, [alert_value(n, rule="summit", tag=prefix) for n in range(40)])
        second = await _start(_config(tmp_path, "b", broker.bootstrap_servers, prefix, destinations, port=ports[1]), log)
        await produce(broker.bootstrap_servers, topic, [alert_value(n, rule="summit", tag=prefix) for n in range(40, 60)])
        await _until(lambda: _ready(ports[1]), what="the second instance to be ready")
        await produce(broker.bootstrap_servers, topic, [alert_value(n, rule="summit", tag=prefix) for n in range(60, 120)])
        await wait_until(lambda: len(webhook.messages) >= 120, 40, "120 alerts")
        await asyncio.sleep(0.5)
        sent = [await _metric(port, "news_monitor_notify_sent_total", "hook") for port in ports]
        assert _stories(webhook.titles(), prefix) == Counter(range(120)), "each alert once"
        assert sum(sent) == 120 and min(sent) > 0, f"both instances sent: {sent}"
    finally:
        codes = [await _stop(p) for p in (first, second) if p is not None]
        await webhook.stop()
    assert codes == [0, 0], log.read_text()[-3000:]


async def test_notify_test_sends_a_sample_and_bad_destinations_stop_start_up(tmp_path):
    webhook = await Webhook().start()
    try:
        config = tmp_path / "monitor.toml"
        config.write_text(
            '[notify]\n\n[[notify.destination]]\nname = "desk"\nurl = "json://127.0.0.1:${HOOK_PORT}/hook"\n'
            'title = "{rule}: {title}"\n\n[[notify.destination]]\nname = "down"\nurl = "json://127.0.0.1:9/hook"\n'
        )
        env = {**os.environ, "HOOK_PORT": str(webhook.port)}
        ok = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "monitor", "notify", "--config", str(config), "--test", "desk",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT, env=env,
        )  # fmt: skip
        out, err = await asyncio.wait_for(ok.communicate(), 60)
        assert ok.returncode == 0, err.decode()
        assert out.decode().startswith("sent a test message to desk (json://127.0.0.1:")
        assert webhook.titles() == ["news-monitor-test: Test message from news-monitor notify"]

        for args, code, expected in (
            (["--test", "down"], 1, "test message to down (json://127.0.0.1:9/hook"),
            (["--test", "nobody"], 2, "no [[notify.destination]] has that name (destinations: desk, down)"),
        ):
            run = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "monitor", "notify", "--config", str(config), *args,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT, env=env,
            )  # fmt: skip
            _out, err = await asyncio.wait_for(run.communicate(), 60)
            assert run.returncode == code and expected in err.decode(), err.decode()
    finally:
        await webhook.stop()


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        (
            'url = "bogus://s3cr3t-token@host"',
            r"monitor\.toml:5: \[\[notify\.destination\]\] #1 \(desk\): url is not a URL Apprise can use \(scheme 'bogus'\)",
        ),
        (
            'url = "json://h/x"\ntitle = "{rule}: {headline}"',
            r"monitor\.toml:6: .*#1 \(desk\): title template: unknown field \{headline\}",
        ),
        ('url = "json://h/x"\nbody = "{title"', r"monitor\.toml:6: .*#1 \(desk\): body template: "),
        ('url = "json://h/x"\nrate_limit = "lots"', r"monitor\.toml:6: .*#1 \(desk\): rate_limit 'lots' is not a rate limit"),
        (
            'url = "json://h/${NOT_SET_ANYWHERE}"',
            r"monitor\.toml:5: .*#1 \(desk\): url: environment variable NOT_SET_ANYWHERE is not set",
        ),
        ('url = "json://h/x"\ndigets = "1h"', r"monitor\.toml:6: .*#1 \(desk\): unknown key 'digets' \(did you mean 'digest'\?"),
    ],
)
async def test_a_malformed_destination_is_a_start_up_error_naming_the_table_and_key(tmp_path, table, expected):
    config = tmp_path / "monitor.toml"
    config.write_text(f'[kafka]\nbootstrap_servers = "127.0.0.1:9"\n[[notify.destination]]\nname = "desk"\n{table}\n')
    run = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor", "notify", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
    )  # fmt: skip
    _out, err = await asyncio.wait_for(run.communicate(), 60)
    text = err.decode()
    assert run.returncode == 2, text
    assert len(text.strip().splitlines()) == 1 and "Traceback" not in text
    assert re.search(expected, text), text
    assert "s3cr3t" not in text


async def test_sigterm_exits_after_shutdown_timeout_while_a_destination_never_finishes_its_answer(broker, tmp_path):
    prefix = unique_prefix()
    topic = f"{prefix}.sanctions"
    await create_topics(broker.bootstrap_servers, [topic])
    trickle = await Trickle().start()
    port = free_port()
    destination = f'[[notify.destination]]\nname = "slow"\nurl = "{trickle.url()}"\n'
    config = _config(tmp_path, "n", broker.bootstrap_servers, prefix, destination, port=port, extra="shutdown_timeout = 1")
    log = tmp_path / "notify.log"
    process = await _start(config, log)
    try:
        await _until(lambda: _ready(port), what="notify ready")
        await produce(broker.bootstrap_servers, topic, [alert_value(1, tag=prefix)])
        await asyncio.wait_for(trickle.asked.wait(), 30)
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0, "exit 0 once shutdown_timeout is over"
        text = log.read_text()
        assert '"notify.stop.in_flight"' in text and '"notify.stopped"' in text
    finally:
        if process.returncode is None:
            process.kill()
        await trickle.stop()


async def test_notify_test_to_a_destination_that_never_finishes_fails_after_send_timeout(tmp_path):
    trickle = await Trickle().start()
    try:
        config = tmp_path / "monitor.toml"
        config.write_text(f'[notify]\nsend_timeout = 1\n\n[[notify.destination]]\nname = "slow"\nurl = "{trickle.url()}"\n')
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "monitor", "notify", "--config", str(config), "--test", "slow",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=ROOT,
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(process.communicate(), 30)
        finally:
            if process.returncode is None:
                process.kill()
        assert process.returncode == 1 and out == b""
        [line] = err.decode().splitlines()
        assert line.startswith(f"news-monitor: test message to slow (json://127.0.0.1:{trickle.port}/hook")
        assert line.endswith(" failed: slow did not finish within send_timeout (1 s)")
    finally:
        await trickle.stop()
