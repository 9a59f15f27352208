"""The signal contract: schemas/signal-v1.json, CloudEvents headers, deterministic ids; the
alert's new optional ``article.outlet``; notify and tail read signals."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from monitor.delivery.records import alert_to_dict, build_alert, signal_problem, signal_record
from monitor.model import Article, Burst, Match, Rule, SignalArticle, Spike
from monitor.notify.items import decode_item
from monitor.notify.message import Renderer
from monitor.signals import Sighting, Signals
from tests.support import validate_alert, validate_signal

T0 = 1_790_000_000.0
RULE = Rule(id="summit", query="summit", topic="alerts.summit", severity="high", tags=("world",), burst=Burst(), spike=Spike())


def _burst() -> list:
    signals = Signals(levels=())
    got = []
    for i, outlet in enumerate(["bbc.co.uk", "lemonde.fr", "reuters.com"]):
        article = SignalArticle(f"a{i}", f"https://www.{outlet}/{i}", f"Summit news {i}", outlet, T0 + i * 60, "story-x")
        got += signals.observe([Sighting.of(RULE, article, T0 + i * 60)], T0 + 200)
    return got


def test_a_signal_record_matches_the_schema_and_carries_cloudevents_headers() -> None:
    (signal,) = _burst()
    record = signal_record(signal)
    document = orjson.loads(record.value)
    validate_signal(document)
    assert signal_problem(document) is None
    headers = {name: value.decode() for name, value in record.headers}
    assert headers["ce_type"] == "news.signal.burst.v1" and headers["ce_id"] == signal.signal_id == document["signal_id"]
    assert record.topic == "alerts.summit.signals" and record.key == b"summit"
    assert document["window"] == {"start": "2026-09-21T14:13:20Z", "end": "2026-09-21T14:15:20Z"}
    assert document["severity"] == "high" and document["tags"] == ["world"] and document["story_ids"] == ["story-x"]
    # The same sightings again (a replay) give the same id.
    assert _burst()[0].signal_id == signal.signal_id


def test_an_alert_names_its_outlet_and_still_matches_the_schema() -> None:
    article = Article(id="urn:x", feed_url="https://feeds.bbci.co.uk/news/rss.xml", title="Summit", url="https://www.bbc.co.uk/news/1")
    document = alert_to_dict(build_alert(Match(RULE, ()), article, ruleset_version="v", detected_at=datetime.now(UTC)))
    validate_alert(document)
    assert document["article"]["outlet"] == "bbc.co.uk"


def test_notify_renders_a_signal_as_a_sentence() -> None:
    (signal,) = _burst()
    record = signal_record(signal)
    item, problem = decode_item(record.topic, record.value, record.headers)
    assert item is not None, problem
    message = Renderer(markdown=False).signal(item)
    assert message.title == "[high] Breaking: summit — 3 outlets within 2 min"
    assert "Outlets: bbc.co.uk, lemonde.fr, reuters.com" in message.body
    assert "Latest: Summit news 2 (reuters.com) https://www.reuters.com/2" in message.body


def test_tail_prints_signals_and_reports_what_is_neither(capsys) -> None:
    from monitor.cli import _decode, _table_row

    (signal,) = _burst()
    document, problem = _decode(signal_record(signal).value)
    assert document is not None and problem == ""
    assert "burst: 3 articles, 3 outlets: Summit news 2" in _table_row(document)
    broken, problem = _decode(orjson.dumps({"schema_version": 1, "signal_id": "x"}))
    assert broken is None and problem == "no kind"


def test_the_documented_signal_example_matches_the_schema() -> None:
    import re

    from tests.support import ROOT

    text = (ROOT / "docs" / "signals.md").read_text()
    example = re.search(r"<!-- signal-example -->\s*```json\n(.*?)```", text, re.S)
    assert example, "docs/signals.md must hold the signal example after <!-- signal-example -->"
    validate_signal(orjson.loads(example.group(1)))


def test_the_run_summary_counts_acknowledged_alerts_and_signals_by_their_type() -> None:
    from monitor.delivery.sender import Sender
    from monitor.model import Record
    from monitor.observe.summary import RunSummary

    def record(event_type: bytes, topic: str) -> Record:
        return Record(alert_id="i", article_id="a", topic=topic, key=None, value=b"{}", headers=(("ce_type", event_type),))

    sender = Sender(publisher=None, dead_letter_topic="dlq")  # type: ignore[arg-type]
    for event_type, topic in [
        (b"news.alert.v1", "alerts.summit"),
        (b"news.signal.burst.v1", "alerts.summit.signals"),
        (b"news.article.v1", "news.articles"),
        (b"news.sighting.v1", "news.sightings"),
        (b"news.feed-health.v1", "monitor.feed-health"),
    ]:
        sender.published(record(event_type, topic), 0.01)
    summary = RunSummary(delivery=sender.stats)
    assert (summary.published, summary.signals_published, sender.stats.published) == (1, 1, 5)
