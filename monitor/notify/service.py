"""The notify consumer: alerts and signals from Kafka to each destination, at least once.

How a record travels:

1. The Kafka source hands over a batch of records. Each is decoded (:func:`decode_item`);
   one that is neither an alert nor a signal is skipped, logged (``notify.record.skipped``
   with its topic, partition, offset and reason) and counted, never a crash.
2. For every destination whose filter accepts the item, and that has not had the same
   id within the dedupe window, an entry is written to the state store's outbox: a
   message of its own, or *held* for the destination's next digest. The whole batch is
   one transaction; the dedupe mark is written in it too.
3. Only then does the source commit the batch's offsets: everything up to a committed
   offset is either sent, or durably queued in the state store (so a crash, a restart or
   a rebalance never loses it), or was filtered out.
4. One driver per destination sends its entries through the sender (Apprise), at most
   ``concurrency`` at a time; held entries go out as one digest when it is due (see
   :class:`~monitor.notify.schedule.Policy`). A failed send is retried with doubling
   back-off; after ``max_attempts`` tries the record goes to the dead-letter topic with
   the reason. An entry leaves the outbox only once the destination accepted it (or its
   dead letter was acknowledged). A destination that keeps failing delays nothing but
   its own entries.

The dedupe mark outlives the entry by ``[notify] dedupe_days``: the same id is never
queued twice for one destination in that window, across restarts and rebalances.
What can still repeat: a send whose answer never came (the process died, or the
service timed out while it may have accepted it) is sent again.

Pure: the Kafka source, the state store, the sender, the dead-letter producer and the
clock are given (Protocols below; the adapters implement them).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from monitor.errors import MonitorError, StoreError, error_text
from monitor.log import get_logger
from monitor.notify.config import Destination
from monitor.notify.items import Item, decode_item
from monitor.notify.message import Message, Renderer
from monitor.notify.schedule import Policy
from monitor.observe.notify import NotifyMetrics

__all__ = ["Clock", "Entry", "NewEntry", "NotifyOptions", "NotifyService", "Route", "SystemClock"]

log = get_logger("notify")


class Clock(Protocol):
    def now(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """Wall-clock time (UNIX seconds) and asyncio's sleep."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


@dataclass(frozen=True, slots=True)
class NewEntry:
    """A message to queue for one destination, with the record it came from."""

    destination: str
    key: str
    held: bool
    topic: str
    partition: int
    offset: int
    record_key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    story_id: str | None = None
    article_id: str | None = None


@dataclass(slots=True)
class Entry:
    """A queued message as the state store keeps it."""

    seq: int
    destination: str
    key: str
    held: bool
    queued_at: float
    attempts: int
    next_attempt: float
    topic: str
    partition: int
    offset: int
    record_key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    last_error: str | None = None


class Store(Protocol):
    async def enqueue(self, entries: Sequence[NewEntry], now: float) -> list[bool]: ...
    async def due(self, destination: str, now: float, limit: int, skip: Iterable[int]) -> list[Entry]: ...
    async def held(self, destination: str) -> list[Entry]: ...
    async def hold(self, seqs: Sequence[int]) -> None: ...
    async def done(self, seqs: Sequence[int], destination: str, sent_at: float | None) -> None: ...
    async def retry(self, seqs: Sequence[int], next_attempt: float, error: str) -> None: ...
    async def counts(self) -> dict[str, tuple[int, int, float | None, float | None]]: ...
    async def sent_times(self, destination: str, since: float) -> list[float]: ...
    async def story_sizes(self, story_ids: Sequence[str]) -> dict[str, int]: ...
    async def prune(self, seen_before: float, sends_before: float) -> int: ...


class Sender(Protocol):
    """Delivers one message to one destination."""

    markdown: bool

    async def send(self, message: Message) -> str | None:
        """None when the destination accepted the message, else why it did not."""
        ...


class DeadLetters(Protocol):
    #: The dead-letter topic, for the log lines that send an operator there.
    topic: str

    async def publish(self, entry: Entry, reason: str) -> None:
        """Put ``entry``'s record on the dead-letter topic; raises when Kafka did not take it."""
        ...


class Source(Protocol):
    def batches(self) -> AsyncIterator[list[Any]]:
        """Record batches; no rebalance happens while one is being handled."""
        ...

    def processed(self, record: Any) -> None:
        """``record`` is handled: its offset may be committed."""
        ...


@dataclass(frozen=True)
class NotifyOptions:
    max_attempts: int = 8
    retry_backoff_initial: float = 1.0
    retry_backoff_max: float = 60.0
    concurrency: int = 4
    dedupe_days: float = 7.0
    #: Seconds from the stop signal to exit: sends in flight finish within it.
    shutdown_timeout: float = 10.0
    #: Seconds one send may take in all (Apprise's timeouts are per socket operation: a
    #: service that trickles its answer would hold a send, and its slot, for good).
    send_timeout: float = 120.0
    #: Seconds between two prunes of the dedupe window.
    prune_interval: float = 600.0


@dataclass
class Route:
    """One destination at run time: its config, schedule, renderer and sender."""

    destination: Destination
    sender: Sender
    policy: Policy = field(init=False)
    renderer: Renderer = field(init=False)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: set[int] = field(default_factory=set)
    digest_in_flight: bool = False
    digest_retry_at: float = 0.0
    #: Individual entries waiting (incl. retries), entries held, first held time, next retry.
    pending: int = 0
    held: int = 0
    first_held: float | None = None
    next_attempt: float | None = None
    last_error: str | None = None

    def __post_init__(self) -> None:
        self.policy = self.destination.policy()
        self.renderer = self.destination.renderer(self.sender.markdown)

    @property
    def name(self) -> str:
        return self.destination.name


class NotifyService:
    """Reads a :class:`Source` and drives one sender per destination (see the module docstring).

    About twenty methods in two halves, the intake (consume, handle) and the drivers (one
    task per destination: wait, step, send, digest, retry, dead letter), kept in one class
    because both halves share the store, the entries in flight and the metrics: the
    intake's commit must see what the drivers hold.
    """

    def __init__(
        self,
        routes: Sequence[Route],
        store: Store,
        dead_letters: DeadLetters,
        *,
        options: NotifyOptions | None = None,
        clock: Clock | None = None,
        metrics: NotifyMetrics | None = None,
    ) -> None:
        self.routes = list(routes)
        self.store = store
        self.dead_letters = dead_letters
        self.options = options or NotifyOptions()
        self.clock = clock or SystemClock()
        self.metrics = metrics or NotifyMetrics([r.name for r in self.routes])
        self._stopping = False
        self._drivers: list[asyncio.Task[None]] = []
        self._sends: set[asyncio.Task[None]] = set()
        self.store_failure: str | None = None

    # -- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        """Load what the state store holds (queued entries, recent sends) and start the drivers."""
        counts = await self.store.counts()
        now = self.clock.now()
        for route in self.routes:
            route.pending, route.held, route.first_held, route.next_attempt = counts.get(route.name, (0, 0, None, None))
            rate = route.policy.rate
            if rate is not None:
                route.policy.restore(await self.store.sent_times(route.name, now - rate.period))
            self._update_gauges(route)
            if route.pending or route.held:
                log.info("notify.resume", destination=route.name, pending=route.pending, held=route.held)
        self._drivers = [asyncio.create_task(self._drive(route), name=f"notify-{route.name}") for route in self.routes]
        self._drivers.append(asyncio.create_task(self._prune_loop(), name="notify-prune"))

    async def stop(self) -> None:
        """Start nothing new; wait for sends in flight (within ``shutdown_timeout``); stop the drivers."""
        self._stopping = True
        for route in self.routes:
            route.wake.set()
        if self._sends:
            _done, late = await asyncio.wait(set(self._sends), timeout=self.options.shutdown_timeout)
            if late:
                log.warning(
                    "notify.stop.in_flight",
                    sends=len(late),
                    hint="their entries stay queued and are sent again at the next start",
                )
                # Not waited for any longer: a send that never ends must not hold up the exit.
                for task in late:
                    task.cancel()
        for task in self._drivers:
            task.cancel()
        await asyncio.gather(*self._drivers, *self._sends, return_exceptions=True)

    async def consume(self, source: Source, stop: asyncio.Event) -> None:
        """Handle batches from ``source`` until ``stop`` is set."""
        batches = source.batches()
        try:
            while not stop.is_set():
                nxt = asyncio.ensure_future(anext(batches))
                stopper = asyncio.ensure_future(stop.wait())
                done, _ = await asyncio.wait({nxt, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if nxt not in done:
                    nxt.cancel()
                    await asyncio.gather(nxt, return_exceptions=True)
                    break
                try:
                    batch = nxt.result()
                except StopAsyncIteration:
                    break
                await self.handle(batch, stop)
                for record in batch:
                    source.processed(record)
        finally:
            await batches.aclose()  # type: ignore[attr-defined]

    # -- intake ----------------------------------------------------------------------

    async def handle(self, records: Sequence[Any], stop: asyncio.Event | None = None) -> None:
        """Queue the messages of ``records`` durably (returns once the store committed them)."""
        now = self.clock.now()
        entries: list[NewEntry] = []
        for record in records:
            self.metrics.records.inc()
            item, problem = decode_item(record.topic, record.value, record.headers)
            if item is None:
                self.metrics.skipped.labels(reason=_skip_reason(problem)).inc()
                log.warning(
                    "notify.record.skipped", topic=record.topic, partition=record.partition, offset=record.offset, reason=problem
                )
                continue
            headers = tuple((k, v if isinstance(v, bytes) else str(v).encode()) for k, v in record.headers or ())
            for route in self.routes:
                if route.destination.filter.accepts(item):
                    held = route.policy.digest is not None or route.policy.quiet_at(now)
                    entries.append(NewEntry(
                        route.name, item.key, held, record.topic, record.partition, record.offset,
                        record.key, record.value, headers, item.story_id, item.article_id,
                    ))  # fmt: skip
        if not entries:
            return
        inserted = await self._until_stored(lambda: self.store.enqueue(entries, now), stop)
        by_name = {route.name: route for route in self.routes}
        for entry, new in zip(entries, inserted, strict=True):
            route = by_name[entry.destination]
            if not new:
                self.metrics.duplicates.labels(destination=route.name).inc()
                continue
            if entry.held:
                route.held += 1
                route.first_held = now if route.first_held is None else route.first_held
            else:
                route.pending += 1
                route.next_attempt = now if route.next_attempt is None else min(route.next_attempt, now)
            self._update_gauges(route)
            route.wake.set()

    async def _until_stored(self, operation: Callable[[], Awaitable[Any]], stop: asyncio.Event | None) -> Any:
        """Run a store write until it commits: a failing store (disk full) is retried, the
        batch's offsets stay uncommitted meanwhile."""
        delay = self.options.retry_backoff_initial
        while True:
            try:
                result = await operation()
            except StoreError as exc:
                if self.store_failure is None:
                    log.error("notify.store.failing", error=exc.message, kind=exc.kind, hint=exc.hint)
                self.store_failure = str(exc)
                if stop is not None and stop.is_set():
                    raise
                await self.clock.sleep(delay)
                delay = min(delay * 2, self.options.retry_backoff_max)
                continue
            if self.store_failure is not None:
                log.info("notify.store.recovered")
                self.store_failure = None
            return result

    # -- sending ---------------------------------------------------------------------

    async def _drive(self, route: Route) -> None:
        while not self._stopping:
            route.wake.clear()
            try:
                deadline = await self._step(route)
            except StoreError as exc:
                self.store_failure = str(exc)
                log.error("notify.store.failing", destination=route.name, error=exc.message, kind=exc.kind, hint=exc.hint)
                deadline = self.clock.now() + self.options.retry_backoff_max
            if self._stopping:
                return
            await self._wait(route, deadline)

    async def _wait(self, route: Route, deadline: float | None) -> None:
        """Until woken or ``deadline`` (absolute: the clock may have moved since it was
        computed)."""
        if route.wake.is_set():
            return
        waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(route.wake.wait())}
        if deadline is not None:
            waiters.add(asyncio.ensure_future(self.clock.sleep(deadline - self.clock.now())))
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waiters:
                task.cancel()

    async def _step(self, route: Route) -> float | None:
        """Start what is due; when something else will be (None: nothing is)."""
        now = self.clock.now()
        waits: list[float] = []
        free = self.options.concurrency - len(route.in_flight)
        if route.pending and free > 0 and (route.next_attempt is None or route.next_attempt <= now):
            entries = await self.store.due(route.name, now, free, route.in_flight)
            to_hold = []
            for entry in entries:
                if route.held or route.digest_in_flight or route.policy.holds(now):
                    to_hold.append(entry)
                    continue
                route.policy.record_sent(now)
                self._spawn(route, [entry], self._send_one(route, entry))
            if to_hold:
                await self.store.hold([entry.seq for entry in to_hold])
                route.pending -= len(to_hold)
                route.held += len(to_hold)
                route.first_held = min(route.first_held or now, *(entry.queued_at for entry in to_hold))
                self._update_gauges(route)
                return now  # more may be waiting behind them
            if not entries:
                # Everything left waits for a retry: learn when the next one is due.
                counts = await self.store.counts()
                route.next_attempt = counts.get(route.name, (0, 0, None, None))[3]
        if route.pending and route.next_attempt is not None and route.next_attempt > now:
            waits.append(route.next_attempt)
        if route.held and route.first_held is not None and not route.digest_in_flight:
            due = route.policy.digest_due(route.first_held, now, route.digest_retry_at)
            if due <= now and not route.in_flight:
                entries = await self.store.held(route.name)
                if entries:
                    route.digest_in_flight = True
                    route.policy.record_sent(now)
                    self._spawn(route, entries, self._send_digest(route, entries))
            elif due > now:
                waits.append(due)
        return min(waits) if waits else None

    def _spawn(self, route: Route, entries: list[Entry], work: Awaitable[None]) -> None:
        seqs = [entry.seq for entry in entries]
        route.in_flight.update(seqs)

        async def run() -> None:
            try:
                await work
            except StoreError as exc:
                self.store_failure = str(exc)
                log.error("notify.store.failing", destination=route.name, error=exc.message, kind=exc.kind, hint=exc.hint)
            finally:
                route.in_flight.difference_update(seqs)
                route.wake.set()

        task = asyncio.create_task(run())
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _decode(self, route: Route, entries: Sequence[Entry]) -> list[tuple[Entry, Item, int]]:
        """The entries' items, each with its story's size. An entry this version refuses
        (queued by an earlier one that accepted it) is dead-lettered, never dropped."""
        decoded, refused = [], []
        for entry in entries:
            item, problem = decode_item(entry.topic, entry.value, entry.headers)
            if item is not None:
                decoded.append((entry, item))
            else:
                refused.append((entry, problem))
        if refused:
            await self._outdated(route, refused)
        stories = [item.story_id for _entry, item in decoded if item.story_id]
        sizes = await self.store.story_sizes(stories) if stories else {}
        return [(entry, item, sizes.get(item.story_id, 1) if item.story_id else 1) for entry, item in decoded]

    async def _outdated(self, route: Route, refused: list[tuple[Entry, str]]) -> None:
        """Queued entries this version cannot decode: an earlier version checked them when
        it queued them, and accepted what this one refuses (a record of another version)."""
        for entry, problem in refused:
            log.error(
                "notify.entry.refused", destination=route.name, key=entry.key, topic=entry.topic, partition=entry.partition,
                offset=entry.offset, reason=problem,
                hint=f"queued by an earlier version of news-monitor, which accepted it; it goes to the dead-letter topic "
                f"{self.dead_letters.topic} with its record: read it there (news-monitor tail {self.dead_letters.topic}) "
                "and send it by hand if it matters",
            )  # fmt: skip
            reason = f"{route.name}: queued by an earlier version, refused by this one: {problem}"
            await self._dead_letter(route, [entry], reason)

    async def _unrenderable(self, route: Route, entries: list[Entry], exc: Exception) -> None:
        """Entries the renderer fails on go to the dead-letter topic at once: another
        attempt would fail the same way, and they must not hold up the others."""
        reason = f"{route.name}: the message cannot be rendered ({error_text(exc)})"
        log.error("notify.render.failed", destination=route.name, keys=[e.key for e in entries[:10]], error=error_text(exc))
        await self._dead_letter(route, entries, reason)

    async def _send_one(self, route: Route, entry: Entry) -> None:
        decoded = await self._decode(route, [entry])
        if not decoded:  # dead-lettered by _decode
            return
        [(_entry, item, size)] = decoded
        try:
            message, problem = route.renderer.alert(item, size)
        except Exception as exc:  # noqa: BLE001 - a record no renderer expected (garbage on the topic): dead-lettered
            await self._unrenderable(route, [entry], exc)
            return
        if problem is not None and entry.attempts == 0:
            self.metrics.template_fallbacks.labels(destination=route.name).inc()
            log.warning("notify.template.fallback", destination=route.name, key=item.key, reason=problem)
        started = self.clock.now()
        error = await self._send(route, message)
        if error is None:
            await self.store.done([entry.seq], route.name, started)
            route.pending -= 1
            route.last_error = None
            self.metrics.sent.labels(destination=route.name).inc()
            self.metrics.alerts_sent.labels(destination=route.name).inc()
            self._update_gauges(route)
            return
        await self._failed(route, [entry], error, digest=False)

    async def _send_digest(self, route: Route, entries: list[Entry]) -> None:
        try:
            decoded = await self._decode(route, entries)
            if not decoded:  # every entry dead-lettered by _decode
                return
            entries = [entry for entry, _item, _size in decoded]
            pairs = [(item, size) for _entry, item, size in decoded]
            try:
                message = route.renderer.digest(pairs)
            except Exception as exc:  # noqa: BLE001 - garbage on the topic: its entries leave, the rest go out next
                broken = [entry for entry, item, size in decoded if not _renders(route.renderer, item, size)]
                await self._unrenderable(route, broken or entries, exc)
                return
            started = self.clock.now()
            error = await self._send(route, message) if pairs else None
            if error is None:
                await self.store.done([entry.seq for entry in entries], route.name, started)
                route.held -= len(entries)
                route.first_held = None
                route.last_error = None
                route.digest_retry_at = 0.0
                counts = await self.store.counts()
                route.held, route.first_held = counts.get(route.name, (0, 0, None, None))[1:3]
                self.metrics.sent.labels(destination=route.name).inc()
                self.metrics.digests.labels(destination=route.name).inc()
                self.metrics.alerts_sent.labels(destination=route.name).inc(len(entries))
                log.info("notify.digest.sent", destination=route.name, alerts=len(entries))
                self._update_gauges(route)
                return
            await self._failed(route, entries, error, digest=True)
        finally:
            route.digest_in_flight = False

    async def _send(self, route: Route, message: Message) -> str | None:
        """The sender's answer, or a failure once ``send_timeout`` is over (the send goes on
        in its thread: should the service take it after all, the retry is a repeat)."""
        try:
            return await asyncio.wait_for(route.sender.send(message), self.options.send_timeout)
        except TimeoutError:
            return f"{route.name} did not finish within send_timeout ({self.options.send_timeout:g} s)"

    async def _failed(self, route: Route, entries: list[Entry], error: str, *, digest: bool) -> None:
        now = self.clock.now()
        route.last_error = error
        self.metrics.failed.labels(destination=route.name).inc()
        attempts = max(entry.attempts for entry in entries) + 1
        spent = [entry for entry in entries if entry.attempts + 1 >= self.options.max_attempts]
        again = [entry for entry in entries if entry.attempts + 1 < self.options.max_attempts]
        delay = self._backoff(attempts)
        log.warning(
            "notify.send.failed", destination=route.name, what="digest" if digest else "alert", alerts=len(entries),
            attempt=attempts, max_attempts=self.options.max_attempts, error=error,
            retry_in=round(delay, 3) if again else None,
        )  # fmt: skip
        if again:
            await self.store.retry([entry.seq for entry in again], now + delay, error)
            self.metrics.retried.labels(destination=route.name).inc(len(again))
            if digest:
                route.digest_retry_at = now + delay
            else:
                route.next_attempt = min(route.next_attempt or now + delay, now + delay)
        if spent:
            what = "digest" if digest else "message"
            await self._dead_letter(
                route, spent, f"{route.name}: {what} failed {self.options.max_attempts} times (max_attempts): {error}"
            )

    async def _dead_letter(self, route: Route, entries: list[Entry], reason: str) -> None:
        try:
            for entry in entries:
                await self.dead_letters.publish(entry, reason)
        except MonitorError as exc:
            # Kept: tried again (straight to the dead-letter topic) after the longest back-off.
            log.error("notify.dead_letter.failed", destination=route.name, error=str(exc), alerts=len(entries))
            now = self.clock.now()
            await self.store.retry([entry.seq for entry in entries], now + self.options.retry_backoff_max, reason)
            if not entries[0].held:
                route.next_attempt = min(route.next_attempt or now, now + self.options.retry_backoff_max)
            else:
                route.digest_retry_at = now + self.options.retry_backoff_max
            return
        await self.store.done([entry.seq for entry in entries], route.name, None)
        held = sum(1 for entry in entries if entry.held)
        route.held -= held
        route.pending -= len(entries) - held
        if route.held <= 0:
            route.held, route.first_held = 0, None
        self.metrics.dead_lettered.labels(destination=route.name).inc(len(entries))
        log.error(
            "notify.dead_lettered", destination=route.name, alerts=len(entries), keys=[e.key for e in entries[:10]], reason=reason
        )
        self._update_gauges(route)

    def _backoff(self, attempts: int) -> float:
        return min(self.options.retry_backoff_initial * 2.0 ** max(0, attempts - 1), self.options.retry_backoff_max)

    def _update_gauges(self, route: Route) -> None:
        self.metrics.pending.labels(destination=route.name).set(route.pending)
        self.metrics.queued.labels(destination=route.name).set(route.held)

    async def _prune_loop(self) -> None:
        while not self._stopping:
            now = self.clock.now()
            longest_rate = max((r.policy.rate.period for r in self.routes if r.policy.rate is not None), default=0.0)
            try:
                removed = await self.store.prune(now - self.options.dedupe_days * 86400, now - longest_rate)
                if removed:
                    log.info("notify.dedupe.pruned", removed=removed)
            except StoreError as exc:
                log.error("notify.store.failing", error=exc.message, kind=exc.kind, hint=exc.hint)
            await self.clock.sleep(self.options.prune_interval)

    # -- state for people ------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        """One line per destination: what the status page and ``/status.json`` show."""
        rows = []
        for route in self.routes:
            d = route.destination
            rows.append({
                "destination": route.name,
                "sent": self.metrics.value("sent", route.name),
                "alerts_sent": self.metrics.value("alerts_sent", route.name),
                "failed": self.metrics.value("failed", route.name),
                "retried": self.metrics.value("retried", route.name),
                "dead_lettered": self.metrics.value("dead_lettered", route.name),
                "pending": route.pending,
                "queued_in_digest": route.held,
                "digest": d.digest,
                "rate_limit": d.rate_limit,
                "quiet_hours": d.quiet_hours,
                "last_error": route.last_error,
            })  # fmt: skip
        return rows


def _renders(renderer: Renderer, item: Item, size: int) -> bool:
    """Whether ``item`` renders on its own (to find the one a digest fails on)."""
    try:
        renderer.digest([(item, size)])
    except Exception:  # noqa: BLE001 - the question is whether it raises at all
        return False
    return True


def _skip_reason(problem: str) -> str:
    """A bounded label for why a record was skipped."""
    if problem.startswith("empty"):
        return "empty"
    if problem.startswith("not JSON"):
        return "not_json"
    if "schema_version" in problem or problem.startswith("ce_type"):
        return "unsupported_version"
    return "invalid"
