"""From a rule match to the Kafka record: the alert contract.

An :class:`~monitor.model.Alert` is built from a :class:`~monitor.model.Match` and its
article, serialised as JSON (orjson) and wrapped as a CloudEvents 1.0 record in the
Kafka binary binding: the alert JSON is the value, the event attributes are ``ce_*``
headers, and the key is the article id so all alerts of one article stay in order in
one partition.

Pure: no Kafka client here (see :mod:`monitor.adapters.kafka`).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import orjson

from monitor.model import Alert, Article, Match, Record, alert_id_for

__all__ = [
    "ALERT_SCHEMA_VERSION",
    "CLOUDEVENT_TYPE",
    "alert_record",
    "alert_to_dict",
    "build_alert",
    "snippet_around",
]

ALERT_SCHEMA_VERSION = 1
CLOUDEVENT_TYPE = "news.alert.v1"
#: Characters of context on each side of the first match in an alert's snippet.
SNIPPET_CONTEXT = 90


def snippet_around(text: str, start: int, end: int, context: int = SNIPPET_CONTEXT) -> str:
    """A short excerpt of ``text`` around ``[start, end)``, cut at word boundaries."""
    left = max(0, start - context)
    right = min(len(text), end + context)
    if left > 0:
        space = text.find(" ", left, start)
        left = space + 1 if space != -1 else left
    if right < len(text):
        space = text.rfind(" ", end, right)
        right = space if space != -1 else right
    excerpt = " ".join(text[left:right].split())
    return f"{'…' if left > 0 else ''}{excerpt}{'…' if right < len(text) else ''}"


def build_alert(
    match: Match,
    article: Article,
    *,
    ruleset_version: str,
    detected_at: datetime | None = None,
    story_id: str | None = None,
) -> Alert:
    """The alert for one rule match on one article."""
    rule = match.rule
    snippet = ""
    if match.hits:
        first = min(match.hits, key=lambda hit: (_field_order(hit.field), hit.start))
        snippet = snippet_around(article.field_text(first.field), first.start, first.end)
    return Alert(
        alert_id=alert_id_for(rule.id, article.id),
        rule_id=rule.id,
        topic=rule.output_topic,
        severity=rule.severity,
        tags=tuple(rule.tags),
        article_id=article.id,
        url=article.url,
        title=article.title,
        published=article.published,
        feed_url=article.feed_url,
        matches=match.hits,
        snippet=snippet,
        detected_at=detected_at or datetime.now(timezone.utc),
        ruleset_version=ruleset_version,
        mode=rule.mode,
        story_id=story_id,
    )


def _field_order(field: str) -> int:
    order = {"title": 0, "summary": 1, "body": 2}
    return order.get(field, 3)


def _iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def alert_to_dict(alert: Alert) -> dict[str, Any]:
    """The JSON document of an alert (schema ``schemas/alert-v1.json``)."""
    return {
        "schema_version": ALERT_SCHEMA_VERSION,
        "alert_id": alert.alert_id,
        "rule_id": alert.rule_id,
        "topic": alert.topic,
        "mode": alert.mode,
        "severity": alert.severity,
        "tags": list(alert.tags),
        "ruleset_version": alert.ruleset_version,
        "article": {
            "id": alert.article_id,
            "url": alert.url,
            "title": alert.title,
            "published": _iso(alert.published),
            "feed_url": alert.feed_url,
        },
        "story_id": alert.story_id,
        "matches": [
            {"term": hit.term, "field": hit.field, "start": hit.start, "end": hit.end, "text": hit.text}
            for hit in alert.matches
        ],
        "snippet": alert.snippet,
        "detected_at": _iso(alert.detected_at),
    }


def alert_record(alert: Alert) -> Record:
    """The Kafka record of an alert: JSON value, article-id key, CloudEvents headers."""
    value = orjson.dumps(alert_to_dict(alert))
    headers = (
        ("ce_specversion", b"1.0"),
        ("ce_id", alert.alert_id.encode()),
        ("ce_source", alert.feed_url.encode("utf-8", "surrogatepass")),
        ("ce_type", CLOUDEVENT_TYPE.encode()),
        ("ce_time", (_iso(alert.detected_at) or "").encode()),
        ("ce_subject", alert.article_id.encode("utf-8", "surrogatepass")),
        ("content-type", b"application/json"),
        ("rule_id", alert.rule_id.encode()),
    )
    return Record(
        alert_id=alert.alert_id,
        article_id=alert.article_id,
        topic=alert.topic,
        key=alert.article_id.encode("utf-8", "surrogatepass"),
        value=value,
        headers=headers,
    )
