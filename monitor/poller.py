"""The scheduler loop: every feed polled when it is due, within the concurrency limits.

A fixed set of ``[feeds] concurrency`` pollers drains a queue of due feeds: the global
limit without a task, a semaphore wait and a wake-up per poll for every due feed. Each
host has a line: a feed whose host already has ``[feeds] per_host`` polls in flight
waits in that host's line, and the poller that finishes a poll of a host takes the next
feed in its line itself, so a busy host never holds pollers other hosts could use.

After each poll the feed is rescheduled from what the poll said
(:func:`~monitor.feeds.schedule.next_interval`). A reload changes the feed list in place
(:meth:`Poller.apply_feeds`): added feeds are polled at once, removed ones no more,
changed ones with their new settings from their next poll.

A feed whose WebSub subscription is active is polled at ``[websub] fallback_interval``
(:attr:`Poller.push_interval` says which), and as usual again as soon as it is not
(:meth:`Poller.push_changed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from monitor.errors import PublishError, StoreError, error_text
from monitor.feeds.schedule import Schedule, earliest_poll, next_interval
from monitor.feeds.state import FeedState
from monitor.lifecycle import Shutdown
from monitor.log import get_logger
from monitor.model import Feed
from monitor.observe.observer import Observer
from monitor.pipeline import Pipeline, PollReport
from monitor.settings import FeedsSettings

__all__ = ["Poller"]

log = get_logger("worker")


class Poller:
    """Polls the feeds: the due queue, the pollers, the per-host lines, rescheduling.

    Those share one state (the due queue, the host counts and lines, the busy pollers),
    hence one class of about fifteen methods.
    """

    def __init__(self, feeds: list[Feed], options: FeedsSettings, observer: Observer, shutdown: Shutdown) -> None:
        self.options = options
        self.observer = observer
        self.shutdown = shutdown
        #: Feed url -> feed, as polled now; changed in place by a reload (pollers hold it).
        self.feeds: dict[str, Feed] = {feed.url: feed for feed in feeds}
        self.schedule = Schedule(jitter=options.jitter)
        self.pipeline: Pipeline | None = None
        #: Set when the loop must look at the schedule again before its wait is over (a feed
        #: was rescheduled earlier than the loop's wake-up time, or a stop).
        self._wake = asyncio.Event()
        self._sleeping_until = float("inf")
        #: Feeds due and waiting for a poller, in the order they fell due (made per run).
        self._ready: asyncio.Queue[str] = asyncio.Queue()
        #: Polls in flight per host, and the due feeds of hosts at their ``per_host`` limit.
        self._host_busy: Counter[str] = Counter()
        self._host_waiting: dict[str, deque[str]] = {}
        #: Feed url -> host, so a poll does not parse its url again.
        self._hosts: dict[str, str] = {}
        #: Pollers inside a poll right now (the rest wait for a due feed).
        self._busy: set[asyncio.Task[None]] = set()
        #: Feed url -> set when its poll in flight ends (see :meth:`wait_polls`).
        self._polling: dict[str, asyncio.Event] = {}
        #: Feed url -> its polling interval while pushes reach it (None: poll as usual).
        self.push_interval: Callable[[str], float | None] = lambda _url: None

    def wake(self) -> None:
        """Make the loop look at the schedule (and at a stop) now."""
        self._wake.set()

    async def run_forever(self, pipeline: Pipeline) -> None:
        """Poll every feed now, then each when it is due, until a stop."""
        self.pipeline = pipeline
        self._schedule_first_polls(self._active(list(self.feeds.values())))
        self._ready = asyncio.Queue()
        pollers = self._start_pollers(reschedule=True)
        try:
            while not self.shutdown.asked:
                await self._sleep_until_due()
                if self.shutdown.asked:
                    break
                for url in self.schedule.pop_due(time.monotonic()):
                    self._ready.put_nowait(url)
        finally:
            await self._stop_pollers(pollers)

    async def run_once(self, pipeline: Pipeline) -> None:
        """Poll every feed once (``run --once``); a stop gives polls in flight what is left
        of the shutdown deadline, as in the daemon."""
        self.pipeline = pipeline
        self._ready = asyncio.Queue()
        for feed in self._active(list(self.feeds.values())):
            self._ready.put_nowait(feed.url)
        pollers = self._start_pollers(reschedule=False, exit_when_idle=True)
        every_poll = asyncio.gather(*pollers)
        stop = asyncio.ensure_future(self.shutdown.stopping.wait())
        waiting: set[asyncio.Future[Any]] = {every_poll, stop}
        await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        stop.cancel()
        if not every_poll.done():
            await self._stop_pollers(pollers)
        await asyncio.gather(every_poll, return_exceptions=True)

    def apply_feeds(self, feeds: list[Feed]) -> tuple[list[Feed], list[str], list[Feed]]:
        """Poll ``feeds`` from now on: new ones at once, removed ones no more, changed ones
        with their new settings from their next poll (sooner when their interval shrank).
        Returns (added, removed urls, changed)."""
        previous = dict(self.feeds)
        wanted = {feed.url: feed for feed in feeds}
        added = [feed for url, feed in wanted.items() if url not in previous]
        removed = [url for url in previous if url not in wanted]
        changed = [feed for url, feed in wanted.items() if url in previous and previous[url] != feed]
        self.feeds.clear()
        self.feeds.update(wanted)
        for url in removed:
            self.schedule.remove(url)
        now = time.monotonic()
        for feed in changed:
            due = self.schedule.due_at(feed.url)
            if due is not None and due > now + feed.interval:
                self.schedule.set(feed.url, now + feed.interval)
        if self.pipeline is not None:
            self._schedule_first_polls(self._active(added))
        self._wake.set()
        return added, removed, changed

    async def wait_polls(self, urls: Iterable[str], timeout: float) -> int:
        """Wait up to ``timeout`` s for the polls in flight of ``urls`` to end (feeds a poller
        hands over); returns how many are still in flight."""
        pending = [event for event in map(self._polling.get, urls) if event is not None]
        if pending:
            waits = [asyncio.ensure_future(event.wait()) for event in pending]
            _done, left = await asyncio.wait(waits, timeout=timeout)
            for wait in left:
                wait.cancel()
        return sum(not event.is_set() for event in pending)

    def push_changed(self, url: str, active: bool) -> None:
        """A feed's push subscription became active (polled at the fallback interval from its
        next poll on) or stopped being so: then its next poll comes within its own interval."""
        feed = self.feeds.get(url)
        if active or feed is None:
            return
        due = self.schedule.due_at(url)
        now = time.monotonic()
        if due is not None and due > now + feed.interval:
            self.schedule.set(url, now + feed.interval)
            self._wake.set()

    def stored_states(self, feeds: list[Feed]) -> list[FeedState]:
        """The cached states of ``feeds`` (those polled in an earlier run, or before)."""
        if self.pipeline is None:
            return []
        peek = self.pipeline.feed_states.peek
        return [state for state in map(peek, (feed.url for feed in feeds)) if state is not None]

    # -- the loop ----------------------------------------------------------------------

    async def _sleep_until_due(self) -> None:
        self._wake.clear()
        next_time = self.schedule.next_time()
        delay = 1.0 if next_time is None else max(0.0, next_time - time.monotonic())
        self._sleeping_until = time.monotonic() + delay
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=delay)
        self._sleeping_until = float("inf")

    def _active(self, feeds: list[Feed]) -> list[Feed]:
        """The feeds to poll: all but those a 410 Gone disabled (logged as skipped)."""
        assert self.pipeline is not None
        active = []
        for feed in feeds:
            state = self.pipeline.feed_states.peek(feed.url)
            if state is not None and state.disabled:
                hint = "the feed is disabled; remove it from the feed list"
                log.warning("feed.skipped", feed_url=feed.url, reason=state.disabled, hint=hint)
                continue
            active.append(feed)
        return active

    def _schedule_first_polls(self, feeds: list[Feed]) -> None:
        """Schedule the first poll of each feed, spread so thousands never fire at once."""
        shortest = min((feed.interval for feed in feeds), default=self.options.interval)
        self.schedule.start([feed.url for feed in feeds], time.monotonic(), window=max(1.0, shortest))

    def _start_pollers(self, *, reschedule: bool, exit_when_idle: bool = False) -> list[asyncio.Task[None]]:
        return [
            asyncio.create_task(self._poller(reschedule=reschedule, exit_when_idle=exit_when_idle), name=f"poller {n}")
            for n in range(self.options.concurrency)
        ]

    async def _stop_pollers(self, pollers: list[asyncio.Task[None]]) -> None:
        """Let polls in flight finish (their alerts reach the outbox and the queue); idle pollers just end."""
        for task in pollers:
            if task not in self._busy:
                task.cancel()
        busy = [task for task in pollers if not task.done()]
        if busy:
            # Within the shutdown deadline: a poll blocked by back-pressure (broker down) may
            # be cancelled; its alerts are in the outbox already.
            await self.shutdown.unless_stopping_now(asyncio.wait(
                busy,
                timeout=min(self.options.timeout + self.options.parse_timeout, self.shutdown.remaining()),
            ))
        for task in pollers:
            task.cancel()
        await asyncio.gather(*pollers, return_exceptions=True)

    # -- one poller --------------------------------------------------------------------

    async def _poller(self, *, reschedule: bool, exit_when_idle: bool = False) -> None:
        """Poll due feeds one at a time, keeping each host under ``[feeds] per_host``."""
        ready = self._ready
        while not self.shutdown.asked:
            if exit_when_idle:
                if ready.empty():
                    return
                url = ready.get_nowait()
            else:
                url = await ready.get()
            if url not in self.feeds:
                continue  # removed by a reload while it waited
            host = self._hosts.get(url)
            if host is None:
                host = self._hosts[url] = urlsplit(url).hostname or "<local>"
            if self._host_busy[host] >= self.options.per_host:
                self._host_waiting.setdefault(host, deque()).append(url)
                continue
            await self._poll_host(host, url, reschedule)

    async def _poll_host(self, host: str, url: str, reschedule: bool) -> None:
        """Poll ``url``, then the feeds waiting in its host's line, one after the other."""
        me = asyncio.current_task()
        assert me is not None
        self._host_busy[host] += 1
        self._busy.add(me)
        try:
            while True:
                feed = self.feeds.get(url)
                if feed is not None:  # None: removed by a reload while it waited
                    await self._poll_guarded(feed, reschedule)
                waiting = self._host_waiting.get(host)
                if not waiting or self.shutdown.asked:
                    break
                url = waiting.popleft()
        finally:
            self._busy.discard(me)
            self._host_busy[host] -= 1

    async def _poll_guarded(self, feed: Feed, reschedule: bool) -> None:
        """One poll; a bug in it is logged and the feed tried again later, and the poller lives on."""
        try:
            report = await self._poll(feed)
            if reschedule:
                self._reschedule(feed, report)
        except PublishError as exc:
            # A poller's articles could not reach Kafka: its feed's state did not advance,
            # so the next poll fetches the same items again (docs/scaling.md).
            log.warning("feed.poll.publish_failed", feed_url=feed.url, error=str(exc))
            if reschedule and not self.shutdown.asked and feed.url in self.feeds:
                self.schedule.reschedule(feed.url, time.monotonic(), feed.interval)
        except StoreError as exc:
            # Not a bug: the store said why (state.store.failing) and readiness reports it.
            # Nothing this poll failed to commit was recorded as seen: the next poll retries it.
            log.warning("feed.poll.store_failed", feed_url=feed.url, kind=exc.kind, error=exc.message)
            self.observer.poll_failed(feed.url, exc)
            if reschedule and not self.shutdown.asked:
                self.schedule.reschedule(feed.url, time.monotonic(), feed.interval)
        except Exception as exc:  # one poll's bug must not end a poller (and a share of polling)
            log.exception("feed.poll.crashed", feed_url=feed.url, error=error_text(exc), hint="a bug: please report it")
            self.observer.poll_crashed(feed.url, error_text(exc))
            if reschedule and not self.shutdown.asked and feed.url in self.feeds:
                self.schedule.reschedule(feed.url, time.monotonic(), feed.interval)

    async def _poll(self, feed: Feed) -> PollReport:
        assert self.pipeline is not None
        done = self._polling[feed.url] = asyncio.Event()
        try:
            report = await self.pipeline.poll(feed)
        finally:
            done.set()
            if self._polling.get(feed.url) is done:
                del self._polling[feed.url]
        await self.observer.poll_finished(report)
        return report

    def _reschedule(self, feed: Feed, report: PollReport) -> None:
        """Schedule the feed's next poll from what this one said."""
        if report.status == "gone" or self.shutdown.asked:
            return
        # A reload during the poll may have removed the feed, or changed its settings.
        current = self.feeds.get(feed.url)
        if current is None:
            return
        options = self.options
        interval = next_interval(
            current.interval,
            report.outcome,
            min_interval=min(options.effective_min_interval, current.interval),
            max_interval=options.max_interval,
        )
        pushed = self.push_interval(current.url)
        if pushed is not None:
            # Pushes bring the news; the poll is the safety net.
            interval = max(interval, pushed)
        now = time.monotonic()
        when = self.schedule.reschedule(current.url, now, interval, not_before=earliest_poll(report.outcome))
        if when < self._sleeping_until:
            # The loop sleeps until a later feed is due: without this a 1 s feed among
            # 300 s feeds would wait for the next of those.
            self._wake.set()
        next_poll = time.time() + (when - now)
        assert self.pipeline is not None
        # In memory only: written to the store with the next batched feed-state flush.
        self.pipeline.feed_states.note_schedule(current.url, next_poll, interval)
        self.observer.feed_scheduled(current.url, next_poll)
