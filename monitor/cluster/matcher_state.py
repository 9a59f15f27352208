"""Records of ``news.matcher-state``: what a matcher remembers of an article it admitted.

The matcher that owns partition *p* of the articles topic writes one record per admitted
article to partition *p* of the matcher-state topic (co-partitioned: same partition
count, written to the same partition number explicitly), so whichever matcher owns *p*
next restores exactly the articles that went through *p* before. The topic is compacted:
the latest record per key is the article's state.

* key: the article id as consumed (the key of the articles record);
* value: JSON ``{"v": 1, "id", "url", "feed_url", "content_hash", "rules", "story_id",
  "seen_at"}`` plus ``"signature"`` (the story signature, base64) when the article is
  a member of a story. ``id`` is the id the matcher knows the article by, which differs
  from the key when the article was recognised by its canonical url under another id.

Pure: no Kafka client here.
"""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from monitor.cluster.records import json_type

__all__ = ["MatcherStateError", "RememberedArticle", "state_from_record", "state_to_record"]

_VERSION = 1


class MatcherStateError(ValueError):
    """A matcher-state record that cannot be read (the reason says why)."""


@dataclass(frozen=True, slots=True)
class RememberedArticle:
    """One article as the matcher-state topic holds it."""

    #: The article id the record is keyed by (as consumed from the articles topic).
    key: str
    #: The id the article is known by (alert ids derive from it).
    id: str
    url: str | None
    feed_url: str
    content_hash: str
    #: Every rule that has alerted on the article.
    rules: frozenset[str]
    story_id: str | None
    seen_at: float
    #: The packed story signature (None: not a story member, or too short to cluster).
    signature: bytes | None = None


def state_to_record(article: RememberedArticle) -> tuple[bytes, bytes]:
    """The key and value of ``article`` on the matcher-state topic."""
    document: dict[str, Any] = {
        "v": _VERSION,
        "id": article.id,
        "url": article.url,
        "feed_url": article.feed_url,
        "content_hash": article.content_hash,
        "rules": sorted(article.rules),
        "story_id": article.story_id,
        "seen_at": article.seen_at,
    }
    if article.signature is not None:
        document["signature"] = base64.b64encode(article.signature).decode("ascii")
    return article.key.encode("utf-8", "surrogatepass"), orjson.dumps(document)


def state_from_record(key: bytes | None, value: bytes | None) -> RememberedArticle:
    """The :class:`RememberedArticle` of a matcher-state record; :class:`MatcherStateError`
    with the reason for anything else (a reader logs it and skips the record)."""
    if not key:
        raise MatcherStateError("the record has no key (the article id)")
    if value is None:
        raise MatcherStateError("the record has no value (a tombstone)")
    try:
        document = orjson.loads(value)
        record_key = key.decode("utf-8")
    except (orjson.JSONDecodeError, UnicodeDecodeError) as exc:
        raise MatcherStateError(f"not UTF-8 JSON: {exc}") from exc
    if not isinstance(document, Mapping):
        raise MatcherStateError(f"the value is JSON {json_type(document)}, not an object")
    if isinstance(document.get("v"), bool) or document.get("v") != _VERSION:  # JSON true is not 1
        raise MatcherStateError(f"unknown version {document.get('v')!r} (this monitor reads {_VERSION})")
    for name in ("id", "feed_url", "content_hash"):
        if not isinstance(document.get(name), str) or not document[name]:
            raise MatcherStateError(f"{name} must be a non-empty string, got {document.get(name)!r}")
    for name in ("url", "story_id"):
        if document.get(name) is not None and not isinstance(document[name], str):
            raise MatcherStateError(f"{name} must be a string or null, got {document[name]!r}")
    rules = document.get("rules")
    if not isinstance(rules, list) or not all(isinstance(rule, str) for rule in rules):
        raise MatcherStateError(f"rules must be an array of rule ids, got {rules!r}")
    seen_at = document.get("seen_at")
    if isinstance(seen_at, bool) or not isinstance(seen_at, (int, float)) or not math.isfinite(seen_at):
        raise MatcherStateError(f"seen_at must be a Unix time, got {seen_at!r}")
    return RememberedArticle(
        key=record_key,
        id=document["id"],
        url=document.get("url"),
        feed_url=document["feed_url"],
        content_hash=document["content_hash"],
        rules=frozenset(rules),
        story_id=document.get("story_id"),
        seen_at=float(seen_at),
        signature=_signature(document.get("signature")),
    )


def _signature(value: Any) -> bytes | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise MatcherStateError(f"signature must be base64 text, got {value!r}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MatcherStateError(f"signature is not base64: {exc}") from exc
