"""What the notify consumer reads: a Kafka record as an alert or a signal, or why it is neither.

Alerts are records of ``schemas/alert-v1.json`` (``ce_type`` ``news.alert.v1``), checked by
:func:`monitor.delivery.records.alert_problem`, the check ``news-monitor tail`` uses. Signals are
records on ``<rule topic>.signals`` with ``ce_type`` ``news.signal.<kind>.v1`` and a JSON
object with at least ``schema_version`` (1), ``signal_id``, ``kind``, ``rule_id`` and
``detected_at`` (their full contract is ``schemas/signal-v1.json`` when it exists); a
record is a signal by its ``ce_type`` header, or by its topic's ``.signals`` suffix when
it has no ``ce_type``.

:class:`Item` carries what filters and templates need. Pure: no Kafka client here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson

from monitor.delivery.records import CLOUDEVENT_TYPE, SIGNAL_SCHEMA_VERSION, alert_problem

__all__ = ["ALERT", "SEVERITIES", "SIGNAL", "Item", "decode_item", "record_kind"]

ALERT = "alerts"
SIGNAL = "signals"
SEVERITIES = ("info", "low", "medium", "high", "critical")
_SIGNAL_TYPE = re.compile(r"news\.signal\.([a-z0-9_-]+)\.v1")
_SIGNAL_FIELDS = {"schema_version": int, "signal_id": str, "kind": str, "rule_id": str, "detected_at": str}


@dataclass(frozen=True, slots=True)
class Item:
    """One alert or signal, decoded."""

    kind: str
    #: The dedupe key: the alert id, or ``signal:`` and the signal id.
    key: str
    rule_id: str
    #: None for a signal that carries no severity.
    severity: str | None
    #: None for a signal that carries no tags.
    tags: tuple[str, ...] | None
    document: dict[str, Any]
    story_id: str | None = None
    article_id: str | None = None


def _header(headers: Any, name: str) -> str | None:
    for key, value in headers or ():
        if key == name:
            return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return None


def record_kind(topic: str, headers: Any) -> str:
    """``alerts`` or ``signals``, from the ``ce_type`` header, else the topic's suffix."""
    ce_type = _header(headers, "ce_type")
    if ce_type is not None:
        return SIGNAL if ce_type.startswith("news.signal.") else ALERT
    return SIGNAL if topic.endswith(".signals") else ALERT


def decode_item(topic: str, value: bytes | None, headers: Any) -> tuple[Item | None, str]:
    """The item in a record, or None and why the record is skipped (one line, for the log)."""
    kind = record_kind(topic, headers)
    ce_type = _header(headers, "ce_type")
    if not value:
        return None, "empty value"
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return None, f"not JSON ({exc})"
    if kind == ALERT:
        if ce_type is not None and ce_type != CLOUDEVENT_TYPE:
            return None, f"ce_type {ce_type[:80]!r} is not {CLOUDEVENT_TYPE} (this reader knows alert version 1)"
        problem = alert_problem(document)
        if problem is None and document["severity"] not in SEVERITIES:
            # Filters rank severities: one outside the contract's five cannot be placed.
            problem = f"severity {document['severity'][:40]!r} is not one of {', '.join(SEVERITIES)}"
        if problem is not None:
            return None, problem
        article = document["article"]
        return Item(
            kind=ALERT,
            key=document["alert_id"],
            rule_id=document["rule_id"],
            severity=document["severity"],
            tags=tuple(tag for tag in document["tags"] if isinstance(tag, str)),
            document=document,
            story_id=document["story_id"],
            article_id=article["id"],
        ), ""
    return _signal(document, ce_type)


def _signal(document: Any, ce_type: str | None) -> tuple[Item | None, str]:
    if ce_type is not None and not _SIGNAL_TYPE.fullmatch(ce_type):
        return None, f"ce_type {ce_type[:80]!r} is not news.signal.<kind>.v1 (this reader knows signal version 1)"
    if not isinstance(document, dict):
        return None, "not a signal object"
    version = document.get("schema_version")
    if isinstance(version, int) and not isinstance(version, bool) and version != SIGNAL_SCHEMA_VERSION:
        return None, f"schema_version {version} is not supported (this reader knows signal version {SIGNAL_SCHEMA_VERSION})"
    for name, kind in _SIGNAL_FIELDS.items():
        value = document.get(name)
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is str and not value):
            return (
                None,
                f"no {name}: not a signal"
                if name not in document
                else f"signal {name} is not {'a string' if kind is str else 'an integer'}",
            )
    severity = document.get("severity")
    tags = document.get("tags")
    return Item(
        kind=SIGNAL,
        key=f"signal:{document['signal_id']}",
        rule_id=document["rule_id"],
        severity=severity if isinstance(severity, str) and severity in SEVERITIES else None,
        tags=tuple(tag for tag in tags if isinstance(tag, str)) if isinstance(tags, list) else None,
        document=document,
        story_id=document.get("story_id") if isinstance(document.get("story_id"), str) else None,
    ), ""


def outlet(document: dict[str, Any]) -> str:
    """The outlet of an alert: the alert's own ``article.outlet`` (a registrable domain,
    docs/signals.md), else the host of the article's link, else of its feed (``www.``
    dropped), else the feed file's name."""
    article = document.get("article") or {}
    if isinstance(article.get("outlet"), str) and article["outlet"]:
        return str(article["outlet"])
    for url in (article.get("url"), article.get("feed_url")):
        if isinstance(url, str) and url:
            parts = urlsplit(url)
            host = parts.hostname or ""
            if host:
                return host[4:] if host.startswith("www.") else host
            if parts.path:
                return parts.path.rstrip("/").rsplit("/", 1)[-1]
    return ""
