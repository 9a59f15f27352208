"""Prometheus metrics: what ``/metrics`` exposes, and nothing else.

Counts that have an owner elsewhere are read from it when Prometheus scrapes (polls and
alerts raised from the run summary, records published and dead-lettered from delivery,
rule reloads from the rules holder, feeds by health from the tracker), so each number
has one source. What only metrics need is counted here: polls by result and status
class, fetch and poll latency (kept lock-free, see :class:`_LoopHistogram`), articles by
verdict, parse errors, dropped links, publish latency and errors, health changes.

Each :class:`Metrics` has its own :class:`prometheus_client.CollectorRegistry` (not the
global one), so several monitors can live in one process (tests do).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from itertools import accumulate
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from monitor.feeds.health import FeedHealthTracker
from monitor.log import redact
from monitor.model import Record
from monitor.observe.readiness import Readiness
from monitor.observe.summary import RunSummary
from monitor.observe.wiring import Wiring
from monitor.pipeline import PollReport

__all__ = ["FETCH_BUCKETS", "PUBLISH_BUCKETS", "Metrics", "status_class"]

PREFIX = "news_monitor"

#: Seconds; feeds answer in tens of milliseconds to tens of seconds.
FETCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
#: Seconds from a WebSub push's arrival to its alerts queued for Kafka.
PUSH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Seconds from queueing to Kafka's ack; minutes while the broker is away.
PUBLISH_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


def status_class(report: PollReport) -> str:
    """The class of a poll's outcome for the ``polls`` metric: ``2xx``, ``3xx`` (304 included),
    ``4xx``, ``5xx``, ``network`` (no answer), ``parse`` (answered, but unreadable)."""
    if report.error_stage == "parse":
        return "parse"
    if report.http_status:
        return f"{report.http_status // 100}xx"
    return "network" if report.error_stage == "fetch" else "other"


class Metrics:
    """The Prometheus side of one daemon (see the module docstring)."""

    def __init__(
        self,
        *,
        tracker: FeedHealthTracker,
        summary: RunSummary,
        readiness: Readiness,
        wiring: Wiring,
        clock: Callable[[], float],
        started: float,
    ) -> None:
        self.tracker = tracker
        self.summary = summary
        self.readiness = readiness
        self.wiring = wiring
        self.clock = clock
        self.registry = CollectorRegistry(auto_describe=True)
        # Counted after every poll, so kept lock-free (see _LoopHistogram) and exposed by
        # the scrape-time collector.
        self.poll_counts: Counter[tuple[str, str]] = Counter()
        self.fetch_seconds = _LoopHistogram(FETCH_BUCKETS)
        self.poll_seconds = _LoopHistogram(FETCH_BUCKETS)
        self.push_counts: Counter[str] = Counter()
        self.push_to_alert = _LoopHistogram(PUSH_BUCKETS)
        self._define(self.registry)
        self.registry.register(_ScrapeTimeCollector(self))
        self.start_time.set(started)

    def _define(self, r: CollectorRegistry) -> None:
        self.parse_errors = PromCounter(
            f"{PREFIX}_feed_parse_errors", "Feed bodies that could not be parsed (error) or parsed with "
            "problems (malformed).", ["kind"], registry=r,
        )
        self.articles = PromCounter(
            f"{PREFIX}_articles", "Articles read from feeds by verdict (new, updated, duplicate).", ["verdict"], registry=r,
        )
        self.links_dropped = PromCounter(
            f"{PREFIX}_article_links_dropped", "Entry links not published, by reason: not_http (javascript:, "
            "data:, ...) or relative (nothing http(s) to resolve against); counted per parse of a changed feed.",
            ["reason"], registry=r,
        )
        self.publish_seconds = Histogram(
            f"{PREFIX}_publish_seconds", "Seconds from queueing a record to Kafka's acknowledgement.",
            buckets=PUBLISH_BUCKETS, registry=r,
        )
        self.publish_errors = PromCounter(
            f"{PREFIX}_publish_errors", "Failed attempts to publish a record (each is retried), by topic.",
            ["topic"], registry=r,
        )
        self.transitions = PromCounter(
            f"{PREFIX}_feed_health_changes", "Feed health changes, by the health entered.", ["health"], registry=r,
        )
        self.start_time = Gauge(f"{PREFIX}_start_time_seconds", "Unix time the daemon started.", registry=r)

    def render(self) -> bytes:
        """The metrics in the Prometheus text exposition format."""
        return generate_latest(self.registry)

    def poll_finished(self, report: PollReport) -> None:
        """Count one poll: result, latency, articles, parse problems, dropped links."""
        self.poll_counts[report.status, status_class(report)] += 1
        self.fetch_seconds.observe(report.fetch_elapsed)
        self.poll_seconds.observe(report.elapsed)
        if report.error_stage == "parse":
            self.parse_errors.labels("error").inc()
        elif report.warning:
            self.parse_errors.labels("malformed").inc()
        for verdict, count in (("new", report.new), ("updated", report.updated), ("duplicate", report.duplicates)):
            if count:
                self.articles.labels(verdict).inc(count)
        for reason, count in report.links_dropped.items():
            self.links_dropped.labels(reason).inc(count)

    def push_finished(self, report: PollReport, latency: float) -> None:
        """Count one pushed body: its result, its articles, and (when it alerted) its latency."""
        self.push_counts["ok" if report.error is None else "error"] += 1
        if report.error_stage == "parse":
            self.parse_errors.labels("error").inc()
        for verdict, count in (("new", report.new), ("updated", report.updated), ("duplicate", report.duplicates)):
            if count:
                self.articles.labels(verdict).inc(count)
        if report.alerts:
            self.push_to_alert.observe(latency)

    def published(self, latency: float) -> None:
        self.publish_seconds.observe(latency)

    def publish_failed(self, record: Record) -> None:
        self.publish_errors.labels(record.topic).inc()

    def health_changed(self, health: str) -> None:
        self.transitions.labels(health).inc()


class _ScrapeTimeCollector(Collector):
    """Values read when Prometheus scrapes: the per-poll counts, queue depth, broker and
    readiness, feed ages."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Any]:
        # Describing nothing keeps registration from calling collect() before wiring.
        return []

    def collect(self) -> Iterator[Any]:
        metrics = self._metrics
        yield from _poll_families(metrics)
        yield from _alert_families(metrics.summary, metrics.wiring)
        yield from _readiness_families(metrics)
        yield from _feed_families(metrics.tracker, metrics.clock())
        yield from _rules_families(metrics.wiring)
        yield from _role_families(metrics.wiring)
        if metrics.wiring.websub is not None:
            yield from _websub_families(metrics)


class _LoopHistogram:
    """A histogram fed from the event loop only: plain numbers, no locks.

    prometheus_client's Histogram takes a lock per observation and per bucket, as threads
    may share it; observed twice after every poll, that is a noticeable share of a 304
    poll's own work (docs/polling.md). Read by
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
        # floatToGoString has no annotations; it formats a bound as Prometheus's "le" does.
        buckets = [(floatToGoString(bound), count) for bound, count in zip(self.bounds, accumulate(self.counts))]  # type: ignore[no-untyped-call]
        return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=self.total)


def _poll_families(metrics: Metrics) -> Iterator[Any]:
    """The per-poll metrics, kept lock-free (see :class:`_LoopHistogram`)."""
    polls = CounterMetricFamily(
        f"{PREFIX}_feed_polls",
        "Feed polls by result (ok, not_modified, unchanged, error, gone) and status class "
        "(2xx, 3xx, 4xx, 5xx, network, parse).",
        labels=["result", "status_class"],
    )
    for (result, status), count in sorted(metrics.poll_counts.items()):
        polls.add_metric([result, status], count)
    yield polls
    yield metrics.fetch_seconds.family(f"{PREFIX}_feed_fetch_seconds", "Time to fetch a feed (connect, headers and body).")
    yield metrics.poll_seconds.family(f"{PREFIX}_feed_poll_seconds", "Time for a whole poll: fetch, parse, dedupe, match, queue.")


def _alert_families(summary: RunSummary, wiring: Wiring) -> Iterator[Any]:
    """Alerts raised (the run summary's count), published and dead-lettered (delivery's)."""
    raised = CounterMetricFamily(f"{PREFIX}_alerts", "Alerts raised, by rule and topic.", labels=["rule", "topic"])
    for (rule, topic), count in sorted(summary.alerts.items()):
        raised.add_metric([rule, topic], count)
    yield raised
    signals = CounterMetricFamily(
        f"{PREFIX}_signals", "Story signals raised, by rule and kind (burst, spike, escalation).", labels=["rule", "kind"]
    )
    for rule, kinds in sorted(wiring.signals.raised.items() if wiring.signals is not None else ()):
        for kind, count in sorted(kinds.items()):
            signals.add_metric([rule, kind], count)
    yield signals
    stats = wiring.delivery.stats if wiring.delivery is not None else None
    by_topic = stats.by_topic if stats is not None else {}
    published = CounterMetricFamily(f"{PREFIX}_alerts_published", "Alerts acknowledged by Kafka, by topic.", labels=["topic"])
    for topic, count in sorted(by_topic.items()):
        if topic != wiring.health_topic:
            published.add_metric([topic], count)
    yield published
    yield _counter("feed_health_events_published", "Feed-health events acknowledged by Kafka.", by_topic.get(wiring.health_topic, 0))
    yield _counter(
        "alerts_dead_lettered", "Records Kafka refused for good, sent to the dead-letter topic.", stats.dead_lettered if stats else 0
    )


def _readiness_families(metrics: Metrics) -> Iterator[Any]:
    delivery = metrics.wiring.delivery
    yield _gauge("pending_alerts", "Records (alerts and health events) queued or in flight to Kafka.",
                 delivery.pending if delivery is not None else 0)
    yield _gauge("broker_up", "1 when the last broker check reached the broker.", 1 if metrics.readiness.broker_up else 0)
    ready, _ = metrics.readiness.check()
    yield _gauge("ready", "1 when /readyz answers ready (rules loaded, broker reachable, state store writable).", 1 if ready else 0)


def _feed_families(tracker: FeedHealthTracker, now: float) -> Iterator[Any]:
    by_health = GaugeMetricFamily(f"{PREFIX}_feeds", "Feeds by health (ok, stale, failing, disabled).", labels=["health"])
    for health, count in tracker.counts().items():
        by_health.add_metric([health], count)
    yield by_health
    age = GaugeMetricFamily(
        f"{PREFIX}_feed_last_success_age_seconds",
        "Seconds since each feed's last successful poll (feeds never polled successfully are absent).",
        labels=["feed"],
    )
    for row in tracker.rows():
        if row.last_success is not None:
            # A feed url may carry credentials (user:pw@, ?token=): never in a label.
            age.add_metric([redact(row.url)], max(0.0, now - row.last_success))
    yield age


def _rules_families(wiring: Wiring) -> Iterator[Any]:
    """The rules holder's own counts: reloads, refused reloads, the rule set in force."""
    rules = wiring.rules
    yield _counter("rules_reloads", "Rule sets reloaded after an edit.", rules.reloads if rules else 0)
    yield _counter("rules_reload_failures", "Rule reloads refused (the previous rules stay active).", rules.reload_failures if rules else 0)
    if rules is not None:
        yield _gauge("rules", "Rules in the active rule set, enabled or not.", len(rules.current.rules))
        info = GaugeMetricFamily(f"{PREFIX}_ruleset_info", "The active rule set's version.", labels=["version"])
        info.add_metric([rules.current.version], 1)
        yield info


def _role_families(wiring: Wiring) -> Iterator[Any]:
    """What each role of ``run --role`` counts (its own names, e.g. ``news_monitor_matcher_batches``)."""
    for role in wiring.roles:
        for metric in role.metrics():
            yield (_counter if metric.counter else _gauge)(metric.name, metric.help, metric.value)


def _websub_families(metrics: Metrics) -> Iterator[Any]:
    """Push subscriptions by state, callback requests by outcome, pushes, push-to-alert latency."""
    inbox = metrics.wiring.websub
    assert inbox is not None
    states = GaugeMetricFamily(
        f"{PREFIX}_websub_subscriptions",
        "Feeds by WebSub push state (none, pending, active, denied, failing, unsubscribing).",
        labels=["state"],
    )
    for state, count in inbox.registry.counts().items():
        states.add_metric([state], count)
    yield states
    outcomes = inbox.stats.outcomes
    requests = CounterMetricFamily(
        f"{PREFIX}_websub_callback_requests",
        "Requests to the WebSub callback by outcome: accepted, unsigned, bad_signature, unknown_token, "
        "rate_limited, too_large, busy, bad_request, verified, verify_refused.",
        labels=["outcome"],
    )
    for outcome, count in sorted(outcomes.items()):
        requests.add_metric([outcome], count)
    yield requests
    yield _counter("websub_pushes_received", "Signed pushes accepted for the pipeline.", outcomes.get("accepted", 0))
    failures = CounterMetricFamily(
        f"{PREFIX}_websub_signature_failures", "Pushes ignored for their X-Hub-Signature (unsigned or bad).", labels=["kind"]
    )
    failures.add_metric(["unsigned"], outcomes.get("unsigned", 0))
    failures.add_metric(["bad"], outcomes.get("bad_signature", 0))
    yield failures
    pushes = CounterMetricFamily(
        f"{PREFIX}_websub_pushes_processed", "Pushed bodies through the pipeline, by result (ok, error: did not parse).",
        labels=["result"],
    )
    for result, count in sorted(metrics.push_counts.items()):
        pushes.add_metric([result], count)
    yield pushes
    yield metrics.push_to_alert.family(
        f"{PREFIX}_websub_push_to_alert_seconds", "Seconds from a push's arrival to its alerts queued for Kafka (pushes that alerted)."
    )


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    family = CounterMetricFamily(f"{PREFIX}_{name}", documentation)
    family.add_metric([], value)
    return family


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(f"{PREFIX}_{name}", documentation)
    family.add_metric([], value)
    return family
