"""``news-monitor tail`` as an operator runs it, against the real broker."""

from __future__ import annotations

import asyncio
import sys
import uuid

import orjson
import pytest

from monitor.worker import Monitor
from tests.support import SEEDS, FeedServer, make_settings, read_alerts, read_topic

pytestmark = pytest.mark.integration


async def _tail(bootstrap: str, *args: str) -> list[str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor", "tail", "--bootstrap-servers", bootstrap, *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, stderr.decode()
    return stdout.decode().splitlines()


async def test_tail_prints_json_lines_table_and_respects_since_and_max(broker, feed_server: FeedServer, tmp_path):
    url = feed_server.serve(f"/tail-{uuid.uuid4().hex[:6]}.rss", (SEEDS / "world-news.rss.xml").read_bytes())
    await Monitor(make_settings(tmp_path, broker.bootstrap_servers, [url])).run(once=True, handle_signals=False)
    ours = await read_alerts(broker.bootstrap_servers, [url], ["alerts.summit"], expect=1)
    assert ours

    lines = await _tail(broker.bootstrap_servers, "alerts.summit", "--from-beginning", "--max", "1", "--timeout", "3")
    assert len(lines) == 1
    assert orjson.loads(lines[0])["topic"] == "alerts.summit"

    table = await _tail(broker.bootstrap_servers, "alerts.summit", "--from-beginning", "--format", "table", "--timeout", "1.5")
    assert table[0].split() == ["detected", "rule", "severity", "title"]
    assert any("summit" in row and "Trump and Putin" in row for row in table[1:])

    later = await _tail(broker.bootstrap_servers, "alerts.summit", "--since", "2999-01-01T00:00:00Z", "--timeout", "1.5")
    assert later == []


async def test_tail_with_group_continues_where_it_stopped(broker, feed_server: FeedServer, tmp_path):
    url = feed_server.serve(f"/tail-{uuid.uuid4().hex[:6]}.rss", (SEEDS / "world-news.rss.xml").read_bytes())
    await Monitor(make_settings(tmp_path, broker.bootstrap_servers, [url])).run(once=True, handle_signals=False)
    topics = ["alerts.summit", "alerts.sanctions", "alerts.arms-control"]
    assert len(await read_alerts(broker.bootstrap_servers, [url], topics, expect=3)) >= 3
    # Other tests publish the same seed alert ids, so count records, not ids.
    total = sum([len(await read_topic(broker.bootstrap_servers, topic, idle=0.5)) for topic in topics])
    group = f"tail-{uuid.uuid4().hex[:8]}"

    first = await _tail(broker.bootstrap_servers, *topics, "--group", group, "--from-beginning", "--max", "2", "--timeout", "10")
    rest = await _tail(broker.bootstrap_servers, *topics, "--group", group, "--from-beginning", "--timeout", "2")

    assert len(first) == 2
    # Committed offsets: the second run starts right after what the first printed.
    assert len(first) + len(rest) == total
