"""Records of ``news.feed-state``: a feed's polling state, which moves with the feed.

Key the feed URL, value JSON: ``{"v": 1, <every FeedState field>, "seen": {article id:
content hash}, "owner": instance id, "written_at": unix time}``. The owner of a feed
writes it after a poll changed the state (only once the poll's articles were
acknowledged on the articles topic); the next owner reads it before its first poll of
the feed (docs/scaling.md, "Poller").

``seen`` is what the poller's within-feed dedupe compares a new body with: the ids of
the entries of the last parsed body, then those of earlier bodies, most recent first, at
most twice as many as the last body had (at least :data:`SEEN_MIN`, at most
:data:`SEEN_MAX`), each with the first 16 hex digits of its content hash.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

import orjson

from monitor.cluster.records import url_document
from monitor.feeds.state import FEED_COLUMNS, FeedState
from monitor.model import Article

__all__ = [
    "SEEN_MAX",
    "SEEN_MIN",
    "FeedStateRecord",
    "FeedStateRecordError",
    "content_digest",
    "feed_state_from_record",
    "feed_state_to_value",
    "seen_after",
]

_VERSION = 1
#: The seen map keeps at least this many ids (a small feed's items come back after a while)...
SEEN_MIN = 100
#: ... and never more than this many (the record's size).
SEEN_MAX = 1000
_DIGEST_CHARS = 16

_TYPES: dict[str, tuple[type, ...]] = {}
for _field in fields(FeedState):
    _TYPES[_field.name] = (
        (str,) if _field.type in ("str", "str | None") else (int,) if _field.type == "int" else (int, float)
    )


class FeedStateRecordError(ValueError):
    """A record on the feed-state topic that is not a feed's state (the reason says why)."""


@dataclass(frozen=True, slots=True)
class FeedStateRecord:
    """One feed's state as the feed-state topic holds it."""

    state: FeedState
    #: Article id -> content digest (:func:`content_digest`), most recent first.
    seen: dict[str, str]
    #: The instance that wrote it (``[cluster] instance_id``).
    owner: str
    written_at: float


def content_digest(article: Article) -> str:
    """What the seen map keeps of an article's content hash."""
    return article.content_hash[:_DIGEST_CHARS]


def seen_after(previous: Mapping[str, str], articles: Iterable[Article]) -> dict[str, str]:
    """The seen map after a parsed body with ``articles``: theirs first, then the earlier
    ones, within the limits in the module docstring."""
    current = {article.id: content_digest(article) for article in articles}
    limit = min(SEEN_MAX, max(SEEN_MIN, 2 * len(current)))
    seen: dict[str, str] = {}
    for key, digest in current.items():
        if len(seen) >= limit:
            return seen
        seen[key] = digest
    for key, digest in previous.items():
        if len(seen) >= limit:
            break
        seen.setdefault(key, digest)
    return seen


def feed_state_to_value(state: FeedState, seen: Mapping[str, str], *, owner: str, written_at: float) -> bytes:
    """The value of ``state`` on the feed-state topic (the key is ``state.url``)."""
    document: dict[str, Any] = {"v": _VERSION}
    for name in FEED_COLUMNS:
        value = getattr(state, name)
        if value is not None:
            document[name] = value
    document["seen"] = dict(seen)
    document["owner"] = owner
    document["written_at"] = written_at
    return orjson.dumps(document)


def feed_state_from_record(key: bytes | None, value: bytes) -> FeedStateRecord:
    """The state a (non-tombstone) record of the feed-state topic holds;
    :class:`FeedStateRecordError` with the reason for anything else."""
    _url, document = url_document(key, value, _VERSION, FeedStateRecordError)
    values: dict[str, Any] = {}
    for name in FEED_COLUMNS:
        field_value = document.get(name)
        if field_value is None:
            continue
        if (
            isinstance(field_value, bool)
            or not isinstance(field_value, _TYPES[name])
            or (isinstance(field_value, float) and not math.isfinite(field_value))
        ):
            raise FeedStateRecordError(f"{name} has the wrong type: {field_value!r}")
        values[name] = field_value
    seen = document.get("seen", {})
    if not isinstance(seen, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in seen.items()):
        raise FeedStateRecordError("seen must be an object of strings")
    owner = document.get("owner", "")
    written_at = document.get("written_at", 0.0)
    if not isinstance(owner, str) or isinstance(written_at, bool) or not isinstance(written_at, (int, float)):
        raise FeedStateRecordError("owner must be a string and written_at a number")
    return FeedStateRecord(FeedState(**values), seen, owner, float(written_at))
