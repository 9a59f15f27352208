"""``news-monitor status``: the feed-health table from the state store, as operators run it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from monitor.adapters.broker import free_port
from monitor.adapters.store import Store
from monitor.feeds.state import FeedState, feed_row
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


def _store_with_feeds(tmp_path: Path, ok: int, failing: int) -> Path:
    """A state store as a daemon leaves it, with ``ok`` healthy and ``failing`` failing feeds."""
    now = time.time()
    states = [FeedState(f"https://ok.example/{i:04d}.xml", polls=9, items_seen=5, last_poll=now, last_success=now,
                        last_new_item=now - i) for i in range(ok)]
    states += [FeedState(f"https://down.example/{i:02d}.xml", polls=9, consecutive_errors=5, last_poll=now,
                         last_error=f"https://down.example/{i:02d}.xml: HTTP 503", last_error_at=now, health="failing")
               for i in range(failing)]
    store = Store(tmp_path / "state")
    store.save_feed_rows([feed_row(state) for state in states])
    store.close()
    return _config(tmp_path, [])


def test_status_shows_a_summary_then_a_bounded_table_worst_first(tmp_path):
    config = _store_with_feeds(tmp_path, ok=240, failing=10)

    plain = _status(config)
    assert plain.returncode == 1
    header, *lines = plain.stdout.splitlines()
    assert header.startswith("HEALTH") and len(lines) == 200
    assert [line.split()[0] for line in lines[:11]] == ["failing"] * 10 + ["ok"], "problems first"
    assert lines[10].split()[5] == "https://ok.example/0000.xml", "then the most recent new item"
    assert plain.stderr == (
        "250 feeds: 240 ok, 10 failing; showing the first 200 (not ok first, then the most recent new item):"
        " --all or --limit N for more\n"
    )

    limited = _status(config, "--limit", "12")
    assert len(limited.stdout.splitlines()) == 13 and "showing the first 12" in limited.stderr

    every = _status(config, "--all", "--format", "json")
    rows = [orjson.loads(line) for line in every.stdout.splitlines()]
    assert len(rows) == 250 and len({row["url"] for row in rows}) == 250
    assert every.stderr == "250 feeds: 240 ok, 10 failing\n" and every.returncode == 1

    table = _status(config, "--format", "table", "--limit", "5")
    words = " ".join(table.stdout.split())
    assert words.startswith("250 feeds: 240 ok, 10 failing; showing the first 5") and table.stderr == ""
    assert "news-monitor feeds" in words and table.stdout.count("│ failing ") == 5

    for bad in (["--limit", "0"], ["--limit", "x"], ["--all", "--limit", "5"]):
        result = _status(config, *bad)
        assert result.returncode == 2 and "Traceback" not in result.stderr, bad


def test_status_of_healthy_feeds_exits_0_with_its_summary(tmp_path):
    result = _status(_store_with_feeds(tmp_path, ok=3, failing=0))
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 4
    assert result.stderr == "3 feeds: 3 ok\n"


def test_status_shows_each_feeds_push_state_when_subscriptions_are_stored(tmp_path):
    from monitor.websub import Subscription

    config = _store_with_feeds(tmp_path, ok=2, failing=0)
    plain_before = _status(config).stdout.splitlines()[0]
    assert "PUSH" not in plain_before, "no push columns without WebSub"
    until = time.time() + 86400
    store = Store(tmp_path / "state")
    store.save_subscription(Subscription("https://ok.example/0000.xml", "https://hub.example/", "https://ok.example/0000.xml",
                                         "tok", "secret", "https://m.example/websub/tok", state="active", expires_at=until,
                                         last_push_at=time.time() - 60, pushes=3).row())
    store.close()
    plain = _status(config)
    header, *lines = plain.stdout.splitlines()
    assert header.split() == ["HEALTH", "LAST_SUCCESS", "ITEMS", "POLLS", "NEXT_POLL", "FEED", "PUSH", "PUSH_UNTIL", "LAST_PUSH",
                              "LAST_ERROR"]
    by_url = {line.split()[5]: line.split()[6:9] for line in lines}
    assert by_url["https://ok.example/0000.xml"][0] == "active" and by_url["https://ok.example/0000.xml"][1].startswith("20")
    assert by_url["https://ok.example/0001.xml"] == ["none", "-", "never"]
    rows = {row["url"]: row for row in map(orjson.loads, _status(config, "--format", "json").stdout.splitlines())}
    assert rows["https://ok.example/0000.xml"]["push"] == "active" and rows["https://ok.example/0000.xml"]["push_until"] == until
    assert "secret" not in plain.stdout and "tok" not in plain.stdout, "neither the secret nor the callback token is shown"
