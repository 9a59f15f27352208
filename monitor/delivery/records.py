"""From a rule match to the Kafka record: the alert contract.

An :class:`~monitor.model.Alert` is built from a :class:`~monitor.model.Match` and its
article, serialised as JSON (orjson) and wrapped as a CloudEvents 1.0 record in the
Kafka binary binding: the alert JSON is the value, the event attributes are ``ce_*``
headers, and the key is the article id so all alerts of one article stay in order in
one partition.

The feed location in a record (``article.feed_url``, ``ce_source``) is the feed's public
form (:func:`monitor.redact.public_feed_url`): an absolute URI, a file path as
``file:///...``, with credentials masked; the real URL never leaves the process.

The evidence is bounded, so an alert on the longest article still fits one Kafka
request: ``matches`` lists at most :data:`MAX_HITS_PER_TERM` hits of each term and
:data:`MAX_MATCHES` in all, each ``text`` at most :data:`MAX_HIT_TEXT` characters;
``match_counts`` gives every matched term's number of hits as the rule engine reported
them (at most :data:`MAX_COUNTED_TERMS` terms; the engine considers at most the first
``MAX_HITS_PER_TERM`` hits of a term in each field); the snippet is at most :data:`SNIPPET_LIMIT` characters.

An alert that cannot be serialised (text no JSON encoder accepts, such as lone UTF-16
surrogates) still becomes a record, marked with a ``dlq_reason`` header, so delivery
routes it to the dead-letter topic instead of failing the whole feed's batch.

:func:`article_record` is the optional raw stream (``[kafka] articles_topic``): every
new or changed normalised article, keyed by article id.

:func:`sighting_record` is what a matcher tells ``news-monitor signals`` of a new article
that counted for rules (``[signals] sightings_topic``, ``schemas/sighting-v1.json``),
keyed by article id.

Pure: no Kafka client here (see :mod:`monitor.adapters.kafka`). The message contract is
``schemas/alert-v1.json`` and ``docs/delivery.md``.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson

from monitor.engine.loader import SEVERITIES
from monitor.engine.text import SNIPPET_LIMIT
from monitor.engine.text import snippet as text_snippet
from monitor.errors import error_text
from monitor.language import language_tag
from monitor.model import Alert, Article, Hit, Match, Record, Rule, Signal, SignalArticle, alert_id_for
from monitor.redact import public_feed_url
from monitor.signals.outlet import outlet_of
from monitor.timefmt import utc_iso

__all__ = [
    "ALERT_SCHEMA_VERSION",
    "ARTICLE_CLOUDEVENT_TYPE",
    "CLOUDEVENT_TYPE",
    "DLQ_ORIGINAL_TOPIC_HEADER",
    "DLQ_REASON_HEADER",
    "MAX_COUNTED_TERMS",
    "MAX_HITS_PER_TERM",
    "MAX_HIT_TEXT",
    "MAX_MATCHES",
    "SIGHTING_CLOUDEVENT_TYPE",
    "SIGHTING_SCHEMA_VERSION",
    "SIGNAL_SCHEMA_VERSION",
    "SNIPPET_LIMIT",
    "ArticleDocumentError",
    "alert_problem",
    "alert_record",
    "alert_to_dict",
    "article_from_dict",
    "article_record",
    "article_record_id",
    "article_to_dict",
    "build_alert",
    "rejection_reason",
    "sighting_id_for",
    "sighting_problem",
    "sighting_record",
    "sighting_to_dict",
    "signal_problem",
    "signal_record",
    "signal_to_dict",
]

ALERT_SCHEMA_VERSION = 1
SIGNAL_SCHEMA_VERSION = 1
CLOUDEVENT_TYPE = "news.alert.v1"
ARTICLE_CLOUDEVENT_TYPE = "news.article.v1"
SIGHTING_SCHEMA_VERSION = 1
SIGHTING_CLOUDEVENT_TYPE = "news.sighting.v1"
#: Header naming why a record went to the dead-letter topic.
DLQ_REASON_HEADER = "dlq_reason"
#: Header naming the topic a dead-lettered record was meant for.
DLQ_ORIGINAL_TOPIC_HEADER = "dlq_original_topic"
#: Hits of one term listed in an alert's ``matches`` (the first ones in the article).
MAX_HITS_PER_TERM = 10
#: Hits listed in an alert's ``matches`` in all.
MAX_MATCHES = 100
#: Longest ``matches[].text``, in characters.
MAX_HIT_TEXT = 200
#: Terms counted in an alert's ``match_counts``.
MAX_COUNTED_TERMS = 1000


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
        snippet = text_snippet(article.field_text(first.field), first.start, first.end)
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
        outlet=outlet_of(article.url, article.feed_url),
        matches=match.hits,
        snippet=snippet,
        detected_at=detected_at or datetime.now(UTC),
        ruleset_version=ruleset_version,
        mode=rule.mode,
        story_id=story_id,
        lang=article.lang,
    )


def _field_order(field: str) -> int:
    order = {"title": 0, "summary": 1, "body": 2}
    return order.get(field, 3)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else utc_iso(moment, "auto")


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
            "outlet": alert.outlet,
            "lang": alert.lang,
        },
        "story_id": alert.story_id,
        **_evidence(alert.matches),
        "snippet": alert.snippet,
        "detected_at": _iso(alert.detected_at),
    }


_NONE = type(None)
#: The fields of an alert and their JSON types (``schemas/alert-v1.json``), for readers.
_ALERT_FIELDS: dict[str, tuple[type, ...]] = {
    "alert_id": (str,), "rule_id": (str,), "topic": (str,), "mode": (str,), "severity": (str,),
    "tags": (list,), "ruleset_version": (str,), "article": (dict,), "story_id": (str, _NONE),
    "matches": (list,), "snippet": (str,), "detected_at": (str,),
}  # fmt: skip
_ARTICLE_FIELDS: dict[str, tuple[type, ...]] = {
    "id": (str,), "url": (str, _NONE), "title": (str,), "published": (str, _NONE), "feed_url": (str,),
}  # fmt: skip
_MATCH_FIELDS: dict[str, tuple[type, ...]] = {"term": (str,), "field": (str,), "start": (int,), "end": (int,), "text": (str,)}
_JSON_TYPES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "an array", dict: "an object", _NONE: "null"}


def alert_problem(document: Any) -> str | None:
    """Why a decoded record value is not an alert of schema version 1, or None when it is one.

    A structural check for readers (``news-monitor tail``): every required field present
    with its JSON type, in the alert, its article and each match. It does not check
    patterns and enumerations; ``schemas/alert-v1.json`` is the full contract.
    """
    if not isinstance(document, dict):
        return f"{_json_type(document)}, not an alert object"
    if "schema_version" not in document:
        return "no schema_version: not an alert"
    version = document["schema_version"]
    if version != ALERT_SCHEMA_VERSION or isinstance(version, bool):
        return f"schema_version {orjson.dumps(version).decode()} is not supported (this reader knows version {ALERT_SCHEMA_VERSION})"
    problem = _field_problem(document, _ALERT_FIELDS, "")
    if problem is None:
        problem = _field_problem(document["article"], _ARTICLE_FIELDS, "article.")
    if problem is not None:
        return problem  # matches may be anything but a list then
    for index, hit in enumerate(document["matches"]):
        if not isinstance(hit, dict):
            return f"matches[{index}] is {_json_type(hit)}, not an object"
        problem = _field_problem(hit, _MATCH_FIELDS, f"matches[{index}].")
        if problem is not None:
            return problem
    return None


#: The fields of a signal and their JSON types (``schemas/signal-v1.json``), for readers.
_SIGNAL_FIELDS: dict[str, tuple[type, ...]] = {
    "signal_id": (str,), "kind": (str,), "rule_id": (str,), "topic": (str,), "severity": (str,), "tags": (list,),
    "window": (dict,), "counts": (dict,), "outlets": (list,), "first_article": (dict,), "latest_article": (dict,),
    "detected_at": (str,),
}  # fmt: skip


def signal_problem(document: Any) -> str | None:
    """Why a decoded record value is not a signal of schema version 1, or None when it is one
    (a structural check, as :func:`alert_problem`; ``schemas/signal-v1.json`` is the contract)."""
    if not isinstance(document, dict):
        return f"{_json_type(document)}, not a signal object"
    if document.get("schema_version") != SIGNAL_SCHEMA_VERSION or isinstance(document.get("schema_version"), bool):
        return f"schema_version {orjson.dumps(document.get('schema_version')).decode()} is not a signal version this reader knows"
    return _field_problem(document, _SIGNAL_FIELDS, "")


#: The fields of a feed-health event and their JSON types (docs/operations.md, "Feed health").
_HEALTH_FIELDS: dict[str, tuple[type, ...]] = {
    "event_id": (str,), "feed_url": (str,), "previous": (str,), "health": (str,), "reason": (str,), "at": (str,),
}  # fmt: skip


def health_problem(document: Any) -> str | None:
    """Why a decoded record value is not a feed-health event of schema version 1, or None
    when it is one (a structural check, as :func:`alert_problem`)."""
    if not isinstance(document, dict):
        return f"{_json_type(document)}, not a feed-health event object"
    if document.get("schema_version") != 1 or isinstance(document.get("schema_version"), bool):
        return f"schema_version {orjson.dumps(document.get('schema_version')).decode()} is not a feed-health version this reader knows"
    return _field_problem(document, _HEALTH_FIELDS, "")


def _field_problem(document: dict[str, Any], fields: dict[str, tuple[type, ...]], prefix: str) -> str | None:
    for name, types in fields.items():
        if name not in document:
            return f"no {prefix}{name}"
        value = document[name]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            expected = " or ".join(_JSON_TYPES[t] for t in types)
            return f"{prefix}{name} is {_json_type(value)}, not {expected}"
    return None


def _json_type(value: Any) -> str:
    return next((name for kind, name in _JSON_TYPES.items() if type(value) is kind), type(value).__name__)


def _evidence(hits: tuple[Hit, ...]) -> dict[str, Any]:
    """``matches`` (bounded: see the module docstring), ``match_counts`` and ``matches_truncated``.

    The hits kept are each term's first ones in the article (title, summary, body, then
    offset), every term's first hit before any term's second; they keep the engine's order.
    """
    counts = Counter(hit.term for hit in hits)
    kept: list[Hit] | tuple[Hit, ...] = hits
    if len(hits) > MAX_MATCHES or max(counts.values(), default=0) > MAX_HITS_PER_TERM:
        by_term: dict[str, list[int]] = {}
        for index, hit in enumerate(hits):
            by_term.setdefault(hit.term, []).append(index)
        ranked: list[tuple[int, int, int, int]] = []
        for indexes in by_term.values():
            first = heapq.nsmallest(MAX_HITS_PER_TERM, indexes, key=lambda i: (_field_order(hits[i].field), hits[i].start))
            ranked.extend((rank, _field_order(hits[i].field), hits[i].start, i) for rank, i in enumerate(first))
        kept = [hits[i] for i in sorted(entry[3] for entry in heapq.nsmallest(MAX_MATCHES, ranked))]
    return {
        "matches": [
            {"term": hit.term, "field": hit.field, "start": hit.start, "end": hit.end, "text": hit.text[:MAX_HIT_TEXT]}
            for hit in kept
        ],
        "match_counts": dict(list(counts.items())[:MAX_COUNTED_TERMS]),
        "matches_truncated": len(kept) < len(hits),
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
        "lang": article.lang,
        "observed_at": _iso(observed_at),
    }


class ArticleDocumentError(ValueError):
    """A value on the articles topic that is not an article document (the reason says why)."""


_ARTICLE_TEXT = ("id", "feed_url", "title", "summary", "body", "content_hash")
_ARTICLE_OPTIONAL = ("url", "guid", "fulltext_field", "lang")


def article_from_dict(document: Any) -> Article:
    """The :class:`Article` an :func:`article_to_dict` document holds (fields it does not
    know are ignored, so later minor versions still read); :class:`ArticleDocumentError`
    with the reason when it is not one, or when its text does not give its ``content_hash``."""
    if not isinstance(document, dict):
        raise ArticleDocumentError(f"the value is JSON {_json_type(document)}, not an object")
    if document.get("schema_version") != 1:
        raise ArticleDocumentError(f"schema_version is {document.get('schema_version')!r}, not 1")
    for name in _ARTICLE_TEXT:
        if not isinstance(document.get(name), str):
            raise ArticleDocumentError(f"{name} must be a string, got {_json_type(document.get(name))}")
    for name in _ARTICLE_OPTIONAL:
        if document.get(name) is not None and not isinstance(document[name], str):
            raise ArticleDocumentError(f"{name} must be a string or null, got {_json_type(document[name])}")
    if not document["id"]:
        raise ArticleDocumentError("id is empty")
    article = Article(
        id=document["id"],
        feed_url=document["feed_url"],
        title=document["title"],
        summary=document["summary"],
        body=document["body"],
        url=document.get("url"),
        published=_parse_time(document.get("published"), "published"),
        guid=document.get("guid"),
        fulltext_field=document.get("fulltext_field"),
        # The language the poller decided (docs/languages.md); not a code: none.
        lang=language_tag(document.get("lang")),
    )
    if article.content_hash != document["content_hash"]:
        raise ArticleDocumentError("content_hash does not match the title, summary and body (a damaged or edited record)")
    return article


def _parse_time(value: Any, name: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ArticleDocumentError(f"{name} must be an ISO 8601 time or null, got {_json_type(value)}")
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ArticleDocumentError(f"{name} {value!r} is not an ISO 8601 time") from exc
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        # Alerts, stories and signals take it in UTC: a time past year 9999 or before year 1
        # there (9999-12-31T23:59:59-14:00) raised OverflowError in matching, every restart again.
        return moment.astimezone(UTC)
    except OverflowError as exc:
        raise ArticleDocumentError(f"{name} {value!r} is outside the years 1 to 9999 in UTC") from exc


def article_record(article: Article, topic: str, observed_at: datetime | None = None) -> Record:
    """The Kafka record of a normalised article for ``[kafka] articles_topic``, keyed by article id."""
    observed_at = observed_at or datetime.now(UTC)
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


def _moment(seconds: float | None) -> str | None:
    return None if seconds is None else _iso(datetime.fromtimestamp(seconds, UTC))


def _signal_article(article: SignalArticle) -> dict[str, Any]:
    return {
        "id": article.id,
        "url": article.url,
        "title": article.title,
        "outlet": article.outlet,
        "published": _moment(article.published),
        "story_id": article.story_id,
    }


def signal_to_dict(signal: Signal) -> dict[str, Any]:
    """The JSON document of a signal (schema ``schemas/signal-v1.json``)."""
    return {
        "schema_version": SIGNAL_SCHEMA_VERSION,
        "signal_id": signal.signal_id,
        "kind": signal.kind,
        "rule_id": signal.rule_id,
        "topic": signal.topic,
        "severity": signal.severity,
        "tags": list(signal.tags),
        "window": {"start": _moment(signal.window_start), "end": _moment(signal.window_end)},
        "counts": {"articles": signal.articles, "outlets": len(signal.outlets)},
        "outlets": list(signal.outlets),
        "story_ids": list(signal.story_ids),
        "first_article": _signal_article(signal.first),
        "latest_article": _signal_article(signal.latest),
        "baseline": signal.baseline,
        "ratio": signal.ratio,
        "story_id": signal.story_id,
        "level": signal.level,
        "detected_at": _moment(signal.detected_at),
    }


def signal_record(signal: Signal) -> Record:
    """The Kafka record of a signal on ``<rule topic>.signals``: JSON value, rule-id key (a
    rule's signals stay in order), CloudEvents headers with ``ce_type`` ``news.signal.<kind>.v1``."""
    attributes = (
        ("ce_specversion", "1.0"),
        ("ce_id", signal.signal_id),
        ("ce_source", f"news-monitor:rules/{signal.rule_id}"),
        ("ce_type", f"news.signal.{signal.kind}.v{SIGNAL_SCHEMA_VERSION}"),
        ("ce_time", _moment(signal.detected_at) or ""),
        ("ce_subject", signal.story_id or signal.rule_id),
        ("content-type", "application/json"),
        ("rule_id", signal.rule_id),
    )
    # The outbox row's "article" is the rule, so the key is the rule id.
    return _record(signal.signal_id, signal.rule_id, signal.topic, lambda: signal_to_dict(signal), attributes)


def sighting_id_for(article_id: str, rule_ids: Iterable[str]) -> str:
    """The id of a sighting: a digest of the article id and the ids of the rules it counted
    for, so a sighting published again (a batch matched again) has the same id."""
    text = "\x1f".join(("sighting", article_id, *sorted(rule_ids)))
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def sighting_to_dict(article: SignalArticle, rules: Sequence[Rule], detected: float) -> dict[str, Any]:
    """The JSON document of a sighting (schema ``schemas/sighting-v1.json``)."""
    return {
        "schema_version": SIGHTING_SCHEMA_VERSION,
        "sighting_id": sighting_id_for(article.id, [rule.id for rule in rules]),
        "article": _signal_article(article),
        "rules": [
            {"id": rule.id, "topic": rule.topic, "severity": rule.severity, "tags": list(rule.tags), "mode": rule.mode}
            for rule in rules
        ],
        "detected_at": _moment(detected),
    }


def sighting_record(
    article: SignalArticle, rules: Sequence[Rule], detected: float, topic: str, *, feed_url: str, record_article: str
) -> Record:
    """The Kafka record of a sighting on ``[signals] sightings_topic``: JSON value,
    article-id key, CloudEvents headers with ``ce_type`` ``news.sighting.v1``.
    ``record_article`` is the id the store knows the article by (its outbox row's)."""
    sighting_id = sighting_id_for(article.id, [rule.id for rule in rules])
    attributes = (
        ("ce_specversion", "1.0"),
        ("ce_id", sighting_id),
        ("ce_source", public_feed_url(feed_url)),
        ("ce_type", SIGHTING_CLOUDEVENT_TYPE),
        ("ce_time", _moment(detected) or ""),
        ("ce_subject", article.id),
        ("content-type", "application/json"),
    )
    record = _record(sighting_id, article.id, topic, lambda: sighting_to_dict(article, rules, detected), attributes)
    return record if record_article == article.id else replace(record, article_id=record_article)


#: The fields of a sighting, its article and each rule, with their JSON types (``schemas/sighting-v1.json``).
_SIGHTING_FIELDS: dict[str, tuple[type, ...]] = {"sighting_id": (str,), "article": (dict,), "rules": (list,), "detected_at": (str,)}
_SIGHTING_ARTICLE_FIELDS: dict[str, tuple[type, ...]] = {
    "id": (str,), "url": (str, _NONE), "title": (str,), "outlet": (str, _NONE), "published": (str, _NONE), "story_id": (str, _NONE),
}  # fmt: skip
_SIGHTING_RULE_FIELDS: dict[str, tuple[type, ...]] = {"id": (str,), "topic": (str,), "severity": (str,), "tags": (list,), "mode": (str,)}
#: A rule topic a signal can be published under (``<topic>.shadow.signals`` at most 249 characters).
_SIGHTING_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,234}")
_SIGHTING_ID = re.compile(r"[0-9a-f]{32}")


def sighting_problem(document: Any) -> str | None:
    """Why a decoded record value is not a sighting of schema version 1, or None when it is
    one: every field present with its JSON type, an article id and at least one rule, each
    with an id, a topic and a mode of ``live`` or ``shadow``, and times that parse."""
    if not isinstance(document, dict):
        return f"{_json_type(document)}, not a sighting object"
    version = document.get("schema_version")
    if version != SIGHTING_SCHEMA_VERSION or isinstance(version, bool):
        return f"schema_version {orjson.dumps(version).decode()} is not a sighting version this reader knows"
    problem = _field_problem(document, _SIGHTING_FIELDS, "") or _field_problem(document["article"], _SIGHTING_ARTICLE_FIELDS, "article.")
    if problem is not None:
        return problem
    if not _SIGHTING_ID.fullmatch(document["sighting_id"]):
        return f"sighting_id {document['sighting_id']!r} is not 32 lower-case hex digits"
    if not document["article"]["id"]:
        return "article.id is empty"
    url = document["article"]["url"]
    if url is not None and not url.startswith(("http://", "https://")):
        # Signals name their articles' links: only http(s) ones are ever published.
        return "article.url is not an http(s) link"
    if not document["rules"]:
        return "rules is empty"
    for index, rule in enumerate(document["rules"]):
        if not isinstance(rule, dict):
            return f"rules[{index}] is {_json_type(rule)}, not an object"
        problem = _field_problem(rule, _SIGHTING_RULE_FIELDS, f"rules[{index}].")
        if problem is not None:
            return problem
        if not rule["id"]:
            return f"rules[{index}].id is empty"
        if not _SIGHTING_TOPIC.fullmatch(rule["topic"]):
            return f"rules[{index}].topic {rule['topic']!r} is not a Kafka topic name (with room for .shadow.signals)"
        if rule["mode"] not in ("live", "shadow"):
            return f"rules[{index}].mode is {rule['mode']!r}, not live or shadow"
        if not all(isinstance(tag, str) for tag in rule["tags"]):
            return f"rules[{index}].tags has an item that is not a string"
        if rule["severity"] not in SEVERITIES:
            return f"rules[{index}].severity is {rule['severity']!r}, not one of {', '.join(SEVERITIES)}"
    for name, value in (("detected_at", document["detected_at"]), ("article.published", document["article"]["published"])):
        if value is not None and _parse_seconds(value) is None:
            return f"{name} {value!r} is not a date-time"
    return None


def _parse_seconds(text: str) -> float | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None


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
        if isinstance(exc, UnicodeEncodeError):
            why = f"its text is not valid Unicode ({exc.reason} in a header or the key; a bad decoder upstream, typically)"
        elif "UTF-8" in str(exc):
            why = f"its text is not valid Unicode ({exc}; a bad decoder upstream, typically)"
        else:
            why = error_text(exc)  # a value JSON cannot hold: a bug, named as such
        reason = f"cannot serialise record for {topic}: {why}"
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
