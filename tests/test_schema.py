"""The alert contract: schemas/alert-v1.json, the documented example, and the record headers."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import orjson
import pytest

from monitor.model import Alert, Hit, alert_id_for
from monitor.publish import alert_record, alert_to_dict
from tests.support import ROOT, validate_alert

DOC = ROOT / "docs" / "delivery.md"


def _alert(**changes) -> Alert:
    values = dict(
        alert_id=alert_id_for("sanctions", "urn:x:1"),
        rule_id="sanctions",
        topic="alerts.sanctions",
        severity="medium",
        tags=("economy",),
        article_id="urn:x:1",
        url="https://example.net/a/1",
        title="EU adopts sanctions on Russia",
        published=datetime(2025, 8, 14, 16, 30, tzinfo=timezone.utc),
        feed_url="https://example.net/feed.xml",
        matches=(Hit("sanctions", "title", 10, 19, "sanctions"),),
        snippet="EU adopts sanctions on Russia",
        detected_at=datetime(2026, 11, 25, 8, 0, 1, 250000, tzinfo=timezone.utc),
        ruleset_version="4340cc02a2c138d1",
    )
    values.update(changes)
    return Alert(**values)


def test_built_alert_matches_schema():
    validate_alert(alert_to_dict(_alert()))
    validate_alert(alert_to_dict(_alert(url=None, published=None, mode="shadow", topic="alerts.sanctions.shadow")))


def test_documented_example_matches_schema_and_serialiser():
    text = DOC.read_text(encoding="utf-8")
    example = re.search(r"<!-- alert-example -->\s*```json\n(.*?)```", text, re.S)
    assert example, "docs/delivery.md must hold the alert example after <!-- alert-example -->"
    documented = orjson.loads(example.group(1))
    validate_alert(documented)
    # Same fields as the serialiser writes: the doc cannot drift from the code.
    assert set(documented) == set(alert_to_dict(_alert()))
    assert set(documented["article"]) == set(alert_to_dict(_alert())["article"])


@pytest.mark.parametrize(
    "breakage",
    [
        lambda a: a.pop("alert_id"),
        lambda a: a.update(severity="urgent"),
        lambda a: a.update(schema_version=2),
        lambda a: a["article"].pop("feed_url"),
        lambda a: a["matches"][0].update(field="url"),
        lambda a: a.update(alert_id="not-hex"),
        lambda a: a.update(surprise=1),
    ],
)
def test_schema_rejects_broken_alerts(breakage):
    alert = alert_to_dict(_alert())
    breakage(alert)
    with pytest.raises(AssertionError):
        validate_alert(alert)


def test_record_is_a_cloudevent_keyed_by_article():
    alert = _alert()
    record = alert_record(alert)
    headers = dict(record.headers)
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_id"] == alert.alert_id.encode()
    assert headers["ce_source"] == b"https://example.net/feed.xml"
    assert headers["ce_type"] == b"news.alert.v1"
    assert headers["ce_time"] == b"2026-11-25T08:00:01.250000Z"
    assert headers["content-type"] == b"application/json"
    assert headers["rule_id"] == b"sanctions"
    assert record.key == b"urn:x:1" and record.topic == "alerts.sanctions"
    assert orjson.loads(record.value) == alert_to_dict(alert)
    assert "dlq_reason" not in headers


def test_feed_location_is_published_as_an_absolute_uri_with_credentials_masked(tmp_path):
    from monitor.model import Article, Match, Rule
    from monitor.publish import article_record, build_alert

    rule = Rule(id="sanctions", query="sanctions", topic="alerts.sanctions")
    path = tmp_path / "feeds" / "world.xml"
    for location, public in [
        (str(path), path.as_uri()),
        ("https://bob:pw@feeds.example/rss?token=t1&edition=eu", "https://***@feeds.example/rss?token=***&edition=eu"),
    ]:
        article = Article(id="urn:x:1", feed_url=location, title="sanctions", url="https://example.net/a/1")
        alert = build_alert(Match(rule, (Hit("sanctions", "title", 0, 9, "sanctions"),)), article, ruleset_version="v")
        record = alert_record(alert)
        document = orjson.loads(record.value)
        validate_alert(document)
        assert document["article"]["feed_url"] == public and dict(record.headers)["ce_source"] == public.encode()
        raw = article_record(article, "news.articles")
        assert orjson.loads(raw.value)["feed_url"] == public and dict(raw.headers)["ce_source"] == public.encode()


@pytest.mark.parametrize("link", ["javascript:alert(1)", "data:text/html,x", "/relative/path"])
def test_schema_refuses_an_article_url_that_is_not_http(link):
    alert = alert_to_dict(_alert())
    alert["article"]["url"] = link
    with pytest.raises(AssertionError):
        validate_alert(alert)
