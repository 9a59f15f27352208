"""Records of the cluster's topics that are not alerts or articles.

* ``news.feeds``: key = the feed URL, value = the feed's settings as JSON (the keys of a
  ``[[feeds.feed]]`` table, plus ``"v": 1``); a record without a value (a tombstone)
  removes the feed.
* Marker records: a reader that must know it has read a partition to its end (the
  broker's end offset cannot be trusted on Tansu) writes a record with the key
  :data:`MARKER_KEY` and reads until it meets it. Every reader of the cluster's state
  topics skips them (:func:`is_marker`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

import orjson

from monitor.language import AUTO, feed_language_problem, language_tag
from monitor.model import Feed
from monitor.settings import WEBSUB_MODES, feed_location_problem, header_problem

__all__ = ["MARKER_KEY", "FeedRecordError", "feed_from_record", "feed_to_record", "is_marker", "url_document"]

MARKER_KEY = b"__news-monitor-marker__"

_VERSION = 1


class FeedRecordError(ValueError):
    """A record on the feeds topic that is not a feed's settings (the reason says why)."""


def is_marker(key: bytes | None) -> bool:
    """Whether a record is a reader's end-of-partition marker, not data."""
    return key == MARKER_KEY


def json_type(value: Any) -> str:
    """The JSON name of a decoded value's type (``null``, not Python's ``NoneType``)."""
    names = ((bool, "true or false"), (dict, "object"), (list, "array"), (str, "string"), (int, "number"), (float, "number"))
    return next((name for kind, name in names if isinstance(value, kind)), "null")


def url_document(key: bytes | None, value: bytes, version: int, error: type[ValueError]) -> tuple[str, Mapping[str, Any]]:
    """The feed URL (the key) and the JSON object (the value) of a record keyed by feed URL,
    checked for ``"v": version`` and a ``"url"`` equal to the key; ``error`` with the reason."""
    if not key:
        raise error("the record has no key (the feed URL)")
    try:
        url = key.decode("utf-8")
        document = orjson.loads(value)
    except (UnicodeDecodeError, orjson.JSONDecodeError) as exc:
        raise error(f"not UTF-8 JSON: {exc}") from exc
    if not isinstance(document, Mapping):
        raise error(f"the value is JSON {json_type(document)}, not an object")
    if isinstance(document.get("v"), bool) or document.get("v") != version:  # JSON true is not 1
        raise error(f"unknown version {document.get('v')!r} (this monitor reads {version})")
    if document.get("url") != url:
        raise error(f"the value's url {document.get('url')!r} differs from the key {url!r}")
    return url, document


def feed_to_record(feed: Feed) -> tuple[bytes, bytes]:
    """The key and value of ``feed`` on the feeds topic (sorted keys: the same feed always
    gives the same bytes, so ``feeds sync`` can tell a change from a repeat)."""
    document: dict[str, Any] = {
        "v": _VERSION,
        "url": feed.url,
        "interval": feed.interval,
        "enabled": feed.enabled,
        "fulltext": feed.fulltext,
    }
    if feed.name is not None:
        document["name"] = feed.name
    if feed.headers:
        document["headers"] = dict(feed.headers)
    if feed.expected_update_period is not None:
        document["expected_update_period"] = feed.expected_update_period
    if feed.language is not None:
        document["language"] = feed.language
    if feed.websub != WEBSUB_MODES[0]:
        # Only when not the default: the records of feeds that do not set it keep their bytes.
        document["websub"] = feed.websub
    return feed.url.encode("utf-8"), orjson.dumps(document, option=orjson.OPT_SORT_KEYS)


def feed_from_record(key: bytes | None, value: bytes) -> Feed:
    """The :class:`Feed` a (non-tombstone) record of the feeds topic holds;
    :class:`FeedRecordError` with the reason for anything else."""
    url, document = url_document(key, value, _VERSION, FeedRecordError)
    # What a config file may not list, the topic may not either: a poller would poll it.
    problem = feed_location_problem(url)
    if problem is None and "://" not in url and not PurePath(url).is_absolute():
        problem = f"url {url!r} is a relative path ('feeds sync' writes a path feed's absolute path)"
    if problem is not None:
        raise FeedRecordError(problem)
    return Feed(
        url=url,
        interval=_seconds(document, "interval", required=True),  # type: ignore[arg-type]
        name=_optional_text(document, "name"),
        enabled=_flag(document, "enabled"),
        headers=_headers(document),
        fulltext=_flag(document, "fulltext"),
        expected_update_period=_seconds(document, "expected_update_period", required=False),
        language=_language(document),
        websub=_websub(document),
    )


def _websub(document: Mapping[str, Any]) -> str:
    value = document.get("websub", WEBSUB_MODES[0])
    if value not in WEBSUB_MODES:
        raise FeedRecordError(f"websub must be one of {', '.join(WEBSUB_MODES)}, got {value!r}")
    return str(value)


def _language(document: Mapping[str, Any]) -> str | None:
    """The feed's configured language (an ISO 639-1 code or "auto"), or None."""
    value = _optional_text(document, "language")
    if value is not None and feed_language_problem(value) is not None:
        raise FeedRecordError(f"language must be an ISO 639-1 code or 'auto', got {value!r}")
    return None if value is None else language_tag(value) or AUTO


def _seconds(document: Mapping[str, Any], key: str, *, required: bool) -> float | None:
    value = document.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 1:
        raise FeedRecordError(f"{key} must be a number of seconds, at least 1, got {value!r}")
    return float(value)


def _flag(document: Mapping[str, Any], key: str) -> bool:
    value = document.get(key)
    if not isinstance(value, bool):
        raise FeedRecordError(f"{key} must be true or false, got {value!r}")
    return value


def _optional_text(document: Mapping[str, Any], key: str) -> str | None:
    value = document.get(key)
    if value is not None and not isinstance(value, str):
        raise FeedRecordError(f"{key} must be a string, got {value!r}")
    return value


def _headers(document: Mapping[str, Any]) -> dict[str, str]:
    value = document.get("headers", {})
    if not isinstance(value, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise FeedRecordError(f"headers must be an object of strings, got {value!r}")
    for name, text in value.items():
        if (problem := header_problem(name, text)) is not None:
            raise FeedRecordError(f"headers: {problem}")
    return dict(value)
