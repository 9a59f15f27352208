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

:class:`PushInbox` takes what hubs push: it checks the token and ``X-Hub-Signature``,
queues a good body for the pipeline (answered at once) and counts the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field

from monitor.errors import FeedError
from monitor.log import get_logger
from monitor.model import Feed
from monitor.websub.discovery import PushLinks
from monitor.websub.signature import check_signature
from monitor.websub.subscriptions import (
    ACTIVE,
    DENIED,
    FAILING,
    NONE,
    PENDING,
    PUSH_STATES,
    UNSUBSCRIBING,
    HubAnswer,
    HubClient,
    Subscription,
    SubscriptionStore,
)

__all__ = ["RENEW_AT", "PushInbox", "PushStats", "PushVerdict", "Subscriber", "describe"]

log = get_logger("websub")

#: Share of a granted lease after which the subscription is renewed.
RENEW_AT = 0.8
#: 307/308 hops followed for one request.
MAX_HUB_REDIRECTS = 5
#: Failed unsubscribe requests after which the row is dropped anyway.
UNSUBSCRIBE_TRIES = 5
#: Requests to hubs in flight at once.
HUB_CONCURRENCY = 8
#: Longest sleep of the subscriber's loop (it also writes push counts back then).
TICK = 5.0


class Subscriber:
    """Every subscription of one process and its lifecycle (see the module docstring).

    The lookups the pipeline, the poller, the listener and the status need (by feed, by
    token, the counts) sit beside the lifecycle, on the same two dicts: hence about
    twenty methods.
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
    ) -> None:
        self._store = store
        self._hub = hub
        self.callback_base = callback_base if callback_base.endswith("/") else callback_base + "/"
        self.lease_seconds = lease_seconds
        self.fallback_interval = fallback_interval
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.clock = clock
        self.feeds: dict[str, Feed] = {}
        self.subscriptions: dict[str, Subscription] = {}
        self._by_token: dict[str, Subscription] = {}
        #: Feeds whose links a poll has reported this run.
        self._checked: set[str] = set()
        #: Feeds whose push counts changed since the last write-back.
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._requests = asyncio.Semaphore(HUB_CONCURRENCY)
        self._in_flight: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        #: Called with a feed url when its subscription turns active (True) or stops being so (False).
        self.listeners: list[Callable[[str, bool], None]] = []

    # -- the feed list ------------------------------------------------------------------

    async def load(self, feeds: Iterable[Feed]) -> None:
        """Take the stored subscriptions; those not known to be in force are asked for again now."""
        now = self.clock()
        for subscription in await self._store.load_subscriptions():
            callback = self.callback_base + subscription.token
            if subscription.callback != callback and subscription.state != UNSUBSCRIBING:
                # The public address changed: the hub must be told the new one.
                subscription.callback, subscription.next_action_at = callback, now
            if subscription.state == PENDING or (subscription.state == ACTIVE and (subscription.expires_at or 0) <= now):
                subscription.next_action_at = now
            self._add(subscription)
        self.set_feeds(feeds)
        log.info("websub.loaded", subscriptions=len(self.subscriptions), states=dict(self.counts()))

    def set_feeds(self, feeds: Iterable[Feed]) -> None:
        """Follow the feed list: unsubscribe from removed feeds and those set to ``websub = "off"``."""
        previous, self.feeds = self.feeds, {feed.url: feed for feed in feeds}
        for url, feed in self.feeds.items():
            if feed.websub != "off" and url in previous and previous[url].websub == "off":
                self._checked.discard(url)
        for subscription in list(self.subscriptions.values()):
            listed = self.feeds.get(subscription.feed_url)
            if listed is None or listed.websub == "off":
                self._unsubscribe(subscription, "the feed left the list" if listed is None else "websub is off for the feed")

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
            self._remove(subscription)
        token = secrets.token_urlsafe(32)
        self._add(
            Subscription(
                feed_url=feed.url, hub=links.hub, topic=links.topic, token=token, secret=secrets.token_hex(32),
                callback=self.callback_base + token, state=PENDING, next_action_at=self.clock(), updated_at=self.clock(),
            )
        )
        log.info("websub.hub.found", feed_url=feed.url, hub=links.hub, topic=links.topic)
        self._wake.set()

    def push_interval(self, url: str) -> float | None:
        """The polling interval of a feed whose subscription is active (None: poll as usual)."""
        subscription = self.subscriptions.get(url)
        return self.fallback_interval if subscription is not None and subscription.state == ACTIVE else None

    def for_token(self, token: str) -> Subscription | None:
        return self._by_token.get(token)

    def pushed(self, subscription: Subscription, now: float) -> None:
        """Count a push accepted for ``subscription`` (written back within :data:`TICK` seconds)."""
        subscription.pushes += 1
        subscription.last_push_at = now
        self._dirty.add(subscription.feed_url)

    def counts(self) -> Counter[str]:
        """Subscriptions by state (every state present, ``none`` for feeds without one)."""
        counts: Counter[str] = Counter(dict.fromkeys(PUSH_STATES, 0))
        counts.update(s.state for s in self.subscriptions.values())
        counts[NONE] = sum(1 for url in self.feeds if url not in self.subscriptions)
        return counts

    def describe(self, url: str) -> dict[str, object]:
        """A feed's push state as the status page, ``status.json`` and ``news-monitor status`` show it."""
        subscription = self.subscriptions.get(url)
        if subscription is None:
            return {"state": NONE, "until": None, "last_push": None, "pushes": 0, "hub": None, "error": None}
        return describe(subscription)

    # -- verification of intent ----------------------------------------------------------

    async def verify(self, token: str, params: Mapping[str, str]) -> tuple[int, str]:
        """Answer a hub's verification GET: (HTTP status, body)."""
        subscription = self._by_token.get(token)
        mode, topic, challenge = params.get("hub.mode", ""), params.get("hub.topic"), params.get("hub.challenge", "")
        if subscription is None or topic != subscription.topic:
            log.warning("websub.verify.refused", mode=mode, reason="unknown token or topic")
            return 404, ""
        now = self.clock()
        if mode == "denied":
            reason = params.get("hub.reason", "")[:500]
            self._set(subscription, DENIED, f"denied by the hub: {reason}" if reason else "denied by the hub")
            subscription.awaiting, subscription.next_action_at = None, now + self.retry_max
            log.warning("websub.denied", feed_url=subscription.feed_url, hub=subscription.hub, reason=reason)
            await self._save(subscription)
            return 200, ""
        if mode != subscription.awaiting or not challenge:
            log.warning("websub.verify.refused", feed_url=subscription.feed_url, mode=mode, reason=f"waiting for {subscription.awaiting}")
            return 404, ""
        if mode == "unsubscribe":
            self._remove(subscription)
            await self._store.delete_subscription(subscription.feed_url)
            log.info("websub.unsubscribed", feed_url=subscription.feed_url, hub=subscription.hub)
            return 200, challenge
        lease = _seconds(params.get("hub.lease_seconds")) or self.lease_seconds
        subscription.lease_seconds, subscription.expires_at = lease, now + lease
        subscription.awaiting, subscription.attempts = None, 0
        subscription.next_action_at = now + RENEW_AT * lease
        self._set(subscription, ACTIVE, None)
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
                log.error("websub.round.failed", error=f"{type(exc).__name__}: {exc}", hint="retried in a few seconds")
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
        for url in list(self._dirty):
            self._dirty.discard(url)
            if url in self.subscriptions:
                await self._save(self.subscriptions[url])

    async def act_due(self) -> None:
        """One round: expire lapsed leases, send every due request, write push counts back."""
        now = self.clock()
        for subscription in list(self.subscriptions.values()):
            if subscription.state == ACTIVE and subscription.expires_at is not None and subscription.expires_at <= now:
                self._set(subscription, FAILING, "the lease ran out before a renewal was verified")
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
        for url in list(self._dirty):
            self._dirty.discard(url)
            if url in self.subscriptions:
                await self._save(self.subscriptions[url])

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
        if self.subscriptions.get(subscription.feed_url) is subscription:
            await self._save(subscription)
        elif mode == "unsubscribe":
            await self._store.delete_subscription(subscription.feed_url)
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
        subscription.attempts, subscription.last_error = 0, None
        if subscription.awaiting is None:
            return  # verified while we waited for the answer
        if mode == "subscribe" and subscription.state != ACTIVE:
            self._set(subscription, PENDING, None)
        # The hub verifies later; should that never come, ask again then.
        subscription.next_action_at = self.clock() + self.retry_max
        log.info("websub.requested", feed_url=subscription.feed_url, hub=subscription.hub, mode=mode)

    def _failed(self, subscription: Subscription, mode: str, error: str, retry_after: float | None) -> None:
        subscription.attempts += 1
        if mode == "unsubscribe" and subscription.attempts >= UNSUBSCRIBE_TRIES:
            log.warning("websub.unsubscribe.abandoned", feed_url=subscription.feed_url, hub=subscription.hub, error=error)
            self._remove(subscription)
            return
        if subscription.state in (PENDING, DENIED):
            self._set(subscription, FAILING, error)
        subscription.last_error = error
        backoff = min(self.retry_max, self.retry_initial * 2 ** (subscription.attempts - 1)) * random.uniform(0.9, 1.1)
        subscription.next_action_at = self.clock() + max(backoff, retry_after or 0.0)
        log.warning(
            "websub.request.failed", feed_url=subscription.feed_url, hub=subscription.hub, mode=mode, error=error,
            attempts=subscription.attempts, retry_in=round(subscription.next_action_at - self.clock(), 1),
        )

    # -- bookkeeping ------------------------------------------------------------------------

    def _pushable(self, url: str) -> bool:
        feed = self.feeds.get(url)
        return feed is not None and feed.websub != "off"

    def _unsubscribe(self, subscription: Subscription, why: str) -> None:
        if subscription.state == UNSUBSCRIBING:
            return
        log.info("websub.unsubscribing", feed_url=subscription.feed_url, hub=subscription.hub, reason=why)
        self._set(subscription, UNSUBSCRIBING, None)
        subscription.attempts, subscription.next_action_at = 0, self.clock()
        self._wake.set()

    def _set(self, subscription: Subscription, state: str, error: str | None) -> None:
        was_active = subscription.state == ACTIVE
        subscription.state, subscription.last_error, subscription.updated_at = state, error, self.clock()
        if was_active != (state == ACTIVE):
            for listener in self.listeners:
                listener(subscription.feed_url, state == ACTIVE)

    def _add(self, subscription: Subscription) -> None:
        self.subscriptions[subscription.feed_url] = subscription
        self._by_token[subscription.token] = subscription

    def _remove(self, subscription: Subscription) -> None:
        if subscription.state == ACTIVE:
            self._set(subscription, UNSUBSCRIBING, None)
        if self.subscriptions.get(subscription.feed_url) is subscription:
            del self.subscriptions[subscription.feed_url]
        self._by_token.pop(subscription.token, None)

    async def _save(self, subscription: Subscription) -> None:
        subscription.updated_at = self.clock()
        await self._store.save_subscription(subscription)


def describe(subscription: Subscription) -> dict[str, object]:
    """One subscription as people see it: its state, active until when, its last push."""
    return {
        "state": subscription.state,
        "until": subscription.expires_at if subscription.state == ACTIVE else None,
        "last_push": subscription.last_push_at,
        "pushes": subscription.pushes,
        "hub": subscription.hub,
        "error": subscription.last_error,
    }


def _form(subscription: Subscription, mode: str, lease_seconds: float) -> dict[str, str]:
    form = {"hub.mode": mode, "hub.topic": subscription.topic, "hub.callback": subscription.callback}
    if mode == "subscribe":
        form["hub.lease_seconds"] = str(int(lease_seconds))
        form["hub.secret"] = subscription.secret
    return form


def _seconds(value: str | None) -> float | None:
    if value is None or not value.strip().isdigit():
        return None
    seconds = float(value.strip())
    return seconds if seconds > 0 else None


# -- pushes ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PushVerdict:
    """What the listener answers a push: the HTTP status and why."""

    status: int
    reason: str


@dataclass
class PushStats:
    """Callback requests by outcome (read by ``/metrics``)."""

    outcomes: Counter[str] = field(default_factory=Counter)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] += 1


#: Deliver one accepted push: (feed, body, content type, received at) -> done.
Deliver = Callable[[Feed, bytes, "str | None", float], Awaitable[None]]


class PushInbox:
    """Pushes checked (token, signature) and queued for the pipeline; see the module docstring."""

    def __init__(self, subscriber: Subscriber, deliver: Deliver, *, queue_size: int, workers: int = 4) -> None:
        self.subscriber = subscriber
        self.stats = PushStats()
        self._deliver = deliver
        self._queue: asyncio.Queue[tuple[Feed, bytes, str | None, float]] = asyncio.Queue(maxsize=queue_size)
        self._workers = workers

    def known(self, token: str) -> bool:
        return self.subscriber.for_token(token) is not None

    def push(self, token: str, body: bytes, signature: str | None, content_type: str | None) -> PushVerdict:
        """Check one pushed body; queue it when good. Unsigned and badly signed bodies are
        answered 202 and ignored, as the spec asks (so a forger learns nothing)."""
        subscription = self.subscriber.for_token(token)
        if subscription is None:
            self.stats.count("unknown_token")
            return PushVerdict(404, "unknown_token")
        verdict = check_signature(signature, body, subscription.secret)
        if verdict != "ok":
            outcome = "unsigned" if verdict == "unsigned" else "bad_signature"
            self.stats.count(outcome)
            log.warning("websub.push.ignored", feed_url=subscription.feed_url, reason=outcome)
            return PushVerdict(202, outcome)
        feed = self.subscriber.feeds.get(subscription.feed_url)
        if feed is None:
            self.stats.count("unknown_token")
            return PushVerdict(404, "unknown_token")
        now = self.subscriber.clock()
        try:
            self._queue.put_nowait((feed, body, content_type, now))
        except asyncio.QueueFull:
            self.stats.count("busy")
            return PushVerdict(503, "busy")
        self.subscriber.pushed(subscription, now)
        self.stats.count("accepted")
        return PushVerdict(202, "accepted")

    async def run(self) -> None:
        """Hand queued pushes to the pipeline, ``workers`` at a time, until cancelled."""
        await asyncio.gather(*(self._work() for _ in range(self._workers)))

    async def _work(self) -> None:
        while True:
            feed, body, content_type, received = await self._queue.get()
            try:
                await self._deliver(feed, body, content_type, received)
            except Exception as exc:  # one push's bug must not stop the others
                error = f"{type(exc).__name__}: {exc}"
                log.exception("websub.push.crashed", feed_url=feed.url, error=error, hint="a bug: please report it")
            finally:
                self._queue.task_done()

    async def drain(self) -> None:
        """Wait until every queued push went through the pipeline."""
        await self._queue.join()
