"""The subscriber against a local W3C hub, through the real callback listener and the
real SQLite store, on loopback: subscribe and verify, forged verifications, denial,
renewal before the lease ends, lease expiry, back-off on hub errors, 307/308, unsubscribe
when a feed leaves, and what a restart asks again."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time

import aiohttp
import pytest

from monitor.adapters.store import AsyncStore
from monitor.model import Feed
from monitor.timefmt import utc_iso
from monitor.websub import PushLinks
from tests.support import until
from tests.websub.hub import Hub
from tests.websub.support import TOPIC, Parts

pytestmark = pytest.mark.integration

def found(parts: Parts, hub: Hub, path: str = "/hub", topic: str = TOPIC) -> None:
    parts.subscriber.links_found(Feed(topic), PushLinks((hub.url(path),), topic))


def active(parts: Parts, url: str = TOPIC) -> bool:
    sub = parts.sub(url)
    return sub is not None and sub.state == "active"


async def test_subscribe_verify_and_forged_verifications_get_404(hub, running):
    parts = await running()
    found(parts, hub)
    await until(lambda: active(parts) and bool(hub.verifications), what="an active subscription")
    sub = parts.sub()
    assert sub is not None and hub.verifications[0][1] == 200, "the genuine verification was answered with the challenge"
    assert sub.expires_at is not None and sub.expires_at > time.time() + 3000
    assert parts.stored()[0].state == "active" and parts.stored()[0].secret == sub.secret, "kept in the state store"
    assert parts.changes == [(TOPIC, True)]
    async with aiohttp.ClientSession() as session:
        async def verify(token: str, **params: str) -> int:
            query = {"hub.mode": "subscribe", "hub.topic": TOPIC, "hub.challenge": "c", **params}
            async with session.get(parts.base + token, params=query) as response:
                return response.status

        assert await verify("not-a-token") == 404, "an unknown token"
        assert await verify(sub.token, **{"hub.topic": "http://elsewhere.example/feed"}) == 404, "another topic"
        assert await verify(sub.token) == 404, "a subscription that waits for no verification"
        assert await verify(sub.token, **{"hub.mode": "unsubscribe"}) == 404, "an unsubscribe we did not ask for"
        async with session.put(parts.base + sub.token) as response:
            assert response.status == 405
    assert active(parts), "forged verifications change nothing"


async def test_denial_is_recorded_and_asked_again_later(hub, running):
    hub.deny.add(TOPIC)
    parts = await running(retry_max=30.0)
    found(parts, hub)
    await until(lambda: (s := parts.sub()) is not None and s.state == "denied", what="a denied subscription")
    sub = parts.sub()
    assert sub is not None and "not on this hub" in (sub.last_error or "")
    assert sub.next_action_at is not None and sub.next_action_at > time.time() + 20, "asked again after retry_max"
    assert parts.stored()[0].state == "denied"


async def test_renewal_comes_before_the_lease_ends_and_an_expired_lease_falls_back(hub, running):
    hub.lease = 2
    parts = await running()
    found(parts, hub)
    await until(lambda: active(parts), what="an active subscription")
    first = parts.sub().expires_at  # type: ignore[union-attr]
    await until(lambda: len(hub.verifications) >= 2, timeout=5, what="a renewal")
    assert time.time() < first, "renewed before the lease ran out"
    await until(lambda: parts.sub().expires_at > first, what="the new lease")  # type: ignore[union-attr]
    # The hub goes away: renewals fail, the lease runs out, the feed is no longer pushed.
    await hub.stop()
    await until(lambda: (s := parts.sub()) is not None and s.state == "failing", timeout=6, what="the lapsed lease")
    assert parts.changes[-1] == (TOPIC, False), "the poller is told to poll as usual"
    assert parts.subscriber.registry.push_interval(TOPIC) is None


async def test_a_lease_too_long_to_show_is_taken_as_one_year(hub, running):
    hub.lease = 10**20
    parts = await running()
    found(parts, hub)
    await until(lambda: active(parts), what="an active subscription")
    sub = parts.sub()
    assert sub is not None and sub.lease_seconds == 365 * 86400
    assert utc_iso(sub.expires_at or 0).startswith(str(time.gmtime().tm_year + 1)), "the status tools can show its end"
    async with aiohttp.ClientSession() as session:
        # A renewal's verification whose lease no float() takes keeps the configured one.
        sub.awaiting = "subscribe"
        query = {"hub.mode": "subscribe", "hub.topic": TOPIC, "hub.challenge": "c", "hub.lease_seconds": "\u00b2"}
        async with session.get(parts.base + sub.token, params=query) as response:
            assert (response.status, await response.text()) == (200, "c")
    assert sub.lease_seconds == 3600.0


async def test_hub_errors_are_retried_with_back_off(hub, running):
    hub.fail = [500, 500, 503]
    parts = await running(retry_initial=0.2, retry_max=5.0)
    found(parts, hub)
    await until(lambda: (s := parts.sub()) is not None and s.state == "failing", what="a failing subscription")
    assert "HTTP 500" in (parts.sub().last_error or "")  # type: ignore[union-attr]
    await until(lambda: active(parts), timeout=10, what="an active subscription after the errors")
    assert [r.status for r in hub.requests] == [500, 500, 503, 202]
    times = [r.at for r in hub.requests]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[1] > gaps[0] * 1.5, f"the wait doubles: {gaps}"
    assert gaps[2] >= 0.9, f"Retry-After: 1 is honoured: {gaps}"


@pytest.mark.parametrize("status", [307, 308])
async def test_temporary_and_permanent_hub_redirects(hub, running, status):
    hub.redirect = (status, "/hub2")
    parts = await running()
    found(parts, hub)
    await until(lambda: active(parts), what="an active subscription")
    assert [(r.path, r.status) for r in hub.requests] == [("/hub", status), ("/hub2", 202)]
    expected = hub.url("/hub2") if status == 308 else hub.url("/hub")
    assert parts.sub().hub == expected  # type: ignore[union-attr]


async def test_a_removed_feed_is_unsubscribed(hub, running):
    parts = await running()
    found(parts, hub)
    await until(lambda: active(parts), what="an active subscription")
    parts.subscriber.set_feeds([])
    await until(lambda: parts.sub() is None and not parts.stored(), what="the row gone")
    assert hub.requests[-1].form["hub.mode"] == "unsubscribe"
    await until(lambda: not hub.active(TOPIC), what="the hub's unsubscribe verified")


async def test_a_restart_asks_again_for_what_is_not_in_force(hub, running, tmp_path):
    parts = await running()
    found(parts, hub)
    await until(lambda: active(parts), what="an active subscription")
    port = parts.server.address[1]  # type: ignore[index]
    await parts.stop()
    # The same callback and a lease in force: nothing to ask.
    restarted = await running(port=port)
    await asyncio.sleep(0.3)
    assert len(hub.requests) == 1 and active(restarted)
    await restarted.stop()
    # A subscription still waiting for its verification is asked for again.
    store = AsyncStore.open(tmp_path / "state")
    row = store.sync.subscriptions()[0]
    row.state, row.awaiting = "pending", "subscribe"
    store.sync.save_subscription(row.row())
    await store.close()
    again = await running(port=port)
    await until(lambda: len(hub.requests) == 2 and active(again), what="a new subscribe after the restart")
    await again.stop()
    # A new public address (here: another port) is given to the hub at once.
    moved = await running()
    await until(lambda: len(hub.requests) == 3 and active(moved), what="a subscribe with the new callback")
    assert hub.requests[-1].form["hub.callback"].startswith(moved.base)
    assert hub.requests[-1].form["hub.callback"].endswith(row.token), "the token stays"


# -- races, with an in-memory store and a hub that answers when told ------------------------


class MemoryStore:
    """The SubscriptionStore Protocol in a dict (rows, as the SQLite store keeps them)."""

    def __init__(self, rows=()):
        self.rows = {row[0]: row for row in rows}

    async def load_subscriptions(self):
        from monitor.websub import Subscription

        return [Subscription(*row) for row in self.rows.values()]

    async def save_subscription(self, subscription):
        self.rows[subscription.feed_url] = subscription.row()

    async def delete_subscription(self, feed_url, token):
        if feed_url in self.rows and self.rows[feed_url][3] == token:
            del self.rows[feed_url]


class HeldHub:
    """A HubClient whose answers wait until the test releases them."""

    def __init__(self):
        self.forms = []
        self.release = asyncio.Event()

    async def post(self, url, form):
        from monitor.websub import HubAnswer

        self.forms.append(dict(form))
        await self.release.wait()
        return HubAnswer(202)


async def drive(subscriber, condition, what):
    """Run the subscriber's rounds until ``condition`` holds (its loop, stepped by the test)."""
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await subscriber.act_due()
        await asyncio.sleep(0.01)


def memory_subscriber(store, hub_client):
    from monitor.websub import Subscriber

    return Subscriber(store=store, hub=hub_client, callback_base="https://m.example/websub/", lease_seconds=3600.0,
                      fallback_interval=60.0, retry_initial=1.0, retry_max=30.0)  # fmt: skip


async def test_a_feed_removed_while_its_subscribe_is_in_flight_is_unsubscribed_not_left_pending():
    store, held = MemoryStore(), HeldHub()
    subscriber = memory_subscriber(store, held)
    subscriber.set_feeds([Feed(TOPIC)])
    subscriber.links_found(Feed(TOPIC), PushLinks(("https://hub.example/",), TOPIC))
    await drive(subscriber, lambda: len(held.forms) == 1, "the subscribe request sent")
    token = subscriber.subscriptions[TOPIC].token
    subscriber.set_feeds([])
    late = {"hub.mode": "subscribe", "hub.topic": TOPIC, "hub.challenge": "c", "hub.lease_seconds": "60"}
    assert await subscriber.verify(token, late) == (404, ""), "a subscribe the feed no longer wants is refused"
    held.release.set()
    await drive(subscriber, lambda: len(held.forms) == 2, "the unsubscribe request, once the subscribe's answer came")
    assert held.forms[1]["hub.mode"] == "unsubscribe" and subscriber.subscriptions[TOPIC].state == "unsubscribing"
    await until(lambda: subscriber.subscriptions[TOPIC].awaiting == "unsubscribe", what="waiting for its verification")
    answer = await subscriber.verify(token, {"hub.mode": "unsubscribe", "hub.topic": TOPIC, "hub.challenge": "bye"})
    assert answer == (200, "bye") and TOPIC not in subscriber.subscriptions and not store.rows
    await subscriber.stop()


async def test_a_restart_retries_what_was_in_flight_and_drops_a_denied_unsubscribe():
    from monitor.websub import Subscription

    stored = Subscription(TOPIC, "https://hub.example/", TOPIC, "tok", "sec", "https://m.example/websub/tok",
                          state="failing", awaiting="subscribe", next_action_at=None)  # fmt: skip
    held = HeldHub()
    held.release.set()
    store = MemoryStore([stored.row()])
    subscriber = memory_subscriber(store, held)
    await subscriber.load([Feed(TOPIC)])
    await drive(subscriber, lambda: len(held.forms) == 1, "the request sent again")
    # A removed feed whose hub then denies: nothing is left to undo, the row goes.
    subscriber.set_feeds([])
    answer = await subscriber.verify("tok", {"hub.mode": "denied", "hub.topic": TOPIC, "hub.reason": "gone"})
    assert answer == (200, "") and TOPIC not in subscriber.subscriptions
    await until(lambda: not store.rows, what="the row deleted")
    await subscriber.stop()


async def test_a_denial_that_comes_before_the_hubs_answer_keeps_its_reason():
    class DenyingHub(HeldHub):
        """Denies (through the subscriber) before it answers 202, as a quick hub can."""

        async def post(self, url, form):
            token = form["hub.callback"].rpartition("/")[2]
            await subscriber.verify(token, {"hub.mode": "denied", "hub.topic": form["hub.topic"], "hub.reason": "no such topic"})
            self.release.set()
            return await super().post(url, form)

    store = MemoryStore()
    subscriber = memory_subscriber(store, DenyingHub())
    subscriber.set_feeds([Feed(TOPIC)])
    subscriber.links_found(Feed(TOPIC), PushLinks(("https://hub.example/",), TOPIC))
    await drive(subscriber, lambda: store.rows.get(TOPIC, (None,) * 13)[12] is not None, "the denial stored")
    await until(lambda: TOPIC not in subscriber._in_flight, what="the request's answer handled")
    sub = subscriber.subscriptions[TOPIC]
    assert sub.state == "denied" and sub.last_error == "denied by the hub: no such topic"
    await subscriber.stop()


async def test_a_delete_with_an_old_token_leaves_the_feeds_new_subscription(tmp_path):
    """A shared row: the subscription that was replaced (or an old owner's) deletes nothing."""
    from monitor.websub import Subscription

    store = AsyncStore.open(tmp_path / "state")
    try:
        old = Subscription("https://f.example/a.xml", "https://hub.example/", "https://f.example/a.xml", "old", "s1", "https://m.example/old")
        await store.save_subscription(old)
        await store.save_subscription(dataclasses.replace(old, token="new", secret="s2", callback="https://m.example/new"))
        await store.delete_subscription(old.feed_url, "old")
        assert [s.token for s in await store.load_subscriptions()] == ["new"]
        await store.delete_subscription(old.feed_url, "new")
        assert await store.load_subscriptions() == []
    finally:
        await store.close()
