"""Story signals in the single-process daemon: real feeds on loopback, the real broker, restarts.

Each ``run --once`` is a restart: the detectors' state comes back from the state store.
"""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from monitor.cli import _print_summary
from monitor.worker import Monitor
from tests.support import FeedServer, make_settings, read_topic, validate_signal

pytestmark = pytest.mark.integration

WIRE = (
    "Leaders of the two countries will meet at a summit in Reykjavik next month to discuss "
    "arms control, trade and the war, officials from both governments said on Tuesday."
)


def _rules(tmp_path: Path, word: str, topic: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "rules:\n"
        f"  - id: burst-{word}\n"
        f"    query: {word}\n"
        f"    topic: {topic}\n"
        "    burst: {min_outlets: 3, window: 30m, cooldown: 6h}\n"
        f"  - id: lone-{word}\n"
        f"    query: lone{word}\n"
        f"    topic: {topic}\n"
        "    burst: {min_outlets: 2, window: 30m, cooldown: 6h}\n"
    )
    return path


def _feed(items: list[tuple[str, str, str, str]]) -> bytes:
    """RSS of (guid, link, title, text) items, published now."""
    now = format_datetime(datetime.now(UTC))
    body = "".join(
        f'<item><title>{title}</title><link>{link}</link><guid isPermaLink="false">{guid}</guid>'
        f"<pubDate>{now}</pubDate><description>{text}</description></item>"
        for guid, link, title, text in items
    )
    return f'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>{body}</channel></rss>'.encode()


async def _signals(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    records = await read_topic(bootstrap, f"{topic}.signals", idle=0.5)
    found = [orjson.loads(r.value) for r in records]
    for signal in found:
        validate_signal(signal)
    return found


async def test_three_outlets_burst_once_across_restarts_and_one_outlet_never(broker, feed_server: FeedServer, tmp_path: Path) -> None:
    word = f"zq{uuid.uuid4().hex[:8]}"
    topic = f"alerts.sig-{word}"
    settings = make_settings(tmp_path, broker.bootstrap_servers, [feed_server.url("/a.rss")], rules=[_rules(tmp_path, word, topic)])
    items: list[tuple[str, str, str, str]] = [
        # Ten articles of one outlet: no burst of the lone rule.
        *((f"urn:lone:{i}", f"https://www.bbc.co.uk/news/lone-{i}", f"lone{word} story {i}", f"lone{word} item {i}") for i in range(10)),
        (f"urn:{word}:1", "https://www.bbc.co.uk/news/1", f"{word} one", f"{word} first"),
        (f"urn:{word}:2", "https://www.lemonde.fr/a/2", f"{word} two", f"{word} second"),
    ]
    counted, printed = [], []
    for added in [(), ((f"urn:{word}:3", "https://uk.reuters.com/x/3", f"{word} three", f"{word} third"),),
                  ((f"urn:{word}:4", "https://apnews.com/4", f"{word} four", f"{word} fourth"),)]:  # fmt: skip
        items.extend(added)
        feed_server.serve("/a.rss", _feed(items))
        monitor = Monitor(settings)
        summary = await monitor.run(once=True, handle_signals=False)
        assert not summary.failed and summary.undelivered == 0
        counted.append(f'news_monitor_signals_total{{kind="burst",rule="burst-{word}"}} 1.0' in monitor.observer.metrics.render().decode())
        out = io.StringIO()
        _print_summary(summary, out)
        printed.append(out.getvalue().splitlines())
    # /metrics counts the burst in the run that raised it.
    assert counted == [False, True, False]
    # So does run --once's summary, apart from the alerts.
    assert printed[1][2:] == [
        "alerts:         1 raised, 1 acknowledged by Kafka",
        f"  {topic:<28} 1",
        "signals:        1 raised, 1 acknowledged by Kafka",
        f"  {topic + '.signals':<28} burst 1",
    ]
    assert not [line for line in printed[0] + printed[2] if line.startswith("signals:")]

    # The lone rule's signals would be on the same topic: there are none.
    bursts = await _signals(broker.bootstrap_servers, topic)
    assert [(s["kind"], s["rule_id"]) for s in bursts] == [("burst", f"burst-{word}")]
    burst = bursts[0]
    assert burst["outlets"] == ["bbc.co.uk", "lemonde.fr", "reuters.com"]
    assert burst["counts"] == {"articles": 3, "outlets": 3}
    assert burst["rule_id"] == f"burst-{word}" and burst["topic"] == f"{topic}.signals"
    assert burst["first_article"]["url"] == "https://www.bbc.co.uk/news/1"
    assert burst["latest_article"]["outlet"] == "reuters.com"


async def test_a_story_copied_by_three_then_ten_outlets_escalates_twice(broker, feed_server: FeedServer, tmp_path: Path) -> None:
    word = f"zq{uuid.uuid4().hex[:8]}"
    topic = f"alerts.esc-{word}"
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"rules:\n  - id: story-{word}\n    query: {word}\n    topic: {topic}\n")
    settings = make_settings(tmp_path, broker.bootstrap_servers, [feed_server.url("/wire.rss")], rules=[rules])
    copies = [
        (f"urn:copy:{word}:{i}", f"https://www.outlet{i}.co.uk/world/{word}", f"Summit in Reykjavik {word}", f"{word} {WIRE}")
        for i in range(10)
    ]
    for shown in (3, 10):
        feed_server.serve("/wire.rss", _feed(copies[:shown]))
        summary = await Monitor(settings).run(once=True, handle_signals=False)
        assert not summary.failed and summary.undelivered == 0
    # The story alerted once, as before signals.
    assert len(await read_topic(broker.bootstrap_servers, topic, idle=0.5)) == 1

    escalations = await _signals(broker.bootstrap_servers, topic)
    assert [(s["kind"], s["level"]) for s in escalations] == [("escalation", 3), ("escalation", 10)]
    assert escalations[1]["outlets"] == [f"outlet{i}.co.uk" for i in range(10)]
    assert escalations[0]["story_id"] == escalations[1]["story_id"] is not None
    assert escalations[0]["first_article"]["id"] == escalations[1]["first_article"]["id"] == f"urn:copy:{word}:0"
