"""The notify process's Prometheus metrics, by destination (its own registry).

``news_monitor_notify_``: ``records_total``, ``skipped_total{reason}``,
``duplicates_total``, ``sent_total`` (messages: a digest is one), ``alerts_sent_total``
(alerts and signals in them), ``digests_total``, ``failed_total`` (failed attempts),
``retried_total`` (entries scheduled for another try), ``dead_lettered_total``,
``template_fallbacks_total``, and the gauges ``pending`` (messages of their own waiting,
retries included) and ``queued`` (alerts held for a digest), ``ready``.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

__all__ = ["NotifyMetrics"]

PREFIX = "news_monitor_notify"


class NotifyMetrics:
    """Counters and gauges of one notify process (labelled by destination)."""

    def __init__(self, destinations: Iterable[str]) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.records = Counter(f"{PREFIX}_records", "Records read from the alert and signal topics.", registry=r)
        self.skipped = Counter(
            f"{PREFIX}_skipped", "Records skipped: empty, not JSON, unsupported version, invalid.", ["reason"], registry=r
        )
        by = ["destination"]
        self.duplicates = Counter(
            f"{PREFIX}_duplicates", "Items not queued again: already had within the dedupe window.", by, registry=r
        )
        self.sent = Counter(f"{PREFIX}_sent", "Messages the destination accepted (a digest is one).", by, registry=r)
        self.alerts_sent = Counter(f"{PREFIX}_alerts_sent", "Alerts and signals delivered, alone or in digests.", by, registry=r)
        self.digests = Counter(f"{PREFIX}_digests", "Digests the destination accepted.", by, registry=r)
        self.failed = Counter(f"{PREFIX}_failed", "Failed send attempts (messages or digests).", by, registry=r)
        self.retried = Counter(f"{PREFIX}_retried", "Entries scheduled for another attempt after a failure.", by, registry=r)
        self.dead_lettered = Counter(f"{PREFIX}_dead_lettered", "Entries put on the dead-letter topic.", by, registry=r)
        self.template_fallbacks = Counter(
            f"{PREFIX}_template_fallbacks", "Alerts rendered with the default template (theirs broke).", by, registry=r
        )
        self.pending = Gauge(f"{PREFIX}_pending", "Messages of their own waiting to be sent (retries included).", by, registry=r)
        self.queued = Gauge(f"{PREFIX}_queued", "Alerts held in the state store for a digest.", by, registry=r)
        self.ready = Gauge(
            f"{PREFIX}_ready", "1 when the process is ready (consumer running, broker reachable, store usable).", registry=r
        )
        for name in destinations:
            for family in (self.duplicates, self.sent, self.alerts_sent, self.digests, self.failed, self.retried,
                           self.dead_lettered, self.template_fallbacks, self.pending, self.queued):  # fmt: skip
                family.labels(destination=name)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)

    def value(self, family: str, destination: str) -> float:
        """The current value of ``family`` (e.g. ``"sent"``) for ``destination``."""
        name = f"{PREFIX}_{family}" + ("" if family in {"pending", "queued"} else "_total")
        return self.registry.get_sample_value(name, {"destination": destination}) or 0.0
