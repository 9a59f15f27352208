"""Composition of ``news-monitor notify``: builds the adapters around :class:`monitor.notify.service.NotifyService`
and runs it until SIGINT/SIGTERM; and ``notify --test``.

Start-up, in order: the destinations are checked (a bad table, template or URL: exit 2),
the state directory's ``notify.lock`` is taken (exit 2 naming the holder), the state
store opened (exit 2 when it cannot be used), the dead-letter producer connected within
``[kafka] connect_timeout`` (exit 3), the HTTP endpoint bound (exit 2), then the
consumer joins its group. SIGINT/SIGTERM: stop reading (the last batch's offsets are
committed), let sends in flight finish within ``[notify] shutdown_timeout``, exit 0;
a second signal stops at once (queued entries stay in the state store).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import os
import signal
from collections.abc import Sequence
from datetime import UTC, datetime

from aiokafka.errors import KafkaError

from monitor.adapters.kafka import KafkaPublisher, TopicReader, kafka_error_text, probe_broker
from monitor.adapters.notify_apprise import AppriseSender, SendThreads
from monitor.adapters.notify_store import AsyncNotifyStore
from monitor.adapters.notify_web import NotifyWebServer
from monitor.adapters.statelock import StateLock
from monitor.delivery.records import DLQ_ORIGINAL_TOPIC_HEADER, DLQ_REASON_HEADER, alert_record
from monitor.errors import BrokerError, ConfigError
from monitor.log import get_logger
from monitor.model import Alert, Hit, Record, alert_id_for
from monitor.notify.config import Destination
from monitor.notify.items import decode_item
from monitor.notify.service import Clock, Entry, NotifyOptions, NotifyService, Route
from monitor.observe.notify import NotifyMetrics
from monitor.settings import Settings

__all__ = ["NotifyProcess", "sample_alert", "send_test", "topic_pattern"]

log = get_logger("notify")

#: Header naming the destination of a dead letter from the notify process.
DESTINATION_HEADER = "notify_destination"
_PROBE_INTERVAL = 15.0


def topic_pattern(topics: Sequence[str], exclude: Sequence[str]) -> str:
    """One regular expression for the consumer's subscription: any of ``topics`` (names
    or globs), none of ``exclude``, never Kafka's internal ``__*`` topics."""
    include = "|".join(fnmatch.translate(t.strip()) for t in topics)
    excluded = "|".join(fnmatch.translate(t.strip()) for t in (*exclude, "__*"))
    return f"(?!{excluded})(?:{include})"


class _DeadLetters:
    """Puts an entry's original record on ``[notify] dead_letter_topic`` with the reason."""

    def __init__(self, publisher: KafkaPublisher, topic: str) -> None:
        self._publisher = publisher
        self.topic = topic

    async def publish(self, entry: Entry, reason: str) -> None:
        ours = {DLQ_REASON_HEADER, DLQ_ORIGINAL_TOPIC_HEADER, DESTINATION_HEADER}
        headers = (
            *((name, value) for name, value in entry.headers if name not in ours),
            (DLQ_REASON_HEADER, reason.encode("utf-8", "replace")[:500]),
            (DLQ_ORIGINAL_TOPIC_HEADER, entry.topic.encode()),
            (DESTINATION_HEADER, entry.destination.encode()),
        )
        key = entry.record_key or b""
        await self._publisher.publish(
            Record(
                alert_id=entry.key,
                article_id=key.decode("utf-8", "replace"),
                topic=self.topic,
                key=key,
                value=entry.value,
                headers=headers,
            )
        )


class NotifyProcess:
    """One ``news-monitor notify`` process (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        *,
        bootstrap_servers: str | None = None,
        destinations: Sequence[Destination] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.bootstrap = bootstrap_servers or settings.kafka.bootstrap_servers
        if self.bootstrap.strip().lower() == "embedded":
            raise ConfigError(
                "notify needs a running broker; the embedded one lives only as long as 'run'",
                location=None,
                hint="point [kafka] bootstrap_servers (NEWS_MONITOR_KAFKA_BOOTSTRAP_SERVERS) at the monitor's broker",
            )
        self.destinations = list(destinations) if destinations is not None else settings.notify_destinations(os.environ)
        if not self.destinations:
            raise ConfigError(
                "no destination: notify needs at least one [[notify.destination]] table",
                hint='[[notify.destination]] with name = "desk" and url = "json://hooks.example.org/news" (see docs/notify.md)',
            )
        self.clock = clock
        self.stop_event = asyncio.Event()
        self.metrics = NotifyMetrics([d.name for d in self.destinations])
        self.service: NotifyService | None = None
        self.web: NotifyWebServer | None = None
        self._reader: TopicReader | None = None
        self._broker_problem: str | None = "the broker has not been checked yet"
        self._signals = 0

    def readiness(self) -> tuple[bool, list[str]]:
        problems = []
        if self._reader is None or not self._reader.assigned.is_set():
            problems.append("the consumer has not joined its group yet")
        if self._broker_problem:
            problems.append(self._broker_problem)
        if self.service is not None and self.service.store_failure:
            problems.append(f"the state store is failing: {self.service.store_failure}")
        self.metrics.ready.set(0 if problems else 1)
        return not problems, problems

    def stop(self) -> None:
        self.stop_event.set()

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("notify.stopping", signal=sig.name)
            self.stop()
        else:
            log.warning("notify.stopping.now", signal=sig.name, hint="queued entries stay in the state store")
            os._exit(0)

    async def run(self, *, handle_signals: bool = True) -> int:
        """Run until :meth:`stop` (or SIGINT/SIGTERM); returns the exit code."""
        notify = self.settings.notify
        executor = SendThreads("notify-send")
        routes = [Route(d, AppriseSender(d, executor)) for d in self.destinations]
        lock = StateLock(
            self.settings.state_dir, "notify.lock",
            hint="one notify process per state directory: give each instance of the group its own [state] dir",
        ).acquire()  # fmt: skip
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(lock.release)
            store = AsyncNotifyStore.open(self.settings.state_dir)
            stack.push_async_callback(store.close)
            publisher = KafkaPublisher(self.settings.kafka, self.bootstrap)
            await publisher.start()
            stack.push_async_callback(publisher.stop, 10.0)
            await self._ensure_dead_letter_topic(publisher)
            self.service = service = self._service(routes, store, publisher)
            if notify.listen.strip():
                self.web = await NotifyWebServer(
                    notify.listen, render_metrics=self._render_metrics, readiness=self.readiness, status=service.status
                ).start()
                stack.push_async_callback(self.web.stop)
            if handle_signals:
                self._handle_signals(stack)
            probe = asyncio.create_task(self._probe_loop())
            stack.callback(probe.cancel)
            await service.start()
            stack.push_async_callback(service.stop)
            log.info(
                "notify.started", destinations=[d.name for d in self.destinations], group=notify.group,
                topics=list(notify.topics), safe_urls={r.name: r.sender.safe_url for r in routes},  # type: ignore[attr-defined]
            )  # fmt: skip
            await self._consume(service)
        log.info("notify.stopped")
        return 0

    def _service(self, routes: list[Route], store: AsyncNotifyStore, publisher: KafkaPublisher) -> NotifyService:
        notify = self.settings.notify
        options = NotifyOptions(
            max_attempts=notify.max_attempts, retry_backoff_initial=notify.retry_backoff_initial,
            retry_backoff_max=notify.retry_backoff_max, concurrency=notify.concurrency,
            dedupe_days=notify.dedupe_days, shutdown_timeout=notify.shutdown_timeout, send_timeout=notify.send_timeout,
        )  # fmt: skip
        return NotifyService(
            routes, store, _DeadLetters(publisher, notify.dead_letter_topic), options=options, clock=self.clock, metrics=self.metrics
        )

    def _handle_signals(self, stack: contextlib.AsyncExitStack) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
            stack.callback(loop.remove_signal_handler, sig)

    def _render_metrics(self) -> bytes:
        self.readiness()
        return self.metrics.render()

    async def _ensure_dead_letter_topic(self, publisher: KafkaPublisher) -> None:
        topic = self.settings.notify.dead_letter_topic
        try:
            await publisher.ensure_topics([topic])
        except BrokerError as exc:
            log.warning(
                "notify.dead_letter_topic.unchecked",
                topic=topic,
                error=str(exc),
                hint="dead letters are retried until the topic can be written",
            )

    async def _consume(self, service: NotifyService) -> None:
        notify = self.settings.notify
        excluded = [notify.dead_letter_topic, self.settings.kafka.dead_letter_topic, self.settings.health.topic]
        if self.settings.kafka.articles_topic:
            excluded.append(self.settings.kafka.articles_topic)
        reader = TopicReader(
            self.settings.kafka, self.bootstrap, [], group=notify.group,
            pattern=topic_pattern(notify.topics, [*notify.exclude_topics, *excluded]),
            from_beginning=notify.from_beginning, metadata_max_age_ms=30_000,
        )  # fmt: skip
        self._reader = reader
        try:
            # Not bounded by connect_timeout: the producer reached the broker already, and
            # joining the group waits out the session of a member that died (a restart).
            await reader.__aenter__()
        except (KafkaError, OSError) as exc:
            raise BrokerError(
                f"cannot start the consumer at {self.bootstrap}: {kafka_error_text(exc)}",
                hint="check [kafka] bootstrap_servers and that the broker is up",
            ) from exc
        try:
            await service.consume(reader, self.stop_event)
        finally:
            await reader.__aexit__(None, None, None)

    async def _probe_loop(self) -> None:
        plaintext = self.settings.kafka.security_protocol in {"PLAINTEXT", "SASL_PLAINTEXT"}
        while True:
            ok, error = await probe_broker(self.bootstrap, kafka_protocol=plaintext)
            self._broker_problem = None if ok else f"the broker does not answer: {error}"
            await asyncio.sleep(_PROBE_INTERVAL)


def sample_alert() -> tuple[bytes, tuple[tuple[str, bytes], ...]]:
    """A made-up alert record (value, headers) for ``notify --test``."""
    article_id = "urn:news-monitor:test-message"
    alert = Alert(
        alert_id=alert_id_for("news-monitor-test", article_id), rule_id="news-monitor-test", topic="alerts.news-monitor-test",
        severity="info", tags=("test",), article_id=article_id, url="https://example.org/news-monitor/test-message",
        title="Test message from news-monitor notify", published=None, feed_url="https://example.org/feed.xml",
        matches=(Hit("test", "title", 0, 4, "Test"),),
        snippet="If you can read this, news-monitor can reach this destination. Alerts will look like this one.",
        detected_at=datetime.now(UTC), ruleset_version="test",
    )  # fmt: skip
    record = alert_record(alert)
    return record.value, record.headers


async def send_test(destination: Destination, send_timeout: float = 120.0) -> tuple[str, str | None]:
    """Send a sample alert to ``destination`` with its templates; (the URL as shown, the
    error or None, also when it did not finish within ``send_timeout`` seconds)."""
    sender = AppriseSender(destination, SendThreads("notify-test"))
    value, headers = sample_alert()
    item, _problem = decode_item("alerts.news-monitor-test", value, headers)
    assert item is not None
    message, _broken = destination.renderer(sender.markdown).alert(item)
    try:
        return sender.safe_url, await asyncio.wait_for(sender.send(message), send_timeout)
    except TimeoutError:
        return sender.safe_url, f"{destination.name} did not finish within send_timeout ({send_timeout:g} s)"
