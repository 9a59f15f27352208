"""Records of ``[cluster] websub_topic`` (``news.websub``): a feed's WebSub subscription,
which moves with the feed (docs/websub.md, "In the scale-out roles").

Compacted, key the feed URL, written to the feed's partition of the feeds topic (the two
are co-partitioned: the poller that owns a feed owns its subscription). Value JSON:
``{"v": 1, "url": feed URL, <every Subscription field but feed_url>, "owner": instance id,
"written_at": unix time}``; a tombstone: the feed has no subscription. The value holds the
subscription's secret: the topic must be readable by the pollers alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

from monitor.cluster.records import url_document
from monitor.websub.subscriptions import SUBSCRIPTION_COLUMNS, Subscription

__all__ = ["SubscriptionRecord", "SubscriptionRecordError", "subscription_from_record", "subscription_to_value"]

_VERSION = 1
_TEXT = frozenset({"hub", "topic", "token", "secret", "callback", "state"})
_INTEGER = frozenset({"attempts", "pushes"})


class SubscriptionRecordError(ValueError):
    """A record on the WebSub topic that is not a subscription (the reason says why)."""


@dataclass(frozen=True, slots=True)
class SubscriptionRecord:
    """One subscription as the topic holds it, with the instance that wrote it."""

    subscription: Subscription
    owner: str
    written_at: float


def subscription_to_value(subscription: Subscription, *, owner: str, written_at: float) -> bytes:
    """The value of ``subscription`` on the WebSub topic (the key is its feed URL)."""
    document: dict[str, Any] = {"v": _VERSION, "url": subscription.feed_url}
    for name in SUBSCRIPTION_COLUMNS[1:]:
        value = getattr(subscription, name)
        if value is not None:
            document[name] = value
    document["owner"], document["written_at"] = owner, written_at
    return orjson.dumps(document)


def subscription_from_record(key: bytes | None, value: bytes) -> SubscriptionRecord:
    """The subscription a (non-tombstone) record holds; :class:`SubscriptionRecordError`
    with the reason for anything else."""
    url, document = url_document(key, value, _VERSION, SubscriptionRecordError)
    values: dict[str, Any] = {"feed_url": url}
    for name in SUBSCRIPTION_COLUMNS[1:]:
        field_value = document.get(name)
        if field_value is None:
            if name in _TEXT - {"state"}:
                raise SubscriptionRecordError(f"{name} is missing")
            continue
        if name in _TEXT or name in ("awaiting", "last_error"):
            ok = isinstance(field_value, str)
        elif name in _INTEGER:
            ok = isinstance(field_value, int) and not isinstance(field_value, bool)
        else:
            ok = isinstance(field_value, (int, float)) and not isinstance(field_value, bool) and math.isfinite(field_value)
        if not ok:
            raise SubscriptionRecordError(f"{name} has the wrong type: {field_value!r}")
        values[name] = field_value
    owner, written_at = document.get("owner", ""), document.get("written_at", 0.0)
    if not isinstance(owner, str) or isinstance(written_at, bool) or not isinstance(written_at, (int, float)):
        raise SubscriptionRecordError("owner must be a string and written_at a number")
    return SubscriptionRecord(Subscription(**values), owner, float(written_at))
