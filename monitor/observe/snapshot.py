"""The data behind the status page and ``/status.json``: one :class:`StatusSnapshot` at a
time, and the latest alerts it lists."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from monitor.feeds.health import FeedHealthTracker, FeedQuery, FeedRow
from monitor.model import Alert
from monitor.observe.readiness import Readiness
from monitor.observe.summary import RunSummary
from monitor.observe.wiring import Wiring

__all__ = ["CHARTS_PER_PAGE", "AlertRow", "ChartRow", "LatestAlerts", "RuleRow", "StatusSnapshot", "StatusView"]

#: Rule charts on one status page (the rules with the most matches in 48 hours first).
CHARTS_PER_PAGE = 20


@dataclass(frozen=True, slots=True)
class RuleRow:
    """One rule as the status page shows it."""

    id: str
    topic: str
    severity: str
    enabled: bool
    mode: str
    alerts: int
    #: Story signals raised since start, by kind.
    signals: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChartRow:
    """One rule's matching articles per hour over the last 48 hours (docs/signals.md)."""

    rule_id: str
    #: The first hour, as ``floor(unix time / 3600)``; ``counts[i]`` is hour ``first_hour + i``.
    first_hour: int
    counts: list[int]
    #: The usual count per hour: the spike block's baseline, else the mean of the 48 hours.
    baseline: float
    #: The rule's signals in those hours: (time, kind).
    signals: list[tuple[float, str]]


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
    #: One page of rule charts (:data:`CHARTS_PER_PAGE`, from ``charts_offset``) of the
    #: ``charts_total`` rules with matches in the last 48 hours.
    charts: list[ChartRow] = field(default_factory=list)
    charts_total: int = 0
    charts_offset: int = 0
    charts_next_offset: int | None = None


class LatestAlerts:
    """The last ``size`` alerts raised, newest first, each marked once Kafka has it."""

    def __init__(self, size: int) -> None:
        self._rows: deque[AlertRow] = deque(maxlen=max(0, size))

    def add(self, alert: Alert) -> None:
        if self._rows.maxlen:
            self._rows.appendleft(
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

    def delivered(self, alert_id: str) -> None:
        for row in self._rows:
            if row.alert_id == alert_id:
                row.delivered = True

    def rows(self) -> list[AlertRow]:
        return list(self._rows)


@dataclass
class StatusView:
    """Takes status snapshots from the tracker, the run summary and what is wired in."""

    tracker: FeedHealthTracker
    summary: RunSummary
    latest: LatestAlerts
    readiness: Readiness
    wiring: Wiring
    clock: Callable[[], float]
    started: float

    def snapshot(self, query: FeedQuery | None = None, charts_offset: int = 0) -> StatusSnapshot:
        """What the status page shows, now: the page of feeds ``query`` asks for (the first
        :data:`~monitor.feeds.health.PAGE_ROWS`, problems first, by default) and the page
        of rule charts from ``charts_offset``."""
        now = self.clock()
        charts, charts_total, charts_next = self._charts(now, charts_offset)
        ready, problems = self.readiness.check()
        query = query or FeedQuery()
        page = self.tracker.page(query)
        rules = self.wiring.rules
        delivery = self.wiring.delivery
        extra: dict[str, Any] = {"roles": {role.name: role.status() for role in self.wiring.roles}} if self.wiring.roles else {}
        inbox = self.wiring.websub
        if inbox is not None:
            extra["websub"] = {
                "subscriptions": dict(inbox.registry.counts()),
                "callbacks": dict(inbox.stats.outcomes),
                "feeds": [{"url": row.url, **inbox.registry.describe(row.url)} for row in page.rows],
            }
        return StatusSnapshot(
            extra=extra,
            now=now,
            started=self.started,
            feeds=page.rows,
            health_counts=self.tracker.counts(),
            rules=self._rule_rows(),
            ruleset_version=rules.current.version if rules is not None else None,
            alerts=self.latest.rows(),
            ready=ready,
            not_ready=problems,
            broker_up=self.readiness.broker_up,
            pending=delivery.pending if delivery is not None else 0,
            polls=self.summary.polls,
            alerts_raised=self.summary.alerts_raised,
            alerts_published=self.summary.published,
            publish_errors=delivery.stats.failed_attempts if delivery is not None else 0,
            last_reload_error=rules.last_error if rules is not None else None,
            feeds_total=page.total,
            feeds_matched=page.matched,
            feeds_next_offset=page.next_offset,
            feeds_query=query,
            charts=charts,
            charts_total=charts_total,
            charts_offset=charts_offset,
            charts_next_offset=charts_next,
        )

    def _rule_rows(self) -> list[RuleRow]:
        rules = self.wiring.rules
        if rules is None:
            return []
        alerts = self.summary.alerts_by_rule()
        raised = self.wiring.signals.raised if self.wiring.signals is not None else {}
        return [
            RuleRow(r.id, r.output_topic, r.severity, r.enabled, r.mode, alerts.get(r.id, 0), dict(raised.get(r.id, {})))
            for r in rules.current.rules
        ]

    def _charts(self, now: float, offset: int) -> tuple[list[ChartRow], int, int | None]:
        """A page of charts, the number of rules with matches in 48 hours, the next page's offset."""
        signals = self.wiring.signals
        if signals is None:
            return [], 0, None
        active = signals.active(now)
        rows = []
        for rule_id in active[offset : offset + CHARTS_PER_PAGE]:
            chart = signals.chart(rule_id, now)
            if chart is not None:
                rows.append(ChartRow(rule_id, chart.first_hour, list(chart.counts), chart.baseline, list(chart.signals)))
        following = offset + CHARTS_PER_PAGE
        return rows, len(active), following if following < len(active) else None
