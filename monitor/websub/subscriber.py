"""The subscriber: every feed's push subscription, from discovery to unsubscribe.

:class:`Subscriber` keeps one :class:`~monitor.websub.subscriptions.Subscription` per
feed that names a hub (its states: see that module):

* a poll reports the feed's hub links (:meth:`Subscriber.links_found`); a new hub or
  topic makes a new subscription, with a fresh random callback token and secret;
* :meth:`Subscriber.run` acts on each subscription when it is due: it POSTs
  ``hub.mode=subscribe`` (with ``hub.callback``, ``hub.topic``, ``hub.secret``,
  ``hub.lease_seconds``) or ``unsubscribe``, follows ``307``/``308`` (a 308 moves the
  hub for good), and backs off after an error (``[websub] retry_initial``, doubling
  up to ``retry_max``, ``Retry-After`` honoured);
* :meth:`Subscriber.verify` answers the hub's verification of intent: only for a
  subscription that waits for one in that mode, with that token and topic (anything
  else is 404), echoing ``hub.challenge``; a verified subscription is active until
  its lease ends and renewed at 80 % of it; a denial is recorded;
* a removed feed (or one set to ``websub = "off"``, or whose hub went away) is
  unsubscribed; the row goes when the hub verifies that, or after five failed tries.

The subscriptions themselves are held by a :class:`~monitor.websub.registry.Registry`
(:attr:`Subscriber.registry`); what hubs push is taken by :mod:`monitor.websub.inbox`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections.abc import Callable, Iterable, Mapping

from monitor.errors import FeedError, error_text
from monitor.log import get_logger
from monitor.model import Feed
from monitor.websub.discovery import PushLinks
from monitor.websub.refusals import REFUSAL_LOG_INTERVAL, RefusalLog
from monitor.websub.registry import Registry
from monitor.websub.subscriptions import (
    ACTIVE,
    DENIED,
    FAILING,
    PENDING,
    UNSUBSCRIBING,
    HubAnswer,
    HubClient,
    Subscription,
    SubscriptionStore,
)

__all__ = ["RENEW_AT", "Subscriber"]

log = get_logger("websub")

#: Share of a granted lease after which the subscription is renewed.
RENEW_AT = 0.8
#: Longest lease taken from a hub (a longer one is renewed as if it were this long): the
#: end of a lease must stay a time people and the status tools can show.
MAX_LEASE = 365 * 86400.0
#: 307/308 hops followed for one request.
MAX_HUB_REDIRECTS = 5
#: Failed unsubscribe requests after which the row is dropped anyway.
UNSUBSCRIBE_TRIES = 5
#: Requests to hubs in flight at once.
HUB_CONCURRENCY = 8
#: Longest sleep of the subscriber's loop (it also writes push counts back then).
TICK = 5.0


class Subscriber:
    """The lifecycle of every subscription of one process (see the module docstring).

    Seventeen methods, each one step (load, follow the feed list, release, discovery, verification,
    the loop, one request and its outcome): they share the in-flight requests, the wake-up
    and the hub client, which a split would pass back and forth.
    """

    def __init__(
        self,
        *,
        store: SubscriptionStore,
        hub: HubClient,
        callback_base: str,
        lease_seconds: float,
        fallback_interval: float,
        retry_initial: float,
        retry_max: float,
        clock: Callable[[], float] = time.time,
        refusal_log_interval: float = REFUSAL_LOG_INTERVAL,
    ) -> None:
        """``refusal_log_interval``: seconds between two lines that count a flood of refused
        verifications (:mod:`monitor.websub.refusals`)."""
        self._store = store
        self._hub = hub
        self.callback_base = callback_base if callback_base.endswith("/") else callback_base + "/"
        self.lease_seconds = lease_seconds
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.clock = clock
        self.registry = Registry(fallback_interval=fallback_interval, clock=clock)
        #: Feed url -> its subscription (the registry's).
        self.subscriptions = self.registry.by_feed
        #: Feeds whose links a poll has reported this run.
        self._checked: set[str] = set()
        self._wake = asyncio.Event()
        self._requests = asyncio.Semaphore(HUB_CONCURRENCY)
        self._in_flight: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._refusals = RefusalLog(refusal_log_interval)

    # -- the feed list ------------------------------------------------------------------

    async def load(self, feeds: Iterable[Feed]) -> None:
        """Take the stored subscriptions; those not known to be in force are asked for again now."""
        now = self.clock()
        for subscription in await self._store.load_subscriptions():
            callback = self.callback_base + subscription.token
            if subscription.callback != callback and subscription.state != UNSUBSCRIBING:
                # The public address changed: the hub must be told the new one.
                subscription.callback, subscription.next_action_at = callback, now
            lapsed = subscription.state == ACTIVE and (subscription.expires_at or 0) <= now
            # No next action: its request was in flight when the last run stopped.
            if subscription.next_action_at is None or subscription.state == PENDING or lapsed:
                subscription.next_action_at = now
            self.registry.add(subscription)
        self.set_feeds(feeds)
        log.info("websub.loaded", subscriptions=len(self.subscriptions), states=dict(self.registry.counts()))

    def set_feeds(self, feeds: Iterable[Feed]) -> None:
        """Follow the feed list: unsubscribe from removed feeds and those set to ``websub = "off"``."""
        previous, self.registry.feeds = self.registry.feeds, {feed.url: feed for feed in feeds}
        for url, feed in self.registry.feeds.items():
            if feed.websub != "off" and url in previous and previous[url].websub == "off":
                self._checked.discard(url)
        for subscription in list(self.subscriptions.values()):
            listed = self.registry.feeds.get(subscription.feed_url)
            if listed is None or listed.websub == "off":
                self._unsubscribe(subscription, "the feed left the list" if listed is None else "websub is off for the feed")

    def release(self, urls: Iterable[str]) -> list[Subscription]:
        """Forget the feeds ``urls`` and their subscriptions without unsubscribing: they moved
        to another poller, which keeps or renews them (their pushes are 404 here from now on).
        Returns the subscriptions released, as they were."""
        released = []
        for url in urls:
            self._checked.discard(url)
            self.registry.feeds.pop(url, None)
            subscription = self.subscriptions.get(url)
            if subscription is not None:
                self.registry.remove(subscription)
                released.append(subscription)
        return released

    # -- what the pipeline, the poller and the status ask ------------------------------

    def wants_links(self, url: str) -> bool:
        """Whether a poll of ``url`` should fetch the whole body (no validators) for its hub links:
        once per run, for a feed without a subscription."""
        return url not in self._checked and url not in self.subscriptions and self._pushable(url)

    def links_found(self, feed: Feed, links: PushLinks | None) -> None:
        """A poll read ``feed``'s hub links (None: it names no hub)."""
        self._checked.add(feed.url)
        if not self._pushable(feed.url):
            return
        subscription = self.subscriptions.get(feed.url)
        if links is None:
            if subscription is not None:
                self._unsubscribe(subscription, "the feed names no hub any more")
            return
        if subscription is not None and subscription.state != UNSUBSCRIBING:
            if subscription.hub in links.hubs and subscription.topic == links.topic:
                return
            log.info("websub.hub.changed", feed_url=feed.url, hub=links.hub, topic=links.topic, previous_hub=subscription.hub)
            self.registry.remove(subscription)
        token = secrets.token_urlsafe(32)
        self.registry.add(
            Subscription(
                feed_url=feed.url, hub=links.hub, topic=links.topic, token=token, secret=secrets.token_hex(32),
                callback=self.callback_base + token, state=PENDING, next_action_at=self.clock(), updated_at=self.clock(),
            )
        )
        log.info("websub.hub.found", feed_url=feed.url, hub=links.hub, topic=links.topic)
        self._wake.set()

    # -- verification of intent ----------------------------------------------------------

    async def verify(self, token: str, params: Mapping[str, str]) -> tuple[int, str]:
        """Answer a hub's verification GET: (HTTP status, body)."""
        subscription = self.registry.for_token(token)
        mode, topic, challenge = params.get("hub.mode", ""), params.get("hub.topic"), params.get("hub.challenge", "")
        if subscription is None or topic != subscription.topic:
            # One key for them all: anyone may send these, with as many made-up tokens as they like.
            self._refusals.refused(
                "", mode=mode[:100], reason="unknown token or topic",
                hint="a hub verifying a subscription this process no longer has, or requests from elsewhere; nothing to do",
            )  # fmt: skip
            return 404, ""
        now = self.clock()
        if mode == "denied" and subscription.state == UNSUBSCRIBING:
            # Not subscribed at the hub, and not wanted here: nothing left to undo.
            self.registry.remove(subscription)
            await self._forget(subscription)
            return 200, ""
        if mode == "denied":
            reason = params.get("hub.reason", "")[:500]
            self.registry.set_state(subscription, DENIED, f"denied by the hub: {reason}" if reason else "denied by the hub")
            subscription.awaiting, subscription.next_action_at = None, now + self.retry_max
            log.warning("websub.denied", feed_url=subscription.feed_url, hub=subscription.hub, reason=reason)
            await self._save(subscription)
            return 200, ""
        if mode != subscription.awaiting or not challenge:
            waiting = subscription.awaiting or "no verification"
            self._refusals.refused(subscription.feed_url, feed_url=subscription.feed_url, mode=mode[:100], reason=f"waiting for {waiting}")
            return 404, ""
        if mode == "unsubscribe":
            self.registry.remove(subscription)
            await self._forget(subscription)
            log.info("websub.unsubscribed", feed_url=subscription.feed_url, hub=subscription.hub)
            return 200, challenge
        lease = min(_seconds(params.get("hub.lease_seconds")) or self.lease_seconds, MAX_LEASE)
        subscription.lease_seconds, subscription.expires_at = lease, now + lease
        subscription.awaiting, subscription.attempts = None, 0
        subscription.next_action_at = now + RENEW_AT * lease
        self.registry.set_state(subscription, ACTIVE, None)
        log.info("websub.active", feed_url=subscription.feed_url, hub=subscription.hub, lease_seconds=lease)
        await self._save(subscription)
        return 200, challenge

    # -- the loop --------------------------------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        """Act on due subscriptions until ``stopping`` is set; a failed round is logged and retried."""
        while not stopping.is_set():
            try:
                await self.act_due()
            except Exception as exc:  # noqa: BLE001 - one failed round must not end subscriptions
                log.error("websub.round.failed", error=error_text(exc), hint="retried in a few seconds")
            self._wake.clear()
            pending = [s.next_action_at for s in self.subscriptions.values() if s.next_action_at is not None]
            delay = min([TICK, *(max(0.0, when - self.clock()) for when in pending)])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)

    async def stop(self) -> None:
        """Cancel the requests in flight (they are sent again at the next start) and write the push counts back."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._refusals.flush()
        for subscription in self.registry.take_dirty():
            await self._save(subscription)

    async def act_due(self) -> None:
        """One round: expire lapsed leases, send every due request, write push counts back."""
        now = self.clock()
        for subscription in list(self.subscriptions.values()):
            if subscription.state == ACTIVE and subscription.expires_at is not None and subscription.expires_at <= now:
                self.registry.set_state(subscription, FAILING, "the lease ran out before a renewal was verified")
                subscription.next_action_at = min(subscription.next_action_at or now, now)
        due = [
            s for s in self.subscriptions.values()
            if s.next_action_at is not None and s.next_action_at <= now and s.feed_url not in self._in_flight
        ]
        for subscription in due:
            self._in_flight.add(subscription.feed_url)
            task = asyncio.create_task(self._request(subscription), name=f"websub {subscription.feed_url}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        for subscription in self.registry.take_dirty():
            await self._save(subscription)

    async def _request(self, subscription: Subscription) -> None:
        """POST one subscribe or unsubscribe; the answer (or the failure) decides what is next."""
        mode = "unsubscribe" if subscription.state == UNSUBSCRIBING else "subscribe"
        try:
            async with self._requests:
                # Saved first: a hub may verify before it answers.
                subscription.awaiting, subscription.next_action_at = mode, None
                await self._save(subscription)
                answer = await self._post(subscription, _form(subscription, mode, self.lease_seconds))
            if 200 <= answer.status < 300:
                self._accepted(subscription, mode)
            else:
                detail = f" {answer.detail}" if answer.detail else ""
                self._failed(subscription, mode, f"the hub answered HTTP {answer.status}{detail}", answer.retry_after)
        except FeedError as exc:
            self._failed(subscription, mode, str(exc), None)
        finally:
            self._in_flight.discard(subscription.feed_url)
        if mode == "subscribe" and subscription.state == UNSUBSCRIBING:
            # The feed left while we asked: unsubscribe now.
            subscription.next_action_at = self.clock()
        if self.registry.held(subscription):
            await self._save(subscription)
        elif mode == "unsubscribe":
            await self._forget(subscription)
        self._wake.set()

    async def _post(self, subscription: Subscription, form: dict[str, str]) -> HubAnswer:
        """POST to the hub, following 307/308 (a 308 moves the subscription's hub for good)."""
        url = subscription.hub
        for _hop in range(MAX_HUB_REDIRECTS + 1):
            answer = await self._hub.post(url, form)
            if answer.status not in (307, 308) or not answer.location:
                return answer
            url = answer.location
            if answer.status == 308:
                log.info("websub.hub.moved", feed_url=subscription.feed_url, hub=subscription.hub, new_hub=url)
                subscription.hub = url
        raise FeedError(f"{subscription.hub}: more than {MAX_HUB_REDIRECTS} redirects", hint="the hub redirects in a loop")

    def _accepted(self, subscription: Subscription, mode: str) -> None:
        if subscription.awaiting is None:
            return  # verified (or denied, with its reason) while we waited for the answer
        subscription.attempts, subscription.last_error = 0, None
        if mode == "subscribe" and subscription.state not in (ACTIVE, UNSUBSCRIBING):
            self.registry.set_state(subscription, PENDING, None)
        # The hub verifies later; should that never come, ask again then.
        subscription.next_action_at = self.clock() + self.retry_max
        log.info("websub.requested", feed_url=subscription.feed_url, hub=subscription.hub, mode=mode)

    def _failed(self, subscription: Subscription, mode: str, error: str, retry_after: float | None) -> None:
        subscription.attempts += 1
        if mode == "unsubscribe" and subscription.attempts >= UNSUBSCRIBE_TRIES:
            log.warning("websub.unsubscribe.abandoned", feed_url=subscription.feed_url, hub=subscription.hub, error=error)
            self.registry.remove(subscription)
            return
        if subscription.state in (PENDING, DENIED):
            self.registry.set_state(subscription, FAILING, error)
        subscription.last_error = error
        backoff = min(self.retry_max, self.retry_initial * 2 ** (subscription.attempts - 1)) * random.uniform(0.9, 1.1)
        subscription.next_action_at = self.clock() + max(backoff, retry_after or 0.0)
        log.warning(
            "websub.request.failed", feed_url=subscription.feed_url, hub=subscription.hub, mode=mode, error=error,
            attempts=subscription.attempts, retry_in=round(subscription.next_action_at - self.clock(), 1),
        )

    # -- bookkeeping ------------------------------------------------------------------------

    def _pushable(self, url: str) -> bool:
        feed = self.registry.feeds.get(url)
        return feed is not None and feed.websub != "off"

    def _unsubscribe(self, subscription: Subscription, why: str) -> None:
        if subscription.state == UNSUBSCRIBING:
            return
        log.info("websub.unsubscribing", feed_url=subscription.feed_url, hub=subscription.hub, reason=why)
        self.registry.set_state(subscription, UNSUBSCRIBING, None)
        # A subscribe verification still on its way is refused from now on.
        subscription.awaiting, subscription.attempts, subscription.next_action_at = None, 0, self.clock()
        self._wake.set()

    async def _forget(self, subscription: Subscription) -> None:
        """Delete ``subscription``'s row, unless a newer subscription of its feed holds it now."""
        if subscription.feed_url not in self.subscriptions:
            await self._store.delete_subscription(subscription.feed_url, subscription.token)

    async def _save(self, subscription: Subscription) -> None:
        subscription.updated_at = self.clock()
        await self._store.save_subscription(subscription)


def _form(subscription: Subscription, mode: str, lease_seconds: float) -> dict[str, str]:
    form = {"hub.mode": mode, "hub.topic": subscription.topic, "hub.callback": subscription.callback}
    if mode == "subscribe":
        form["hub.lease_seconds"] = str(int(lease_seconds))
        form["hub.secret"] = subscription.secret
    return form


def _seconds(value: str | None) -> float | None:
    # ASCII digits only: str.isdigit() takes '²', which float() refuses.
    if value is None or not value.strip().isascii() or not value.strip().isdigit():
        return None
    seconds = float(value.strip())
    return seconds if seconds > 0 else None
