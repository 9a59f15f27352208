"""The one place the daemon's seams report to; it hands each report to the observers
that need it:

* :meth:`Observer.poll_finished` takes each :class:`~monitor.pipeline.PollReport`: the
  run summary counts it, the metrics time it, the health tracker re-assesses the feed
  (a change of health is logged, counted, stored and published as an event), and its
  alerts join the latest alerts;
* :meth:`Observer.alert_published` / :meth:`Observer.publish_failed` are
  :class:`~monitor.delivery.Delivery`'s ``on_published`` / ``on_error`` callbacks;
* :meth:`Observer.sweep` re-assesses every feed (periodically: silence grows between polls).

The parts, each with one job: :attr:`summary` (:mod:`monitor.observe.summary`),
:attr:`metrics` (Prometheus), :attr:`events` (feed-health events),
:attr:`readiness`, :attr:`status` (the status page's snapshots), :attr:`latest`
(the latest alerts) and :attr:`tracker` (:class:`~monitor.feeds.health.FeedHealthTracker`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from monitor.errors import StoreError
from monitor.feeds.health import OK, FeedHealthTracker, HealthPolicy, Transition, health_record
from monitor.feeds.state import FeedState
from monitor.log import get_logger, redact
from monitor.model import Alert, Feed, Record
from monitor.observe.events import HealthEvents
from monitor.observe.metrics import Metrics
from monitor.observe.readiness import Readiness
from monitor.observe.snapshot import LatestAlerts, StatusView
from monitor.observe.summary import RunSummary
from monitor.observe.wiring import DeliveryView, RulesView, StoreView, Wiring
from monitor.pipeline import PollReport

__all__ = ["Observer"]

log = get_logger("observer")


class Observer:
    """Collects metrics, feed health and status for one daemon; see the module docstring."""

    def __init__(
        self,
        feeds: Sequence[Feed],
        *,
        rules: RulesView | None = None,
        policy: HealthPolicy | None = None,
        health_topic: str = "monitor.feed-health",
        latest_alerts: int = 50,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        started = clock()
        self.wiring = Wiring(rules=rules, health_topic=health_topic)
        self.tracker = FeedHealthTracker(list(feeds), policy or HealthPolicy(), started=started, shown_url=redact)
        self.summary = RunSummary(feeds=len(feeds))
        self.readiness = Readiness(self.wiring)
        self.latest = LatestAlerts(latest_alerts)
        self.events = HealthEvents(self.wiring)
        self.metrics = Metrics(
            tracker=self.tracker, summary=self.summary, readiness=self.readiness, wiring=self.wiring, clock=clock, started=started
        )
        self.status = StatusView(self.tracker, self.summary, self.latest, self.readiness, self.wiring, clock, started)
        #: Called with each PollReport after it is accounted for (the CLI's progress bar).
        self.poll_listeners: list[Callable[[PollReport], None]] = []

    def attach(self, *, store: StoreView, delivery: DeliveryView) -> None:
        """Wire in the state store (health persistence) and delivery (health events, counts)."""
        self.wiring.store = store
        self.wiring.delivery = delivery
        self.summary.delivery = delivery.stats

    async def start(self) -> None:
        """Load every feed's stored state and health, and start publishing health events."""
        if self.wiring.store is not None:
            self.tracker.load_all(await self.wiring.store.all_feed_states())
        self.events.start()

    async def stop(self, timeout: float = 5.0) -> None:
        await self.events.stop(timeout)

    async def poll_finished(self, report: PollReport) -> None:
        """Account for one poll."""
        self.summary.add(report)
        self.metrics.poll_finished(report)
        for alert in report.alerts:
            self.latest.add(alert)
        if report.state is not None:
            transition = self.tracker.observe(report.state, self.clock())
            if transition is not None:
                self._announce(transition)
            await self._persist_health(report.feed.url)
        for listener in self.poll_listeners:
            listener(report)

    async def push_finished(self, report: PollReport, received: float) -> None:
        """Account for one pushed body (WebSub), which reached the pipeline at ``received`` (Unix time)."""
        self.summary.add_push(report)
        self.metrics.push_finished(report, self.clock() - received)
        for alert in report.alerts:
            self.latest.add(alert)
        if report.state is not None:
            transition = self.tracker.observe(report.state, self.clock())
            if transition is not None:
                self._announce(transition)
            await self._persist_health(report.feed.url)

    def poll_failed(self, url: str, error: StoreError) -> None:
        """A poll the state store failed (no report: nothing it did was recorded)."""
        self.summary.store_failed(url, error)

    def poll_crashed(self, url: str, error: str) -> None:
        """A poll a bug ended (no report): counted as a failed poll in the run's summary."""
        self.summary.poll_crashed(url, error)

    def feeds_changed(self, feeds: Sequence[Feed], states: Sequence[FeedState] = ()) -> None:
        """A reload changed the feed list; ``states`` are the stored states of added feeds
        (from a previous run), taken as their starting point as at start-up."""
        self.tracker.set_feeds(feeds, self.clock())
        for state in states:
            self.tracker.load(state)
        self.summary.feeds = len(feeds)

    def feed_scheduled(self, url: str, next_poll: float) -> None:
        """The poller scheduled ``url``'s next poll at ``next_poll`` (Unix time)."""
        self.tracker.scheduled(url, next_poll)

    def alert_published(self, record: Record, latency: float) -> None:
        """Delivery's ``on_published``: Kafka acknowledged ``record`` after ``latency`` s."""
        self.metrics.published(latency)
        if record.topic != self.wiring.health_topic:
            self.latest.delivered(record.alert_id)

    def publish_failed(self, record: Record, _error: BaseException) -> None:
        """Delivery's ``on_error``: one attempt to publish ``record`` failed (it is retried)."""
        self.metrics.publish_failed(record)

    async def sweep(self) -> list[Transition]:
        """Re-assess every feed's health (silence grows between polls); announce the changes."""
        transitions = self.tracker.sweep(self.clock())
        for transition in transitions:
            self._announce(transition)
            await self._persist_health(transition.feed.url)
        return transitions

    def alert_raised(self, alert: Alert) -> None:
        """Count an alert raised outside a poll report (tools and tests)."""
        self.summary.alerts[alert.rule_id, alert.topic] += 1
        self.latest.add(alert)

    def _announce(self, transition: Transition) -> None:
        current = transition.current
        self.metrics.health_changed(current.health)
        level = log.info if current.health == OK else log.warning
        level(
            "feed.health.changed",
            feed_url=transition.feed.url,
            previous=transition.previous,
            health=current.health,
            reason=current.reason,
        )
        self.events.put(health_record(transition, self.wiring.health_topic))

    async def _persist_health(self, url: str) -> None:
        health = self.tracker.needs_store(url)
        store = self.wiring.store
        if health is None or store is None:
            return
        try:
            await store.set_feed_health(url, health)
        except StoreError:
            # Readiness reports the store; the health is written after the feed's next poll.
            return
        self.tracker.stored(url, health)
