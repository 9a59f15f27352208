"""From a rule match to the Kafka record: the alert contract.

An :class:`~monitor.model.Alert` is built from a :class:`~monitor.model.Match` and its
article, serialised as JSON (orjson) and wrapped as a CloudEvents 1.0 record in the
Kafka binary binding: the alert JSON is the value, the event attributes are ``ce_*``
headers, and the key is the article id so all alerts of one article stay in order in
one partition.

The feed location in a record (``article.feed_url``, ``ce_source``) is the feed's public
form (:func:`monitor.redact.public_feed_url`): an absolute URI, a file path as
``file:///...``, with credentials masked; the real URL never leaves the process.

An alert that cannot be serialised (text no JSON encoder accepts, such as lone UTF-16
surrogates) still becomes a record, marked with a ``dlq_reason`` header, so delivery
routes it to the dead-letter topic instead of failing the whole feed's batch.

:func:`article_record` is the optional raw stream (``[kafka] articles_topic``): every
new or changed normalised article, keyed by article id.

Pure: no Kafka client here (see :mod:`monitor.adapters.kafka`). The message contract is
``schemas/alert-v1.json`` and ``docs/delivery.md``.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from typing import Any, Callable

import orjson

from monitor.model import Alert, Article, Match, Record, alert_id_for
from monitor.redact import public_feed_url

__all__ = [
    "ALERT_SCHEMA_VERSION",
    "ARTICLE_CLOUDEVENT_TYPE",
    "CLOUDEVENT_TYPE",
    "DLQ_ORIGINAL_TOPIC_HEADER",
    "DLQ_REASON_HEADER",
    "alert_record",
    "alert_to_dict",
    "article_record",
    "article_record_id",
    "article_to_dict",
    "build_alert",
    "rejection_reason",
    "snippet_around",
]

ALERT_SCHEMA_VERSION = 1
CLOUDEVENT_TYPE = "news.alert.v1"
ARTICLE_CLOUDEVENT_TYPE = "news.article.v1"
#: Header naming why a record went to the dead-letter topic.
DLQ_REASON_HEADER = "dlq_reason"
#: Header naming the topic a dead-lettered record was meant for.
DLQ_ORIGINAL_TOPIC_HEADER = "dlq_original_topic"
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
        feed_url=public_feed_url(article.feed_url),
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
    """The Kafka record of an alert: JSON value, article-id key, CloudEvents headers.

    Never raises for the alert's content: an alert that cannot be serialised comes back
    marked for the dead-letter topic (see :func:`rejection_reason`).
    """
    attributes = (
        ("ce_specversion", "1.0"),
        ("ce_id", alert.alert_id),
        ("ce_source", alert.feed_url),
        ("ce_type", CLOUDEVENT_TYPE),
        ("ce_time", _iso(alert.detected_at) or ""),
        ("ce_subject", alert.article_id),
        ("content-type", "application/json"),
        ("rule_id", alert.rule_id),
    )
    return _record(alert.alert_id, alert.article_id, alert.topic, lambda: alert_to_dict(alert), attributes)


def article_record_id(article: Article) -> str:
    """The outbox id of an article record: one per article and text version."""
    digest = hashlib.blake2b(f"article\x1f{article.id}\x1f{article.content_hash}".encode("utf-8", "surrogatepass"), digest_size=16)
    return digest.hexdigest()


def article_to_dict(article: Article, observed_at: datetime) -> dict[str, Any]:
    """The JSON document of a normalised article on the articles topic."""
    return {
        "schema_version": 1,
        "id": article.id,
        "feed_url": public_feed_url(article.feed_url),
        "url": article.url,
        "guid": article.guid,
        "title": article.title,
        "summary": article.summary,
        "body": article.body,
        "published": _iso(article.published),
        "content_hash": article.content_hash,
        "fulltext_field": article.fulltext_field,
        "observed_at": _iso(observed_at),
    }


def article_record(article: Article, topic: str, observed_at: datetime | None = None) -> Record:
    """The Kafka record of a normalised article for ``[kafka] articles_topic``, keyed by article id."""
    observed_at = observed_at or datetime.now(timezone.utc)
    record_id = article_record_id(article)
    attributes = (
        ("ce_specversion", "1.0"),
        ("ce_id", record_id),
        ("ce_source", public_feed_url(article.feed_url)),
        ("ce_type", ARTICLE_CLOUDEVENT_TYPE),
        ("ce_time", _iso(observed_at) or ""),
        ("ce_subject", article.id),
        ("content-type", "application/json"),
    )
    return _record(record_id, article.id, topic, lambda: article_to_dict(article, observed_at), attributes)


def _record(
    record_id: str,
    article_id: str,
    topic: str,
    document: Callable[[], dict[str, Any]],
    attributes: tuple[tuple[str, str], ...],
) -> Record:
    try:
        value = orjson.dumps(document())
        key = article_id.encode("utf-8")
        headers = tuple((name, text.encode("utf-8")) for name, text in attributes)
    except (TypeError, ValueError) as exc:
        # orjson.JSONEncodeError is a TypeError, UnicodeEncodeError a ValueError: both mean
        # the content (lone surrogates, typically) cannot be valid UTF-8 JSON. Keep an
        # escaped copy as evidence and let delivery send it to the dead-letter topic.
        reason = f"cannot serialise record for {topic}: {type(exc).__name__}: {exc}"
        return Record(
            alert_id=record_id,
            article_id=article_id,
            topic=topic,
            key=article_id.encode("utf-8", "backslashreplace"),
            value=json.dumps(document(), ensure_ascii=True, default=str).encode("ascii"),
            headers=(
                *((name, text.encode("utf-8", "backslashreplace")) for name, text in attributes),
                (DLQ_REASON_HEADER, reason.encode("utf-8", "backslashreplace")),
            ),
        )
    return Record(alert_id=record_id, article_id=article_id, topic=topic, key=key, value=value, headers=headers)


def rejection_reason(record: Record) -> str | None:
    """Why a record must go to the dead-letter topic unsent, or None when it can be sent."""
    for name, value in record.headers:
        if name == DLQ_REASON_HEADER:
            return value.decode("utf-8", "replace")
    return None
