"""What a run did: polls, articles and alerts, counted once for everyone who asks.

The :class:`RunSummary` is the one count of polls and of alerts raised; the status
page, ``/metrics`` and ``run --once``'s summary all read it. What was published and
dead-lettered is delivery's count (:class:`~monitor.delivery.DeliveryStats`), read
through the summary, never copied.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field

from monitor.delivery import DeliveryStats
from monitor.errors import StoreError
from monitor.pipeline import PollReport

__all__ = ["FAILURES_KEPT", "RunSummary"]

#: Failures a run summary lists (``run --once`` prints them); older ones are only counted.
FAILURES_KEPT = 1000


@dataclass
class RunSummary:
    """What a run did; ``run --once`` prints it."""

    feeds: int = 0
    #: Every poll, failed ones included.
    polls: int = 0
    #: Polls that found the feed unchanged: 304 Not Modified, or the same bytes as last time.
    unchanged: int = 0
    #: Failed polls, all of them counted...
    failures: int = 0
    #: ...and the latest ones kept, (feed url, error): the daemon runs for months, and an
    #: unbounded list of every failure would grow for as long.
    failed: deque[tuple[str, str]] = field(default_factory=lambda: deque(maxlen=FAILURES_KEPT))
    new_articles: int = 0
    duplicates: int = 0
    #: Alerts raised, by (rule id, topic).
    alerts: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: Story signals raised, by (topic, kind).
    signals: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: Records left in the outbox when the run ended (sent at the next start).
    undelivered: int = 0
    #: WebSub pushes that went through the pipeline (not counted as polls), and those that did not parse.
    pushes: int = 0
    push_failures: int = 0
    #: Delivery's counters, once delivery runs.
    delivery: DeliveryStats | None = None

    def add(self, report: PollReport) -> None:
        """Count one poll."""
        self.polls += 1
        if report.status in ("not_modified", "unchanged"):
            self.unchanged += 1
        self.new_articles += report.new
        self.duplicates += report.duplicates
        if report.error:
            self.failures += 1
            self.failed.append((report.feed.url, report.error))
        for alert in report.alerts:
            self.alerts[alert.rule_id, alert.topic] += 1
        for signal in report.signals:
            self.signals[signal.topic, signal.kind] += 1

    def add_push(self, report: PollReport) -> None:
        """Count one pushed body (a poll's counts but ``polls`` and ``unchanged``)."""
        self.pushes += 1
        self.new_articles += report.new
        self.duplicates += report.duplicates
        if report.error:
            self.push_failures += 1
        for alert in report.alerts:
            self.alerts[alert.rule_id, alert.topic] += 1
        for signal in report.signals:
            self.signals[signal.topic, signal.kind] += 1

    def store_failed(self, url: str, error: StoreError) -> None:
        """A poll the state store failed (its feed is polled again later)."""
        self.polls += 1
        self.failures += 1
        self.failed.append((url, f"{url}: {error}"))

    def poll_crashed(self, url: str, error: str) -> None:
        """A poll a bug ended (logged as ``feed.poll.crashed``; its feed is polled again later)."""
        self.polls += 1
        self.failures += 1
        self.failed.append((url, f"{url}: the poll failed on a bug ({error}; see feed.poll.crashed in the log)"))

    @property
    def alerts_raised(self) -> int:
        return sum(self.alerts.values())

    @property
    def alerts_by_topic(self) -> Counter[str]:
        by_topic: Counter[str] = Counter()
        for (_rule, topic), count in self.alerts.items():
            by_topic[topic] += count
        return by_topic

    def alerts_by_rule(self) -> Counter[str]:
        by_rule: Counter[str] = Counter()
        for (rule, _topic), count in self.alerts.items():
            by_rule[rule] += count
        return by_rule

    @property
    def published(self) -> int:
        """Alerts Kafka acknowledged (article, sighting, feed-health and signal records aside)."""
        return self.delivery.alerts_published if self.delivery is not None else 0

    @property
    def signals_published(self) -> int:
        """Story signals Kafka acknowledged."""
        return self.delivery.signals_published if self.delivery is not None else 0

    @property
    def dead_lettered(self) -> int:
        """Records sent to the dead-letter topic."""
        return self.delivery.dead_lettered if self.delivery is not None else 0

    @property
    def abandoned(self) -> int:
        """Records given up on (the dead-letter topic refused them too), left in the outbox."""
        return self.delivery.abandoned if self.delivery is not None else 0
