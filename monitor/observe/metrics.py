"""What the daemon tells its operators: Prometheus metrics, feed health, readiness, and the
data behind the status page, all fed from the pipeline's existing seams.

The :class:`Observer` is the one place those seams report to:

* :meth:`Observer.poll_finished` takes each :class:`~monitor.pipeline.PollReport`
  (status, latency, new and duplicate articles, alerts, errors);
* :meth:`Observer.alert_published` / :meth:`Observer.publish_failed` are
  :class:`~monitor.delivery.Delivery`'s ``on_published`` / ``on_error`` callbacks;
* :meth:`Observer.rules_loaded`, :meth:`Observer.rules_reloaded` and
  :meth:`Observer.rules_reload_failed` are called by whoever (re)loads the rules;
* :meth:`Observer.broker_checked` and :meth:`Observer.sweep` by the worker's periodic check.

Feed-health changes become events on the ``[health] topic``: each is written to the
durable outbox and handed to delivery by a background task, so a full delivery queue
(broker away) never blocks polling.

Each Observer has its own :class:`prometheus_client.CollectorRegistry` (not the global
one), so several monitors can live in one process (tests do).
"""

from __future__ import annotations

import asyncio
import math
import time
from bisect import bisect_left
from collections import Counter, deque
from itertools import accumulate
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

from prometheus_client import CollectorRegistry, Counter as PromCounter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from monitor.errors import StoreError
from monitor.feeds.health import OK, FeedHealthTracker, FeedQuery, FeedRow, HealthPolicy, Transition, health_record
from monitor.log import get_logger, redact
from monitor.model import Alert, Feed, Record, Rule
from monitor.settings import HealthSettings

__all__ = ["AlertRow", "Observer", "RuleRow", "StatusSnapshot", "status_class"]

log = get_logger("observer")

PREFIX = "news_monitor"

#: Seconds; feeds answer in tens of milliseconds to tens of seconds.
FETCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Seconds from queueing to Kafka's ack; minutes while the broker is away.
PUBLISH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class _Store(Protocol):
    #: The store's fault while it is failing (see monitor.adapters.store), else None.
    failure: Any

    async def all_feed_states(self) -> list[Any]: ...
    async def set_feed_health(self, url: str, health: str) -> None: ...
    async def enqueue(self, records: list[Record]) -> None: ...


class _Delivery(Protocol):
    healthy: bool

    @property
    def pending(self) -> int: ...

    async def submit(self, records: list[Record]) -> None: ...


class _RuleSet(Protocol):
    version: str
    rules: Sequence[Rule]


def status_class(report: Any) -> str:
    """The class of a poll's outcome for the ``polls`` metric: ``2xx``, ``3xx`` (304 included),
    ``4xx``, ``5xx``, ``network`` (no answer), ``parse`` (answered, but unreadable)."""
    if report.error_stage == "parse":
        return "parse"
    if report.http_status:
        return f"{report.http_status // 100}xx"
    return "network" if report.error_stage == "fetch" else "other"


@dataclass(frozen=True, slots=True)
class RuleRow:
    """One rule as the status page shows it."""

    id: str
    topic: str
    severity: str
    enabled: bool
    mode: str
    alerts: int


@dataclass
class AlertRow:
    """One of the latest alerts."""

    alert_id: str
    rule_id: str
    topic: str
    severity: str
    title: str
    url: str | None
    feed_url: str
    detected_at: float
    delivered: bool = False


@dataclass
class StatusSnapshot:
    """Everything the status page shows, taken at one moment."""

    now: float
    started: float
    #: One page of feeds (``feeds_query``); ``health_counts`` and ``feeds_total`` count them all.
    feeds: list[FeedRow]
    health_counts: dict[str, int]
    rules: list[RuleRow]
    ruleset_version: str | None
    alerts: list[AlertRow]
    ready: bool
    not_ready: list[str]
    broker_up: bool | None
    pending: int
    polls: int
    alerts_raised: int
    alerts_published: int
    publish_errors: int
    last_reload_error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    feeds_total: int = 0
    feeds_matched: int = 0
    feeds_next_offset: int | None = None
    feeds_query: FeedQuery = field(default_factory=FeedQuery)


class Observer:
    """Collects metrics, feed health and status for one daemon; see the module docstring."""

    def __init__(
        self,
        feeds: Sequence[Feed],
        *,
        health: HealthSettings | None = None,
        latest_alerts: int = 50,
        clock: Callable[[], float] = time.time,
    ) -> None:
        health = health or HealthSettings()
        self.clock = clock
        self.started = clock()
        self.health_topic = health.topic
        self.tracker = FeedHealthTracker(
            list(feeds),
            HealthPolicy(health.failing_after, health.stale_factor, health.stale_min_age),
            started=self.started,
            shown_url=redact,
        )
        self.registry = CollectorRegistry(auto_describe=True)
        self._define_metrics()
        self.registry.register(_ScrapeTimeCollector(self))
        self.ruleset: _RuleSet | None = None
        self.last_reload_error: str | None = None
        self.broker_up: bool | None = None
        self.broker_error: str | None = None
        self.alerts_by_rule: Counter[str] = Counter()
        self.latest: deque[AlertRow] = deque(maxlen=max(0, latest_alerts))
        self.polls = 0
        self.alerts_raised = 0
        self.alerts_published = 0
        self.publish_errors = 0
        self.health_events_published = 0
        self._store: _Store | None = None
        self._delivery: _Delivery | None = None
        self._events: asyncio.Queue[Record] | None = None
        self._event_task: asyncio.Task[None] | None = None
        #: Called with each PollReport after it is accounted for (the CLI's progress bar).
        self.poll_listeners: list[Callable[[Any], None]] = []

    # -- metrics -------------------------------------------------------------------------

    def _define_metrics(self) -> None:
        r = self.registry
        # Counted after every poll, so kept lock-free (see _LoopHistogram) and exposed by
        # the scrape-time collector.
        self.poll_counts: Counter[tuple[str, str]] = Counter()
        self.fetch_seconds = _LoopHistogram(FETCH_BUCKETS)
        self.poll_seconds = _LoopHistogram(FETCH_BUCKETS)
        self.m_parse_errors = PromCounter(
            f"{PREFIX}_feed_parse_errors", "Feed bodies that could not be parsed (error) or parsed with "
            "problems (malformed).", ["kind"], registry=r,
        )
        self.m_articles = PromCounter(
            f"{PREFIX}_articles", "Articles read from feeds by verdict (new, updated, duplicate).", ["verdict"], registry=r,
        )
        self.m_alerts = PromCounter(
            f"{PREFIX}_alerts", "Alerts raised, by rule and topic.", ["rule", "topic"], registry=r,
        )
        self.m_links_dropped = PromCounter(
            f"{PREFIX}_article_links_dropped", "Entry links not published, by reason: not_http (javascript:, "
            "data:, ...) or relative (nothing http(s) to resolve against); counted per parse of a changed feed.",
            ["reason"], registry=r,
        )
        self.m_published = PromCounter(
            f"{PREFIX}_alerts_published", "Alerts acknowledged by Kafka, by topic.", ["topic"], registry=r,
        )
        self.m_publish_seconds = Histogram(
            f"{PREFIX}_publish_seconds", "Seconds from queueing a record to Kafka's acknowledgement.",
            buckets=PUBLISH_BUCKETS, registry=r,
        )
        self.m_publish_errors = PromCounter(
            f"{PREFIX}_publish_errors", "Failed attempts to publish a record (each is retried), by topic.",
            ["topic"], registry=r,
        )
        self.m_rule_reloads = PromCounter(f"{PREFIX}_rules_reloads", "Rule sets reloaded after an edit.", registry=r)
        self.m_rule_reload_failures = PromCounter(
            f"{PREFIX}_rules_reload_failures", "Rule reloads refused (the previous rules stay active).", registry=r,
        )
        self.m_rules = Gauge(f"{PREFIX}_rules", "Rules in the active rule set, enabled or not.", registry=r)
        self.m_transitions = PromCounter(
            f"{PREFIX}_feed_health_changes", "Feed health changes, by the health entered.", ["health"], registry=r,
        )
        self.m_health_events = PromCounter(
            f"{PREFIX}_feed_health_events_published", "Feed-health events acknowledged by Kafka.", registry=r,
        )
        self.m_started = Gauge(f"{PREFIX}_start_time_seconds", "Unix time the daemon started.", registry=r)
        self.m_started.set(self.started)

    def render(self) -> bytes:
        """The metrics in the Prometheus text exposition format."""
        return generate_latest(self.registry)

    # -- wiring --------------------------------------------------------------------------

    def attach(self, *, store: _Store, delivery: _Delivery) -> None:
        """Give the observer the state store (health persistence) and delivery (health events)."""
        self._store = store
        self._delivery = delivery

    async def start(self) -> None:
        """Load every feed's stored state and health, and start publishing health events."""
        if self._store is not None:
            self.tracker.load_all(await self._store.all_feed_states())
        self._events = asyncio.Queue()
        self._event_task = asyncio.create_task(self._publish_events(), name="feed-health-events")

    async def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every health event so far is in the outbox and queued for delivery."""
        if self._events is None:
            return True
        try:
            await asyncio.wait_for(self._events.join(), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    async def stop(self, timeout: float = 5.0) -> None:
        """Hand queued health events to delivery; what cannot be handed over in time is
        written to the outbox, so it is sent on the next start."""
        await self.flush(timeout)
        task, self._event_task = self._event_task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        left: list[Record] = []
        while self._events is not None and not self._events.empty():
            left.append(self._events.get_nowait())
        if left and self._store is not None:
            try:
                await self._store.enqueue(left)
            except StoreError as exc:
                log.error("feed.health.events.lost", count=len(left), error=str(exc))
                return
            log.warning("feed.health.events.deferred", count=len(left), hint="kept in the outbox; sent on next start")

    async def _publish_events(self) -> None:
        assert self._events is not None
        while True:
            record = await self._events.get()
            try:
                if self._store is not None:
                    try:
                        await self._store.enqueue([record])
                    except StoreError as exc:
                        # Not durable, but still sent while the daemon runs.
                        log.warning("feed.health.event.unsaved", topic=record.topic, error=str(exc))
                if self._delivery is not None:
                    await self._delivery.submit([record])
            finally:
                self._events.task_done()

    # -- seams ---------------------------------------------------------------------------

    async def poll_finished(self, report: Any) -> None:
        """Account for one poll (a :class:`~monitor.pipeline.PollReport`)."""
        self.polls += 1
        self.poll_counts[report.status, status_class(report)] += 1
        self.fetch_seconds.observe(report.fetch_elapsed)
        self.poll_seconds.observe(report.elapsed)
        if report.error_stage == "parse":
            self.m_parse_errors.labels("error").inc()
        elif report.warning:
            self.m_parse_errors.labels("malformed").inc()
        for verdict, count in (("new", report.new), ("updated", report.updated), ("duplicate", report.duplicates)):
            if count:
                self.m_articles.labels(verdict).inc(count)
        for reason, count in report.links_dropped.items():
            self.m_links_dropped.labels(reason).inc(count)
        for alert in report.alerts:
            self._alert_raised(alert)
        if report.state is not None:
            transition = self.tracker.observe(report.state, self.clock())
            if transition is not None:
                self._announce(transition)
            await self._persist_health(report.feed.url)
        for listener in self.poll_listeners:
            listener(report)

    def feeds_changed(self, feeds: Sequence[Feed], states: Sequence[Any] = ()) -> None:
        """A reload changed the feed list; ``states`` are the stored states of added feeds
        (from a previous run), taken as their starting point as at start-up."""
        self.tracker.set_feeds(feeds, self.clock())
        for state in states:
            self.tracker.load(state)

    def feed_scheduled(self, url: str, next_poll: float, interval: float) -> None:
        """The worker scheduled ``url``'s next poll at ``next_poll`` (Unix time).

        Memory only: the worker's feed-state cache writes the schedule to the store in
        its batched flush (a store round trip per poll cost more than a 304 poll).
        """
        self.tracker.scheduled(url, next_poll)

    def alert_published(self, record: Record, latency: float) -> None:
        """Delivery's ``on_published``: Kafka acknowledged ``record`` after ``latency`` s."""
        self.m_publish_seconds.observe(latency)
        if record.topic == self.health_topic:
            self.health_events_published += 1
            self.m_health_events.inc()
            return
        self.alerts_published += 1
        self.m_published.labels(record.topic).inc()
        for row in self.latest:
            if row.alert_id == record.alert_id:
                row.delivered = True

    def publish_failed(self, record: Record, error: BaseException) -> None:
        """Delivery's ``on_error``: one attempt to publish ``record`` failed (it is retried)."""
        self.publish_errors += 1
        self.m_publish_errors.labels(record.topic).inc()

    def rules_loaded(self, ruleset: _RuleSet) -> None:
        """The rule set in force (at start-up, or after a reload)."""
        self.ruleset = ruleset
        self.m_rules.set(len(ruleset.rules))

    def rules_reloaded(self, ruleset: _RuleSet) -> None:
        """A changed rule set was loaded and is now in force."""
        self.m_rule_reloads.inc()
        self.last_reload_error = None
        self.rules_loaded(ruleset)

    def rules_reload_failed(self, error: BaseException | str) -> None:
        """A changed rule set was refused; the previous one stays in force."""
        self.m_rule_reload_failures.inc()
        self.last_reload_error = str(error)

    def broker_checked(self, reachable: bool, error: str | None = None) -> None:
        """The result of the worker's periodic broker check."""
        if reachable != self.broker_up:
            if reachable:
                log.info("broker.reachable")
            else:
                log.warning("broker.unreachable", error=error)
        self.broker_up = reachable
        self.broker_error = None if reachable else error

    async def sweep(self) -> list[Transition]:
        """Re-assess every feed's health (silence grows between polls); announce the changes."""
        transitions = self.tracker.sweep(self.clock())
        for transition in transitions:
            self._announce(transition)
            await self._persist_health(transition.feed.url)
        return transitions

    # -- readiness and status -------------------------------------------------------------

    def readiness(self) -> tuple[bool, list[str]]:
        """Whether the daemon can do its job (rules loaded, broker reachable, state store
        writable), and if not why."""
        problems: list[str] = []
        if self.ruleset is None:
            problems.append("rules are not loaded")
        failure = self._store.failure if self._store is not None else None
        if failure is not None:
            problems.append(f"the state store is failing: {failure}")
        if self.broker_up is None:
            problems.append("the broker has not been checked yet")
        elif not self.broker_up:
            problems.append(f"the broker is unreachable: {self.broker_error or 'no answer'}")
        delivery = self._delivery
        if delivery is None:
            problems.append("delivery has not started")
        elif not delivery.healthy and delivery.pending:
            problems.append(f"publishing is failing; {delivery.pending} record(s) wait for the broker")
        return not problems, problems

    def snapshot(self, query: FeedQuery | None = None) -> StatusSnapshot:
        """What the status page shows, now: the page of feeds ``query`` asks for (the first
        :data:`~monitor.feeds.health.PAGE_ROWS`, problems first, by default)."""
        ready, problems = self.readiness()
        query = query or FeedQuery()
        page = self.tracker.page(query)
        rules: list[RuleRow] = []
        if self.ruleset is not None:
            rules = [
                RuleRow(r.id, r.output_topic, r.severity, r.enabled, r.mode, self.alerts_by_rule.get(r.id, 0))
                for r in self.ruleset.rules
            ]
        return StatusSnapshot(
            now=self.clock(),
            started=self.started,
            feeds=page.rows,
            health_counts=self.tracker.counts(),
            rules=rules,
            ruleset_version=self.ruleset.version if self.ruleset is not None else None,
            alerts=list(self.latest),
            ready=ready,
            not_ready=problems,
            broker_up=self.broker_up,
            pending=self._delivery.pending if self._delivery is not None else 0,
            polls=self.polls,
            alerts_raised=self.alerts_raised,
            alerts_published=self.alerts_published,
            publish_errors=self.publish_errors,
            last_reload_error=self.last_reload_error,
            feeds_total=page.total,
            feeds_matched=page.matched,
            feeds_next_offset=page.next_offset,
            feeds_query=query,
        )

    # -- internals -----------------------------------------------------------------------

    def _alert_raised(self, alert: Alert) -> None:
        self.alerts_raised += 1
        self.alerts_by_rule[alert.rule_id] += 1
        self.m_alerts.labels(alert.rule_id, alert.topic).inc()
        if self.latest.maxlen:
            self.latest.appendleft(
                AlertRow(
                    alert_id=alert.alert_id,
                    rule_id=alert.rule_id,
                    topic=alert.topic,
                    severity=alert.severity,
                    title=alert.title,
                    url=alert.url,
                    feed_url=alert.feed_url,
                    detected_at=alert.detected_at.timestamp(),
                )
            )

    def _announce(self, transition: Transition) -> None:
        current = transition.current
        self.m_transitions.labels(current.health).inc()
        level = log.info if current.health == OK else log.warning
        level(
            "feed.health.changed",
            feed_url=transition.feed.url,
            previous=transition.previous,
            health=current.health,
            reason=current.reason,
        )
        if self._events is not None:
            self._events.put_nowait(health_record(transition, self.health_topic))

    async def _persist_health(self, url: str) -> None:
        health = self.tracker.needs_store(url)
        if health is None or self._store is None:
            return
        try:
            await self._store.set_feed_health(url, health)
        except StoreError:
            # Readiness reports the store; the health is written after the feed's next poll.
            return
        self.tracker.stored(url, health)


class _ScrapeTimeCollector(Collector):
    """Values read when Prometheus scrapes: the per-poll counts, queue depth, broker and
    readiness, feed ages."""

    def __init__(self, observer: Observer) -> None:
        self._observer = observer

    def describe(self) -> Iterable[Any]:
        # Describing nothing keeps registration from calling collect() before wiring.
        return []

    def collect(self) -> Iterator[Any]:
        observer = self._observer
        now = observer.clock()
        delivery = observer._delivery
        yield from _poll_families(observer)
        yield _gauge("pending_alerts", "Records (alerts and health events) queued or in flight to Kafka.",
                     delivery.pending if delivery is not None else 0)
        yield _gauge("broker_up", "1 when the last broker check reached the broker.", 1 if observer.broker_up else 0)
        ready, _ = observer.readiness()
        yield _gauge("ready", "1 when /readyz answers ready (rules loaded, broker reachable, state store writable).", 1 if ready else 0)
        dead = getattr(getattr(delivery, "stats", None), "dead_lettered", 0)
        dead_family = CounterMetricFamily(f"{PREFIX}_alerts_dead_lettered", "Records Kafka refused for good, sent to the dead-letter topic.")
        dead_family.add_metric([], dead)
        yield dead_family
        by_health = GaugeMetricFamily(f"{PREFIX}_feeds", "Feeds by health (ok, stale, failing, disabled).", labels=["health"])
        for health, count in observer.tracker.counts().items():
            by_health.add_metric([health], count)
        yield by_health
        age = GaugeMetricFamily(
            f"{PREFIX}_feed_last_success_age_seconds",
            "Seconds since each feed's last successful poll (feeds never polled successfully are absent).",
            labels=["feed"],
        )
        for row in observer.tracker.rows():
            if row.last_success is not None:
                # A feed url may carry credentials (user:pw@, ?token=): never in a label.
                age.add_metric([redact(row.url)], max(0.0, now - row.last_success))
        yield age
        if observer.ruleset is not None:
            info = GaugeMetricFamily(f"{PREFIX}_ruleset_info", "The active rule set's version.", labels=["version"])
            info.add_metric([observer.ruleset.version], 1)
            yield info


class _LoopHistogram:
    """A histogram fed from the event loop only: plain numbers, no locks.

    prometheus_client's Histogram takes a lock per observation and per bucket, as threads
    may share it. Observed twice after every poll, thousands of times a second, that was
    (with the poll counter) a sixth of a 304 poll's own work. Read by
    :class:`_ScrapeTimeCollector` when Prometheus scrapes, which also runs on the event loop.
    """

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = (*sorted(buckets), math.inf)
        self.counts = [0] * len(self.bounds)
        self.total = 0.0

    def observe(self, value: float) -> None:
        """Count one observation (in the first bucket whose bound is >= it: Prometheus's ``le``)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        """The histogram as Prometheus exposes it: cumulative buckets, sum and count."""
        buckets = [[floatToGoString(bound), count] for bound, count in zip(self.bounds, accumulate(self.counts))]
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=self.total)


def _poll_families(observer: Observer) -> Iterator[Any]:
    """The per-poll metrics, kept lock-free by the Observer (see :class:`_LoopHistogram`)."""
    polls = CounterMetricFamily(
        f"{PREFIX}_feed_polls",
        "Feed polls by result (ok, not_modified, unchanged, error, gone) and status class "
        "(2xx, 3xx, 4xx, 5xx, network, parse).",
        labels=["result", "status_class"],
    )
    for (result, status), count in sorted(observer.poll_counts.items()):
        polls.add_metric([result, status], count)
    yield polls
    yield observer.fetch_seconds.family(f"{PREFIX}_feed_fetch_seconds", "Time to fetch a feed (connect, headers and body).")
    yield observer.poll_seconds.family(f"{PREFIX}_feed_poll_seconds", "Time for a whole poll: fetch, parse, dedupe, match, queue.")


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(f"{PREFIX}_{name}", documentation)
    family.add_metric([], value)
    return family
