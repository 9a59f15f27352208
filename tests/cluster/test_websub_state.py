"""Records of the WebSub topic: a subscription round-trips; anything else is refused with the reason."""

from __future__ import annotations

import orjson
import pytest

from monitor.cluster.websub_state import SubscriptionRecordError, subscription_from_record, subscription_to_value
from monitor.websub import Subscription

URL = "https://news.example/feed.xml"


def subscription() -> Subscription:
    return Subscription(
        URL, "https://hub.example/", URL, "tok", "secret", "https://m.example/websub/p-0/tok", state="active",
        lease_seconds=864000.0, expires_at=1.8e9, next_action_at=1.7e9, attempts=0, pushes=3, last_push_at=1.6e9,
    )  # fmt: skip


def test_a_subscription_round_trips_with_its_owner() -> None:
    value = subscription_to_value(subscription(), owner="p-0", written_at=12.5)
    record = subscription_from_record(URL.encode(), value)
    assert record.subscription == subscription() and record.owner == "p-0" and record.written_at == 12.5


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"v": 2}, "unknown version"),
        ({"url": "https://other.example/"}, "differs from the key"),
        ({"secret": None}, "secret is missing"),
        ({"pushes": "3"}, "pushes has the wrong type"),
        ({"expires_at": True}, "expires_at has the wrong type"),
    ],
)
def test_a_record_that_is_not_a_subscription_is_refused(change: dict[str, object], reason: str) -> None:
    document = orjson.loads(subscription_to_value(subscription(), owner="p-0", written_at=1.0))
    document.update(change)
    document = {k: v for k, v in document.items() if v is not None}
    with pytest.raises(SubscriptionRecordError, match=reason):
        subscription_from_record(URL.encode(), orjson.dumps(document))
