"""Composition of ``news-monitor signals``: the story signals as a process of their own,
consuming the matchers' sightings, for when matching runs in several processes (docs/signals.md).

The same detectors as the daemon's (:mod:`monitor.signals`), fed with every matcher's
sightings (``[signals] sightings_topic``: a record per new article that counted for rules,
copies of a story included, live and shadow rules, exactly what the daemon's detectors
are fed), or with ``[signals] source = "alerts"`` with every live alert on the rules'
topics (for matchers of a release that publishes no sightings). Start-up: the rule
files are loaded (a bad one: exit 2), ``<[signals] state_dir>/signals.lock`` is taken
(exit 2 naming the holder), the state store there is opened and the detectors' state
restored, the producer connected within ``[kafka] connect_timeout`` (exit 3), signals left
in the store's outbox by an earlier run are sent, then the consumer joins
``[signals] group``. Each batch: its sightings through the detectors; the signals raised
and the detectors' new state saved in one transaction; the signals sent and acknowledged;
only then the batch's offsets are committed. So a crash at any point neither repeats a
signal (the state that raised it is saved with it) nor loses one (it waits in the outbox).
A record that is not a sighting (or an alert), or was detected more than
:data:`~monitor.signals.detect.CLOCK_SKEW` after this process's clock or more than 366 days
(the longest window or baseline) before the record's Kafka timestamp, is logged
(``signals.record.skipped``, with the reason) and committed past; a sighting its rule's window already holds (a batch read
again, a sighting a matcher published again) is passed over by :meth:`Signals.observe`.
SIGINT/SIGTERM: the batch in hand finishes, offsets are committed, exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import orjson
from aiokafka.errors import KafkaError

from monitor.adapters.kafka import KafkaPublisher, TopicReader, kafka_error_text
from monitor.adapters.statelock import StateLock
from monitor.adapters.store import AsyncStore
from monitor.app.notify import topic_pattern
from monitor.delivery.dead_letters import DeadLetters
from monitor.delivery.records import alert_problem, sighting_problem, signal_record
from monitor.delivery.sender import Sender
from monitor.engine import load_rules
from monitor.engine.loader import MAX_DURATION
from monitor.errors import BrokerError, ConfigError, PublishError, RecordRejected
from monitor.log import get_logger
from monitor.model import Record, Rule
from monitor.settings import Settings
from monitor.signals import Sighting, Signals
from monitor.signals.detect import CLOCK_SKEW
from monitor.signals.feed import RuleBook, detected_time, sighting_from_alert, sightings_of, sightings_topic_clash

__all__ = ["SignalsProcess", "sightings_from_records", "sightings_in"]

log = get_logger("signals")

_BACKOFF_MAX = 30.0


def _documents(records: Sequence[Any], problem_of: Callable[[Any], str | None], now: float | None) -> Iterator[dict[str, Any]]:
    """The decoded values of a batch that ``problem_of`` accepts, with a plausible detection
    time (see :func:`_time_problem`); the others are logged and skipped."""
    for record in records:
        try:
            document = orjson.loads(record.value or b"")
        except orjson.JSONDecodeError as exc:
            problem: str | None = f"not JSON ({exc})"
        else:
            problem = problem_of(document) or _time_problem(document, getattr(record, "timestamp", None), now)
        if problem is not None:
            log.warning("signals.record.skipped", topic=record.topic, partition=record.partition, offset=record.offset, reason=problem)
            continue
        yield document


def _time_problem(document: dict[str, Any], written_ms: Any, now: float | None) -> str | None:
    """What is implausible in a record's ``detected_at``: more than :data:`CLOCK_SKEW` after
    ``now`` (if given), or more than 366 days before the record's Kafka timestamp."""
    detected = detected_time(document)
    if detected is None:
        return None
    if now is not None and detected > now + CLOCK_SKEW:
        # One such record would move a rule's windows to its time: no burst of the rule until then.
        return f"detected_at {document['detected_at']!r} is more than {CLOCK_SKEW:g} s after this process's clock"
    if isinstance(written_ms, int) and written_ms > 0 and detected < written_ms / 1000 - MAX_DURATION:
        # One such record would make a spike take its baseline as watched since then.
        return f"detected_at {document['detected_at']!r} is more than 366 days before its record was written"
    return None


def sightings_in(records: Sequence[Any], rules: RuleBook, now: float | None = None) -> list[Sighting]:
    """The sightings of a batch of alert records (other records, and with ``now`` those
    detected in its future, are logged and skipped)."""
    found = (sighting_from_alert(document, rules.get) for document in _documents(records, alert_problem, now))
    return [sighting for sighting in found if sighting is not None]


def sightings_from_records(records: Sequence[Any], rules: RuleBook, now: float | None = None) -> list[Sighting]:
    """The sightings of a batch of sighting records (other records, and with ``now`` those
    detected in its future, are logged and skipped)."""
    return [sighting for document in _documents(records, sighting_problem, now) for sighting in sightings_of(document, rules)]


def check_sightings_topic(topic: str, rules: Iterable[Rule]) -> None:
    """Refuse (exit 2) a sightings topic that is also a rule's alert or signal topic."""
    clash = sightings_topic_clash(topic, rules) if topic else None
    if clash is not None:
        raise ConfigError(
            f"[signals] sightings_topic = {topic!r} is a topic of rule {clash!r}: its readers would meet sightings",
            hint='name another topic (the default is "news.sightings")',
        )


class SignalsProcess:
    """One ``news-monitor signals`` process (see the module docstring)."""

    def __init__(self, settings: Settings, *, bootstrap_servers: str | None = None, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.bootstrap = bootstrap_servers or settings.kafka.bootstrap_servers
        if self.bootstrap.strip().lower() == "embedded":
            raise ConfigError(
                "signals needs a running broker; the embedded one lives only as long as 'run'",
                hint="point [kafka] bootstrap_servers (NEWS_MONITOR_KAFKA_BOOTSTRAP_SERVERS) at the monitor's broker",
            )
        if settings.signals.source == "sightings" and not settings.signals.sightings_topic:
            raise ConfigError(
                '[signals] source = "sightings" needs a sightings_topic',
                hint='sightings_topic = "news.sightings", or source = "alerts" with matchers that publish no sightings',
            )  # fmt: skip
        self.clock = clock
        self.stop_event = asyncio.Event()
        #: Signals published by this process.
        self.published = 0
        #: Signal topics known to exist (a sighting may name a rule the rule files lack).
        self._ensured: set[str] = set()
        self.signals: Signals | None = None

    def stop(self) -> None:
        """Finish the batch in hand, commit, and return from :meth:`run`."""
        self.stop_event.set()

    async def run(self, *, handle_signals: bool = True) -> int:
        """Run until :meth:`stop` (or SIGINT/SIGTERM); returns the exit code."""
        options = self.settings.signals
        ruleset = load_rules(self.settings.rule_paths)
        if options.source == "sightings":
            check_sightings_topic(options.sightings_topic, ruleset.rules)
        state_dir = self.settings.resolve(options.state_dir)
        lock = StateLock(
            state_dir, "signals.lock", hint="one signals process per state directory ([signals] state_dir)", setting="[signals] state_dir"
        ).acquire()
        async with contextlib.AsyncExitStack() as stack:
            stack.callback(lock.release)
            store = AsyncStore.open(state_dir)
            stack.push_async_callback(store.close)
            detectors = self.signals = Signals(levels=options.escalation, story_ttl=2 * self.settings.stories.window_hours * 3600.0)
            detectors.restore(await store.signal_state())
            detectors.watch(ruleset.rules, self.clock())
            publisher = KafkaPublisher(self.settings.kafka, self.bootstrap)
            await publisher.start()
            stack.push_async_callback(publisher.stop, 10.0)
            rules = RuleBook(ruleset.rules)
            if options.source == "alerts":
                topics = sorted(rule.output_topic for rule in ruleset.rules if rule.enabled and rule.mode == "live")
                signal_topics = [f"{topic}.signals" for topic in topics]
                read: Callable[[Sequence[Any], RuleBook, float], list[Sighting]] = sightings_in
            else:
                # Shadow rules' sightings too, as in the daemon: their signals go to <topic>.shadow.signals.
                topics = [options.sightings_topic]
                signal_topics = sorted({f"{rule.output_topic}.signals" for rule in ruleset.rules if rule.enabled})
                read = sightings_from_records
            await publisher.ensure_topics([*signal_topics, *topics])
            self._ensured.update(signal_topics)
            await self._send(store, publisher, await store.pending())
            if handle_signals:
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, self.stop)
                    stack.callback(loop.remove_signal_handler, sig)
            reader = TopicReader(
                self.settings.kafka, self.bootstrap, [], group=options.group, pattern=topic_pattern(topics, []),
                from_beginning=options.from_beginning, metadata_max_age_ms=30_000,
            )  # fmt: skip
            try:
                await reader.__aenter__()
            except (KafkaError, OSError) as exc:
                raise BrokerError(f"cannot start the consumer at {self.bootstrap}: {kafka_error_text(exc)}") from exc
            stack.push_async_callback(reader.__aexit__, None, None, None)
            log.info("signals.started", group=options.group, source=options.source, topics=topics)
            await self._consume(reader, read, rules, detectors, store, publisher)
        log.info("signals.stopped", published=self.published)
        return 0

    async def _consume(
        self, reader: TopicReader, read: Callable[[Sequence[Any], RuleBook, float], list[Sighting]], rules: RuleBook,
        detectors: Signals, store: AsyncStore, publisher: KafkaPublisher,
    ) -> None:  # fmt: skip
        batches = reader.batches()
        try:
            while not self.stop_event.is_set():
                nxt = asyncio.ensure_future(anext(batches))
                stopper = asyncio.ensure_future(self.stop_event.wait())
                done, _ = await asyncio.wait({nxt, stopper}, return_when=asyncio.FIRST_COMPLETED)
                stopper.cancel()
                if nxt not in done:
                    nxt.cancel()
                    await asyncio.gather(nxt, return_exceptions=True)
                    break
                batch = nxt.result()
                now = self.clock()
                raised = detectors.observe(read(batch, rules, now), now)
                records = [signal_record(s) for s in raised]
                await store.save_signals(records, detectors.changes())
                if not await self._send(store, publisher, records):
                    break  # stopped while the broker was away: the records wait in the outbox
                for record in batch:
                    reader.processed(record)
        finally:
            await batches.aclose()  # type: ignore[attr-defined]

    async def _send(self, store: AsyncStore, publisher: KafkaPublisher, records: Sequence[Record]) -> bool:
        """Publish each record until acknowledged, then drop it from the outbox; False when
        stopped first."""
        for record in records:
            backoff = 0.5
            while True:
                try:
                    if record.topic not in self._ensured:
                        await publisher.ensure_topics([record.topic])
                        self._ensured.add(record.topic)
                    await publisher.publish(record)
                except RecordRejected as exc:
                    # Retrying cannot help, and acknowledging it lost it: it was deleted from the outbox.
                    dead_letter_topic = self.settings.kafka.dead_letter_topic
                    log.error(
                        "signals.record.rejected", topic=record.topic, signal_id=record.alert_id, error=str(exc),
                        hint=f"it goes to the dead-letter topic {dead_letter_topic} (the reason in its dlq_reason header); "
                        f"read it there (news-monitor tail {dead_letter_topic}) and send it by hand if it matters",
                    )  # fmt: skip
                    letters = DeadLetters(
                        Sender(publisher, dead_letter_topic=dead_letter_topic),
                        ack=lambda r: store.ack(r.alert_id, r.topic, r.article_id),
                        max_attempts=self.settings.delivery.max_attempts,
                    )
                    # Acknowledged once the dead-letter topic took it; else kept for the next start.
                    await letters.send(record, str(exc))
                    break
                except (PublishError, TimeoutError) as exc:
                    log.warning("signals.publish.failed", topic=record.topic, error=str(exc), retry_in=backoff)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.stop_event.wait(), backoff)
                    if self.stop_event.is_set():
                        return False
                    backoff = min(_BACKOFF_MAX, backoff * 2)
                    continue
                self.published += 1
                log.info("signal.published", topic=record.topic, signal_id=record.alert_id)
                await store.ack(record.alert_id, record.topic, record.article_id)
                break
        return True
