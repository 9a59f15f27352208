"""``news-monitor status``: the feed-health table from the state store, as operators run it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from monitor.adapters.broker import free_port
from monitor.worker import Monitor
from tests.support import ROOT, SEEDS, make_settings

pytestmark = pytest.mark.integration


def _status(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NEWS_MONITOR_")}
    return subprocess.run(
        [sys.executable, "-m", "monitor", "status", "--config", str(config), *args],
        cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60,
    )


def _config(tmp_path: Path, feeds: list[str]) -> Path:
    tables = "\n".join(f'[[feeds.feed]]\nurl = "{url}"' for url in feeds)
    path = tmp_path / "monitor.toml"
    path.write_text(
        f'[state]\ndir = "{tmp_path / "state"}"\n[rules]\npaths = ["{ROOT / "rules"}"]\n'
        f"[health]\nfailing_after = 1\n{tables}\n"
    )
    return path


async def test_status_prints_health_of_every_feed(broker, tmp_path):
    good = str(SEEDS / "world-news.rss.xml")
    dead = f"http://127.0.0.1:{free_port()}/feed.xml"
    settings = make_settings(tmp_path, broker.bootstrap_servers, [good, dead], overrides={"health": {"failing_after": 1}})
    await Monitor(settings).run(once=True, handle_signals=False)
    config = _config(tmp_path, [good, dead])

    plain = _status(config)
    assert plain.returncode == 1, "a failing feed makes status usable as a check"
    header, *lines = plain.stdout.splitlines()
    assert header.split()[:5] == ["HEALTH", "LAST_SUCCESS", "ITEMS", "POLLS", "NEXT_POLL"]
    by_feed = {line.split()[5]: line.split() for line in lines}
    assert by_feed[dead][0] == "failing" and by_feed[dead][1] == "never"
    assert by_feed[good][1].endswith("Z"), "times are ISO 8601 in UTC"
    assert "Connect" in plain.stdout or "connect" in plain.stdout, "the last error is shown"
    assert by_feed[good][0] == "ok" and by_feed[good][2] == "4"
    assert "\x1b[" not in plain.stdout, "no colour codes when not on a terminal"

    rows = [orjson.loads(line) for line in _status(config, "--format", "json").stdout.splitlines()]
    assert {row["url"]: row["health"] for row in rows} == {dead: "failing", good: "ok"}

    table = _status(config, "--format", "table")
    assert "news-monitor feeds" in table.stdout and "failing" in table.stdout


def test_status_without_state_is_one_clear_error(tmp_path):
    result = _status(_config(tmp_path, ["https://example.org/feed.xml"]))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "no state store" in result.stderr
    assert "Traceback" not in result.stderr
