"""The alert contract: schemas/alert-v1.json, the documented example, and the record headers."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import orjson
import pytest

from monitor.delivery.records import alert_record, alert_to_dict
from monitor.model import Alert, Hit, alert_id_for
from tests.support import ROOT, validate_alert, validate_article

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
        published=datetime(2025, 8, 14, 16, 30, tzinfo=UTC),
        feed_url="https://example.net/feed.xml",
        matches=(Hit("sanctions", "title", 10, 19, "sanctions"),),
        snippet="EU adopts sanctions on Russia",
        detected_at=datetime(2026, 11, 25, 8, 0, 1, 250000, tzinfo=UTC),
        ruleset_version="4340cc02a2c138d1",
    )
    values.update(changes)
    return Alert(**values)


def test_built_alert_matches_schema():
    validate_alert(alert_to_dict(_alert()))
    validate_alert(alert_to_dict(_alert(url=None, published=None, mode="shadow", topic="alerts.sanctions.shadow")))


@pytest.mark.parametrize("doc", [DOC, ROOT / "README.md"], ids=["delivery.md", "README"])
def test_documented_example_matches_schema_and_serialiser(doc):
    text = doc.read_text(encoding="utf-8")
    example = re.search(r"(?:<!-- alert-example -->\s*|## Alerts on Kafka.*?)```json\n(.*?)```", text, re.S)
    assert example, f"{doc.name} must hold the alert example"
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


@pytest.mark.parametrize(
    "breakage",
    [
        lambda a: a.update(matches=a["matches"] * 101),
        lambda a: a["matches"][0].update(text="x" * 201),
        lambda a: a.update(snippet="s" * 401),
        lambda a: a.update(match_counts={f"term{n}": 1 for n in range(1001)}),
        lambda a: a.update(detected_at="2026-11-25T08:00:01+00:00"),
        lambda a: a["article"].update(published="2025-08-14T18:30:00+02:00"),
    ],
)
def test_the_schema_itself_refuses_what_docs_delivery_md_rules_out(breakage):
    # Outside consumers validate against the schema alone: the bounds on the evidence and
    # the UTC "Z" are in it (they were only in docs/delivery.md and this suite's helper).
    from jsonschema import Draft202012Validator

    schema = Draft202012Validator(orjson.loads((ROOT / "schemas" / "alert-v1.json").read_bytes()))
    alert = alert_to_dict(_alert())
    assert not list(schema.iter_errors(alert))
    breakage(alert)
    assert list(schema.iter_errors(alert))


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
    from monitor.delivery.records import article_record, build_alert
    from monitor.model import Article, Match, Rule

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


def test_evidence_is_bounded_with_counts_of_every_term():
    """20,000 hits of one term and 3 of another (a 147 KB article): the alert lists each
    term's first hits, counts all of them, and stays small."""
    many = tuple(Hit("sanctions", "body", 7 * n, 7 * n + 9, "sanctions") for n in range(20_000))
    few = (Hit("russia", "title", 27, 33, "Russia"), Hit("russia", "body", 50, 56, "Russia"), Hit("russia", "summary", 3, 9, "Russia"))
    long_text = (Hit('"a long phrase"', "body", 0, 5000, "x" * 5000),)
    alert = alert_to_dict(_alert(matches=many + few + long_text, snippet="s" * 10))
    validate_alert(alert)
    assert len(orjson.dumps(alert)) < 3000
    assert alert["match_counts"] == {"sanctions": 20_000, "russia": 3, '"a long phrase"': 1}
    assert alert["matches_truncated"] is True
    listed = [(m["term"], m["field"], m["start"]) for m in alert["matches"]]
    assert listed[:10] == [("sanctions", "body", 7 * n) for n in range(10)]
    # Every hit of the other terms is kept, in the engine's order, each text at most 200 characters.
    assert listed[10:13] == [("russia", "title", 27), ("russia", "body", 50), ("russia", "summary", 3)]
    assert len(alert["matches"][13]["text"]) == 200 and alert["matches"][13]["end"] == 5000


def test_evidence_lists_first_hits_of_many_terms_before_any_second_hit():
    hits = tuple(Hit(f"term{t}", "body", 1000 * t + n, 1000 * t + n + 1, "w") for t in range(150) for n in range(3))
    alert = alert_to_dict(_alert(matches=hits))
    validate_alert(alert)
    assert len(alert["matches"]) == 100
    assert {m["term"] for m in alert["matches"]} == {f"term{t}" for t in range(100)}
    assert len(alert["match_counts"]) == 150 and alert["matches_truncated"] is True


def test_small_evidence_is_listed_whole():
    alert = alert_to_dict(_alert())
    assert alert["matches"] == [{"term": "sanctions", "field": "title", "start": 10, "end": 19, "text": "sanctions"}]
    assert alert["match_counts"] == {"sanctions": 1} and alert["matches_truncated"] is False


def test_an_article_document_reads_back_as_the_article_and_garbage_is_refused():
    from datetime import UTC, datetime

    import pytest

    from monitor.delivery.records import ArticleDocumentError, article_from_dict, article_to_dict
    from monitor.model import Article

    article = Article(
        id="urn:a1", feed_url="https://example.org/feed.xml", title="Summit", summary="Leaders meet", body="Text",
        url="https://example.org/a1", published=datetime(2026, 12, 4, 8, 0, tzinfo=UTC), guid="a1",
    )
    document = article_to_dict(article, datetime(2026, 12, 4, 9, 0, tzinfo=UTC))
    assert article_from_dict(document) == article
    assert article_from_dict({**document, "lang": "en"}).lang == "en"
    for broken, reason in [
        ([1], "not an object"),
        ({**document, "schema_version": 2}, "schema_version"),
        ({**document, "title": None}, "title must be a string"),
        ({**document, "url": 5}, "url must be a string or null"),
        ({**document, "published": "yesterday"}, "not an ISO 8601 time"),
        # UTC cannot hold them: matching raised OverflowError, the matcher ended at every restart.
        ({**document, "published": "9999-12-31T23:59:59-14:00"}, "outside the years 1 to 9999 in UTC"),
        ({**document, "published": "0001-01-01T00:00:00+14:00"}, "outside the years 1 to 9999 in UTC"),
        ({**document, "body": "edited"}, "content_hash does not match"),
        ({**document, "id": ""}, "id is empty"),
        ({**document, "lang": 3}, "lang must be a string or null"),
    ]:
        with pytest.raises(ArticleDocumentError, match=reason):
            article_from_dict(broken)


def test_article_documents_match_the_article_schema_and_breakages_do_not():
    from monitor.delivery.records import article_record, article_to_dict
    from monitor.model import Article

    article = Article(
        id="urn:a1", feed_url="https://user:pw@example.org/feed.xml", title="Summit", summary="Leaders meet", body="Text",
        url="https://example.org/a1", published=datetime(2026, 12, 4, 8, 0, tzinfo=UTC), guid="a1",
    )
    observed = datetime(2026, 12, 4, 9, 0, 0, 250000, tzinfo=UTC)
    document = article_to_dict(article, observed)
    validate_article(document)
    validate_article(article_to_dict(Article(id="urn:a2", feed_url="/srv/feed.xml"), observed))
    validate_article(orjson.loads(article_record(article, "news.articles", observed).value))
    assert document["feed_url"] == "https://***@example.org/feed.xml"
    for breakage in (
        lambda d: d.pop("content_hash"),
        lambda d: d.update(schema_version=2),
        lambda d: d.update(id=""),
        lambda d: d.update(url="javascript:alert(1)"),
        lambda d: d.update(content_hash="xyz"),
        lambda d: d.update(extra=1),
    ):
        broken = dict(document)
        breakage(broken)
        with pytest.raises(AssertionError, match=r"does not match article-v1\.json"):
            validate_article(broken)


def test_the_articles_language_is_in_the_alert_and_the_article_document():
    """``article.lang`` (added within schema_version 1): the article's ISO 639-1 code or
    null; an alert of an earlier release, without it, is still a valid alert."""
    from monitor.delivery.records import article_to_dict, build_alert
    from monitor.model import Article, Match, Rule

    article = Article(id="urn:x:2", feed_url="https://example.net/feed.xml", title="Sommet à Paris", lang="fr")
    alert = build_alert(Match(Rule(id="summit", query="sommet", topic="alerts.summit"), (Hit("sommet", "title", 0, 6, "Sommet"),)), article, ruleset_version="v")
    document = alert_to_dict(alert)
    assert document["article"]["lang"] == "fr"
    validate_alert(document)
    validate_alert(alert_to_dict(_alert()))  # lang null
    del document["article"]["lang"]
    validate_alert(document)
    assert article_to_dict(article, datetime(2026, 1, 1, tzinfo=UTC))["lang"] == "fr"
    validate_article(article_to_dict(article, datetime(2026, 1, 1, tzinfo=UTC)))
