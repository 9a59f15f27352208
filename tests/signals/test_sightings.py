"""Sighting records (schemas/sighting-v1.json): what a matcher queues for ``news-monitor
signals`` is exactly what the daemon's detectors count (``matches_of``), and a reader
turns them back into the same sightings or says why a record is not one."""

from __future__ import annotations

import orjson
import pytest

from monitor.adapters.store import Store
from monitor.dedupe import Candidate, Verdict, admit
from monitor.delivery.records import alert_record, build_alert, sighting_id_for, sighting_problem, sighting_record
from monitor.model import Article, Burst, Match, Record, Rule, SignalArticle
from monitor.signals import Signals
from monitor.signals.feed import RuleBook, matches_of, sightings_of, signal_article
from tests.support import ROOT, validate_sighting

SUMMIT = Rule(id="summit", query="summit", topic="alerts.summit", severity="high", tags=("geo",))
SANCTIONS = Rule(id="sanctions", query="sanctions", topic="alerts.sanctions")
TRIAL = Rule(id="trial", query="summit", topic="alerts.trial", mode="shadow")
DETECTED = 1_764_835_200.0  # 2025-12-04T08:00:00Z


def _article(n: int, body: str = "summit", **kwargs) -> Article:
    base = dict(id=f"urn:{n}", feed_url=f"https://feeds.outlet{n}.com/rss", title=f"t{n}", body=body, url=f"https://www.outlet{n}.com/{n}")
    base.update(kwargs)
    return Article(**base)


def _maker(topic: str = "news.sightings"):
    def make(candidate: Candidate, counted, stored_id: str) -> Record:
        seen = signal_article(candidate.article, candidate.story_id)
        return sighting_record(seen, [m.rule for m in counted], DETECTED, topic, feed_url=candidate.article.feed_url, record_article=stored_id)

    return make


def _admit(store: Store, candidates: list[Candidate]):
    return admit(store, candidates, lambda m, a: build_alert(m, a, ruleset_version="v1"), alert_record, None, _maker())


def test_the_sightings_queued_with_a_batch_are_what_the_daemon_counts(tmp_path):
    store = Store(tmp_path)
    # The story's first article alerts; its copy (another outlet) alerts for no rule again.
    first = _admit(store, [Candidate(_article(1), [Match(SUMMIT, ()), Match(TRIAL, ())], story_id="s1")])
    assert [a.rule_id for a in first.alerts] == ["summit", "trial"] and first.sightings == 1
    batch = [
        Candidate(_article(2), [Match(SUMMIT, ()), Match(TRIAL, ())], story_id="s1", story_copy=True),  # a copy: no alert
        Candidate(_article(1, body="summit sanctions"), [Match(SUMMIT, ()), Match(SANCTIONS, ())]),  # edited: sanctions is new
        Candidate(_article(3, body="nothing"), []),  # new, matched no rule
    ]
    second = _admit(store, batch)
    again = _admit(store, [Candidate(_article(2), [Match(SUMMIT, ())], story_id="s1", story_copy=True)])  # a duplicate
    assert second.verdicts == [Verdict.NEW, Verdict.UPDATED, Verdict.NEW] and again.verdicts == [Verdict.DUPLICATE]
    assert [a.rule_id for a in second.alerts] == ["sanctions"] and second.sightings == 2 and again.sightings == 0

    daemon = matches_of(batch, second.verdicts, second.alerts)
    sightings = [orjson.loads(r.value) for r in second.records if r.topic == "news.sightings"]
    for document in sightings:
        validate_sighting(document)
    assert [(d["article"]["id"], [r["id"] for r in d["rules"]]) for d in sightings] == [
        (article.id, [rule.id for rule in rules]) for article, rules in daemon
    ] == [("urn:2", ["summit", "trial"]), ("urn:1", ["sanctions"])]
    # In the article's transaction: its row waits for the sighting's ack like an alert's.
    sighting = next(r for r in second.records if r.topic == "news.sightings" and r.article_id == "urn:2")
    assert store.find_article("urn:2", None).state == "pending"
    store.ack(sighting.alert_id, sighting.topic, sighting.article_id)
    assert store.find_article("urn:2", None).state == "published"


def test_a_sighting_record_is_the_contract_and_reads_back_as_the_daemon_would_count_it():
    seen = SignalArticle("urn:bbc:1", "https://www.bbc.co.uk/news/1", "Summit", "bbc.co.uk", DETECTED - 60, "story-1")
    record = sighting_record(seen, [SUMMIT, TRIAL], DETECTED, "news.sightings", feed_url="https://u:p@feeds.bbc.co.uk/rss", record_article="urn:bbc:1")
    document = orjson.loads(record.value)
    validate_sighting(document)
    headers = dict(record.headers)
    assert record.key == b"urn:bbc:1" and record.topic == "news.sightings"
    assert headers["ce_type"] == b"news.sighting.v1" and headers["ce_subject"] == b"urn:bbc:1"
    assert headers["ce_id"].decode() == document["sighting_id"] == record.alert_id == sighting_id_for("urn:bbc:1", ["trial", "summit"])
    assert b"u:p" not in headers["ce_source"], "the feed's credentials never leave the process"
    assert document["detected_at"] == "2025-12-04T08:00:00Z" and document["article"]["published"] == "2025-12-04T07:59:00Z"
    assert document["rules"][0] == {"id": "summit", "topic": "alerts.summit", "severity": "high", "tags": ["geo"], "mode": "live"}

    summit = Rule(id="summit", query="summit", topic="alerts.summit", burst=Burst(min_outlets=2))
    book = RuleBook([summit])
    assert sighting_problem(document) is None
    sightings = sightings_of(document, book)
    assert [(s.rule.id, s.rule.output_topic, s.rule.burst is not None) for s in sightings] == [
        ("summit", "alerts.summit", True), ("trial", "alerts.trial.shadow", False),
    ]
    assert sightings[0].article is sightings[1].article and sightings[0].article == seen and sightings[0].detected == DETECTED
    # Read again (a record published twice): the window already holds it.
    signals = Signals(levels=(2,))
    signals.watch([summit], DETECTED)
    assert signals.observe(sightings, DETECTED) == [] and signals.observe(sightings_of(document, book), DETECTED) == []
    assert len(signals.bursts["summit"].entries) == 1


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ([1, 2], "an array, not a sighting object"),
        ({"schema_version": 2}, "schema_version 2 is not a sighting version"),
        ({"schema_version": 1, "sighting_id": "x", "article": {}, "rules": [], "detected_at": "2025-12-04T08:00:00Z"}, "no article.id"),
        ("alert", "a string, not a sighting object"),
    ],
)
def test_what_is_not_a_sighting_says_why(value, reason):
    assert reason in (sighting_problem(value) or "")


def test_a_sighting_with_no_rule_a_bad_mode_or_an_unreadable_time_is_refused():
    seen = SignalArticle("urn:1", None, "t", None, None, None)
    good = orjson.loads(sighting_record(seen, [SUMMIT], DETECTED, "s", feed_url="/tmp/feed.xml", record_article="urn:1").value)
    assert sighting_problem(good) is None
    assert sighting_problem({**good, "rules": []}) == "rules is empty"
    assert sighting_problem({**good, "rules": [{**good["rules"][0], "mode": "loud"}]}) == "rules[0].mode is 'loud', not live or shadow"
    assert sighting_problem({**good, "detected_at": "yesterday"}) == "detected_at 'yesterday' is not a date-time"
    assert sighting_problem({**good, "article": {**good["article"], "id": ""}}) == "article.id is empty"
    rule = good["rules"][0]
    assert sighting_problem({**good, "rules": [{**rule, "topic": "alerts/../x"}]}).startswith("rules[0].topic 'alerts/../x' is not a Kafka topic")
    assert sighting_problem({**good, "rules": [{**rule, "severity": "loud"}]}).startswith("rules[0].severity is 'loud', not one of info")
    # What the schema refuses, the reader refuses: a signal would carry it on.
    assert sighting_problem({**good, "sighting_id": "X" * 32}) == f"sighting_id {'X' * 32!r} is not 32 lower-case hex digits"
    assert sighting_problem({**good, "article": {**good["article"], "url": "javascript:alert(1)"}}) == "article.url is not an http(s) link"
    assert sighting_problem({**good, "rules": [{**rule, "tags": ["geo", 7]}]}) == "rules[0].tags has an item that is not a string"


def test_a_rule_its_files_disable_raises_no_burst_from_sightings():
    disabled = Rule(id="summit", query="summit", topic="alerts.summit", enabled=False, burst=Burst(min_outlets=2))
    book = RuleBook([disabled])
    assert book.get("summit") is None
    sighted = book.sighted("summit", "alerts.summit", "medium", (), "live")
    assert sighted.burst is None and sighted.spike is None


def test_the_documented_sighting_is_one():
    text = (ROOT / "docs" / "signals.md").read_text()
    example = text.split("<!-- sighting-example -->\n```json\n", 1)[1].split("```", 1)[0]
    document = orjson.loads(example)
    validate_sighting(document)
    assert sighting_problem(document) is None
    assert document["sighting_id"] == sighting_id_for(document["article"]["id"], [rule["id"] for rule in document["rules"]])


def test_a_sightings_topic_that_is_a_rules_topic_is_refused():
    from monitor.app.signals import check_sightings_topic
    from monitor.errors import ConfigError

    for topic in ("alerts.summit", "alerts.summit.signals", "alerts.trial.shadow", "alerts.trial.shadow.signals"):
        with pytest.raises(ConfigError, match="is a topic of rule"):
            check_sightings_topic(topic, [SUMMIT, TRIAL])
    check_sightings_topic("news.sightings", [SUMMIT, TRIAL])
    check_sightings_topic("", [SUMMIT, TRIAL])


def test_a_record_detected_in_the_readers_future_is_skipped_not_counted():
    # One sighting dated 9999 moved the rule's burst window there: no burst of it for ever.
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from structlog.testing import capture_logs

    from monitor.app.signals import sightings_from_records, sightings_in

    rule = Rule(id="summit", query="summit", topic="alerts.summit", burst=Burst(min_outlets=3, window=1800.0, cooldown=3600.0))
    book = RuleBook([rule])

    def records(detected: list[float], make) -> list[SimpleNamespace]:
        return [SimpleNamespace(value=make(i, t).value, topic="t", partition=0, offset=i) for i, t in enumerate(detected)]

    def sighting(i: int, t: float) -> Record:
        seen = SignalArticle(f"urn:{i}", f"https://www.outlet{i}.com/{i}", "Summit", f"outlet{i}.com", None, None)
        return sighting_record(seen, [rule], t, "news.sightings", feed_url="https://feeds.example.org/rss", record_article=seen.id)

    def alert(i: int, t: float) -> Record:
        at = datetime.fromtimestamp(t, UTC)
        return alert_record(build_alert(Match(rule, ()), _article(i), ruleset_version="v1", detected_at=at))

    times = [253_402_000_000.0, DETECTED + 480, DETECTED, DETECTED + 60, DETECTED + 120]  # 9999, 6 min ahead, three outlets
    for read, make in ((sightings_from_records, sighting), (sightings_in, alert)):
        signals = Signals(levels=())
        signals.watch([rule], DETECTED)
        with capture_logs() as logs:
            found = read(records(times, make), book, DETECTED + 120)
        assert [s.detected for s in found] == times[2:]
        reasons = [e["reason"] for e in logs if e["event"] == "signals.record.skipped"]
        assert len(reasons) == 2 and all("after this process's clock" in r for r in reasons)
        assert [s.kind for s in signals.observe(found, DETECTED + 120)] == ["burst"]


def test_a_record_detected_a_year_before_it_was_written_is_skipped_not_counted():
    # A sighting "detected" in 1970 made a spike take its week's baseline as watched since
    # then: five articles in the rule's first hour were a spike of a rule watched for minutes.
    from types import SimpleNamespace

    from structlog.testing import capture_logs

    from monitor.app.signals import sightings_from_records
    from monitor.model import Spike

    rule = Rule(id="quake", query="quake", topic="alerts.quake", spike=Spike(window=3600.0, baseline=7 * 86400.0, factor=3.0, min_count=5))
    book = RuleBook([rule])
    written_ms = int((DETECTED + 600) * 1000)

    def record(i: int, t: float) -> SimpleNamespace:
        seen = SignalArticle(f"urn:{i}", f"https://www.outlet{i}.com/{i}", "Quake", f"outlet{i}.com", None, None)
        value = sighting_record(seen, [rule], t, "news.sightings", feed_url="https://feeds.example.org/rss", record_article=seen.id).value
        return SimpleNamespace(value=value, topic="t", partition=0, offset=i, timestamp=written_ms)

    times = [0.0, DETECTED - 366 * 86400.0 - 60] + [DETECTED + 60 * i for i in range(1, 6)]  # 1970, a year and a minute, five
    signals = Signals(levels=())
    signals.watch([rule], DETECTED)
    with capture_logs() as logs:
        found = sightings_from_records([record(i, t) for i, t in enumerate(times)], book, DETECTED + 600)
    assert [s.detected for s in found] == times[2:]
    reasons = [e["reason"] for e in logs if e["event"] == "signals.record.skipped"]
    assert len(reasons) == 2 and all("more than 366 days before its record was written" in r for r in reasons)
    assert signals.observe(found, DETECTED + 600) == []
    # A year to the day before is still a replay's to count (the longest baseline).
    kept = sightings_from_records([record(9, DETECTED + 600 - 366 * 86400.0)], book, DETECTED + 600)
    assert len(kept) == 1
