"""aiokafka at the edge: the producer that publishes records, topic administration, the
consumers behind ``news-monitor tail`` and ``news-monitor notify``, and
:func:`probe_broker`, the cheap broker check behind ``/readyz``.

Producer settings follow what is right for Apache Kafka (``acks=all``, idempotence,
compression, bounded linger); idempotence is turned off for the embedded Tansu broker,
which cannot do it (see ``KafkaSettings.idempotence``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import count
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.codec import has_lz4, has_snappy, has_zstd
from aiokafka.errors import (
    BrokerResponseError,
    CommitFailedError,
    CorruptRecordException,
    InvalidTopicError,
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    NoBrokersAvailable,
    NodeNotReadyError,
    RecordListTooLargeError,
    RecordTooLargeError,
    RequestTimedOutError,
    UnknownError,
    UnsupportedForMessageFormatError,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.structs import TopicPartition

from monitor.errors import BrokerError, ConfigError, PublishError, RecordRefused, RecordRejected, error_text
from monitor.log import get_logger
from monitor.model import Record
from monitor.settings import KafkaSettings

__all__ = ["KafkaPublisher", "TopicAdmin", "TopicReader", "connection_options", "kafka_error_text", "probe_broker", "producer_options"]

log = get_logger("kafka")

_TOPIC_ALREADY_EXISTS = 36
#: Errors the broker (or the client, before sending) gives for one record that no retry
#: can fix: the record goes to the dead-letter topic instead.
_RECORD_REJECTIONS = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    CorruptRecordException,
    InvalidTopicError,
    UnsupportedForMessageFormatError,
)
#: Errors that mean the broker (or the way to it) is away, not that it refused this
#: record: retried for as long as the outage lasts. aiokafka retries ``retriable`` broker
#: errors itself until the request times out, and then raises them (or a timeout).
_OUTAGES = (KafkaConnectionError, KafkaTimeoutError, NoBrokersAvailable, NodeNotReadyError, RequestTimedOutError)


def _is_outage(exc: KafkaError) -> bool:
    """Whether a failed send means "the broker is away" (retried until it is back) rather
    than "the broker answered this record with an error" (retried a bounded number of times)."""
    return isinstance(exc, _OUTAGES) or bool(getattr(exc, "retriable", False))


#: Create-topic error codes that mean "ask again later" (not a configuration problem).
_CREATE_TOPIC_TRANSIENT = {
    5,  # LEADER_NOT_AVAILABLE
    7,  # REQUEST_TIMED_OUT
    8,  # BROKER_NOT_AVAILABLE
    41,  # NOT_CONTROLLER
}


def kafka_error_text(exc: BaseException) -> str:
    """A client error in one readable clause, led by its Kafka name (the one the broker's
    logs and Kafka's documentation use): aiokafka's own text often starts with that name
    already, a broker answer's with ``[Error N]``, one with no message says nothing more
    (a timeout says "timed out", a broker answer gives Kafka's description), and its
    bootstrap failure lists Python tuples (the address is said anyway). Other exceptions
    (a socket's) get :func:`~monitor.errors.error_text`."""
    if not isinstance(exc, KafkaError):
        return error_text(exc)
    name = type(exc).__name__
    if isinstance(exc, BrokerResponseError):
        said = " ".join(str(arg) for arg in exc.args) or exc.description.rstrip(".") or exc.message
        return " ".join(f"{name} (Kafka error {exc.errno}): {said}".split())
    text = " ".join(str(arg) for arg in exc.args)
    if "Unable to bootstrap from" in text:
        return f"{name}: no broker at that address answered"
    if not text:
        return f"{name}: timed out" if isinstance(exc, KafkaTimeoutError) else name
    return error_text(exc)


def connection_options(settings: KafkaSettings, bootstrap_servers: str) -> dict[str, Any]:
    """Options shared by producer, consumer and admin client: address and security."""
    options: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers,
        "client_id": settings.client_id,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in {"SSL", "SASL_SSL"}:
        options["ssl_context"] = create_ssl_context(
            cafile=settings.ssl_cafile or None,
            certfile=settings.ssl_certfile or None,
            keyfile=settings.ssl_keyfile or None,
            password=settings.ssl_password or None,
        )
    if settings.security_protocol in {"SASL_PLAINTEXT", "SASL_SSL"}:
        options["sasl_mechanism"] = settings.sasl_mechanism or "PLAIN"
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = settings.sasl_password
    return options


def _compression(setting: str) -> str | None:
    if setting != "auto":
        if setting in {"", "none"}:
            return None
        if setting != "gzip" and not has_snappy():  # snappy, lz4 and zstd: all through cramjam
            raise ConfigError(
                f"[kafka] compression_type = {setting!r} needs its codec, which is not installed",
                hint='pip install cramjam, or compression_type = "auto" (zstd or lz4 when installed, else gzip)',
            )
        return setting
    if has_zstd():
        return "zstd"
    if has_lz4():
        return "lz4"
    return "gzip"


def producer_options(settings: KafkaSettings, bootstrap_servers: str) -> dict[str, Any]:
    """The AIOKafkaProducer keyword arguments for these settings."""
    acks: Any = "all" if settings.acks in {"all", "-1"} else int(settings.acks)
    return {
        **connection_options(settings, bootstrap_servers),
        "acks": acks,
        "enable_idempotence": settings.idempotence,
        "compression_type": _compression(settings.compression_type),
        "linger_ms": settings.linger_ms,
        "max_batch_size": settings.max_batch_size,
        "max_request_size": settings.max_request_size,
        "request_timeout_ms": settings.request_timeout_ms,
        "retry_backoff_ms": settings.retry_backoff_ms,
    }


@dataclass
class TopicReport:
    created: list[str]
    existing: list[str]
    #: Topics that exist with fewer partitions than configured: used, but reported.
    under_partitioned: dict[str, int]


class TopicAdmin:
    """Creates missing topics with the configured partitions and replication factor."""

    def __init__(self, settings: KafkaSettings, bootstrap_servers: str) -> None:
        self._settings = settings
        self._bootstrap = bootstrap_servers

    async def ensure(self, topics: Iterable[str], *, compacted: Iterable[str] = ()) -> TopicReport:
        """Create every topic in ``topics`` (and ``compacted``) that does not exist yet; those
        in ``compacted`` with ``cleanup.policy=compact`` (they hold the latest value per key)."""
        compact = set(compacted)
        wanted = sorted(set(topics) | compact)
        admin = AIOKafkaAdminClient(
            **connection_options(self._settings, self._bootstrap),
            request_timeout_ms=self._settings.request_timeout_ms,
        )
        try:
            # Inside the try: a start that fails half-way still holds connections to close.
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [t for t in wanted if t not in existing]
            created = await self._create(admin, missing, compact) if missing else []
            present = [t for t in wanted if t in existing]
            under = await self._under_partitioned(admin, present) if present else {}
            if created:
                log.info("kafka.topics.created", topics=created)
            return TopicReport(created, present, under)
        finally:
            await admin.close()

    async def _create(self, admin: AIOKafkaAdminClient, missing: list[str], compact: set[str]) -> list[str]:
        response = await admin.create_topics(
            [
                NewTopic(
                    t,
                    self._settings.topic_partitions,
                    self._settings.topic_replication_factor,
                    topic_configs={"cleanup.policy": "compact"} if t in compact else None,
                )
                for t in missing
            ]
        )
        created: list[str] = []
        # aiokafka does not raise on per-topic errors: read them.
        for topic, code, message in response.topic_errors:
            if code == 0:
                created.append(topic)
            elif code in _CREATE_TOPIC_TRANSIENT:
                raise PublishError(f"cannot create topic {topic!r} yet: error {code}: {message}")
            elif code != _TOPIC_ALREADY_EXISTS:
                raise BrokerError(
                    f"cannot create topic {topic!r}: error {code}: {message}",
                    hint="check the topic name, [kafka] topic_partitions and topic_replication_factor, and the ACLs",
                )
        return created

    async def _under_partitioned(self, admin: AIOKafkaAdminClient, present: list[str]) -> dict[str, int]:
        """Existing topics with fewer partitions than configured: used, but logged."""
        under: dict[str, int] = {}
        for description in await admin.describe_topics(present):
            count = len(description.get("partitions", ()))
            if description.get("error_code", 0) == 0 and count < self._settings.topic_partitions:
                under[description["topic"]] = count
        for topic, count in under.items():
            log.warning("kafka.topic.under_partitioned", topic=topic, partitions=count, configured=self._settings.topic_partitions)
        return under

    async def partition_counts(self, topics: Iterable[str]) -> dict[str, int]:
        """The partition count of each of ``topics`` that exists (missing ones are left
        out, and not created: a broker that creates topics on a metadata request, such as
        Tansu, is only asked about topics it lists); :class:`BrokerError` when the broker
        cannot be asked."""
        admin = AIOKafkaAdminClient(
            **connection_options(self._settings, self._bootstrap),
            request_timeout_ms=self._settings.request_timeout_ms,
        )
        try:
            await admin.start()
            existing = [t for t in set(topics) if t in set(await admin.list_topics())]
            if not existing:
                return {}
            return {
                d["topic"]: len(d.get("partitions", ()))
                for d in await admin.describe_topics(existing)
                if d.get("error_code", 0) == 0
            }
        except (KafkaError, OSError, TimeoutError) as exc:
            raise BrokerError(
                f"cannot reach Kafka at {self._bootstrap}: {kafka_error_text(exc)}",
                hint="check [kafka] bootstrap_servers (NEWS_MONITOR_KAFKA_BOOTSTRAP_SERVERS) and that the broker is up",
            ) from exc
        finally:
            await admin.close()


class _ExpectedRefusal(logging.Filter):
    """aiokafka logs a broker's refusal of InitProducerId (``UnknownError``) at error level
    before raising it. With ``enable_idempotence = "auto"`` that refusal is expected (the
    publisher falls back, with its own ``kafka.idempotence.unsupported`` warning), so the
    line is passed on as debug. Any other error, and this one at any other time, stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        refused = isinstance(args, tuple) and bool(args) and args[0] is UnknownError
        if record.levelno >= logging.ERROR and refused and "InitProducerId" in str(record.msg):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.getLogger().isEnabledFor(logging.DEBUG)
        return True


@contextmanager
def _expecting_refusal(active: bool) -> Iterator[None]:
    """Demote aiokafka's InitProducerId refusal while ``active`` (see :class:`_ExpectedRefusal`)."""
    if not active:
        yield
        return
    sender_log = logging.getLogger("aiokafka.producer.sender")
    refusal = _ExpectedRefusal()
    sender_log.addFilter(refusal)
    try:
        yield
    finally:
        sender_log.removeFilter(refusal)


class KafkaPublisher:
    """Publishes :class:`~monitor.model.Record` objects; ``send`` returns the ack future."""

    def __init__(self, settings: KafkaSettings, bootstrap_servers: str) -> None:
        self.settings = settings
        self.bootstrap_servers = bootstrap_servers
        self.admin = TopicAdmin(settings, bootstrap_servers)
        self._producer: AIOKafkaProducer | None = None

    async def start(self, timeout: float | None = None) -> None:
        """Connect, retrying until ``timeout`` (``[kafka] connect_timeout``); BrokerError after."""
        timeout = self.settings.connect_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        options = producer_options(self.settings, self.bootstrap_servers)
        auto = self.settings.enable_idempotence.strip().lower() == "auto"
        while True:
            producer = AIOKafkaProducer(**options)
            try:
                # Only while "auto" probes whether the broker can do idempotence.
                with _expecting_refusal(auto and options["enable_idempotence"]):
                    await asyncio.wait_for(producer.start(), timeout=max(0.5, deadline - time.monotonic()))
            except UnknownError as exc:
                await producer.stop()
                if options["enable_idempotence"] and auto:
                    # Some Kafka-protocol brokers (Tansu, used by `news-monitor broker`) refuse
                    # InitProducerId. "auto" means: idempotent where the broker can do it.
                    log.warning(
                        "kafka.idempotence.unsupported",
                        bootstrap_servers=self.bootstrap_servers,
                        hint="the broker refused an idempotent producer; continuing without idempotence",
                    )
                    options = {**options, "enable_idempotence": False}
                    continue
                last_error = exc
                if time.monotonic() >= deadline:
                    raise BrokerError(
                        f"Kafka at {self.bootstrap_servers} refused the producer: {exc}",
                        hint="if this broker cannot do idempotent producers, set [kafka] enable_idempotence = false",
                    ) from exc
                await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
                continue
            except (TimeoutError, KafkaError, OSError) as exc:
                last_error = exc
                await producer.stop()
                if time.monotonic() >= deadline:
                    raise BrokerError(
                        f"cannot reach Kafka at {self.bootstrap_servers} within {timeout:g}s: {kafka_error_text(exc)}",
                        hint="check [kafka] bootstrap_servers (NEWS_MONITOR_KAFKA_BOOTSTRAP_SERVERS) and that the broker is up",
                    ) from last_error
                await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
                continue
            self._producer = producer
            return

    async def ensure_topics(self, topics: Iterable[str], *, compacted: Iterable[str] = ()) -> TopicReport:
        """Create missing topics (``compacted`` ones compacted); :class:`PublishError` when
        the broker cannot be asked."""
        topics = list(topics)
        try:
            report = await self.admin.ensure(topics, compacted=compacted)
            if self._producer is not None:
                # The producer learns of a topic at its first send and then asks the broker
                # about the topics sent to so far alone; a topic just created among existing
                # ones left sends to those stalled for request_timeout_ms (Tansu answered
                # NotLeaderForPartition). Tracking all of them from the start avoids that.
                for topic in topics:
                    self._producer.client.add_topic(topic)
                await self._producer.client.force_metadata_update()
            return report
        except PublishError:
            raise
        except BrokerError as exc:
            # Retried like an outage: an operator can fix ACLs or settings without a restart.
            raise PublishError(str(exc)) from exc
        except (TimeoutError, KafkaError, OSError) as exc:
            raise PublishError(
                f"cannot check topics at {self.bootstrap_servers}: {kafka_error_text(exc)}"
            ) from exc

    async def partition_count(self, topic: str) -> int:
        """How many partitions ``topic`` has (:class:`PublishError` when it cannot be told)."""
        if self._producer is None:
            raise PublishError("publisher is not started")
        try:
            partitions = await self._producer.partitions_for(topic)
        except (KafkaError, OSError) as exc:
            raise PublishError(f"cannot read the partitions of {topic}: {kafka_error_text(exc)}") from exc
        if not partitions:
            raise PublishError(f"topic {topic} has no partitions (yet)")
        return len(partitions)

    async def publish(self, record: Record, *, partition: int | None = None, tombstone: bool = False) -> int:
        """Send one record (to ``partition`` when given, else by its key) and wait for the
        broker's acknowledgement; the record's offset. ``tombstone``: send no value (the
        record's key is deleted from a compacted topic), whatever ``record.value`` holds.

        Raises :class:`RecordRejected` when no retry can help, :class:`RecordRefused` when
        the broker answered this record with another error (a bounded number of retries
        may help), :class:`PublishError` when the broker is away (connection, timeout).
        """
        if self._producer is None:
            raise PublishError("publisher is not started")
        try:
            ack = await self._producer.send(
                record.topic,
                value=None if tombstone else record.value,
                key=record.key,
                headers=list(record.headers),
                partition=partition,
            )
            metadata = await ack
        except _RECORD_REJECTIONS as exc:
            raise RecordRejected(
                f"record of {len(record.value)} bytes for {record.topic} rejected: {kafka_error_text(exc)}",
                hint="raise [kafka] max_request_size and the topic's max.message.bytes, or shorten the alert",
            ) from exc
        except (TypeError, ValueError) as exc:
            # The client could not encode the record (a header or key of the wrong type):
            # the same every time, so retrying cannot help.
            raise RecordRejected(f"record for {record.topic} cannot be encoded: {error_text(exc)}") from exc
        except KafkaError as exc:
            message = f"publish to {record.topic} failed: {kafka_error_text(exc)}"
            if _is_outage(exc):
                raise PublishError(message) from exc
            raise RecordRefused(message) from exc
        except OSError as exc:
            raise PublishError(f"publish to {record.topic} failed: {error_text(exc)}") from exc
        return int(metadata.offset)

    async def flush(self) -> None:
        if self._producer is not None:
            await self._producer.flush()

    async def stop(self, timeout: float | None = None) -> None:
        """Flush and disconnect, waiting at most ``timeout`` s (None: as long as it takes); safe to call twice.

        Records the producer still holds when time runs out are not lost: they were
        never acknowledged, so they are still in the outbox.
        """
        producer, self._producer = self._producer, None
        if producer is None:
            return
        stopping = asyncio.ensure_future(producer.stop())
        try:
            # Shielded: cancelling aiokafka's stop half-way leaves its sender running.
            await asyncio.wait_for(asyncio.shield(stopping), timeout)
        except TimeoutError:
            log.warning("kafka.producer.stop_timeout", timeout=timeout, hint="unacknowledged records stay in the outbox")


class TopicReader:
    """Reads records from topics, for ``news-monitor tail`` and other consumers.

    Without a group nothing is committed. With a group, auto-commit is off and only
    records the caller marked with :meth:`processed` are committed (after each batch,
    when a rebalance takes partitions away, and on close), so a consumer that dies
    re-reads at most what it had not finished.

    ``pattern`` subscribes to every topic whose name matches the regular expression,
    including topics created later (seen within ``metadata_max_age_ms``). A partition
    without a committed offset is then read from its beginning when its topic appeared
    after the reader started (or always, with ``from_beginning``), else from its end.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        bootstrap_servers: str,
        topics: list[str],
        *,
        from_beginning: bool = False,
        group: str | None = None,
        idle_timeout: float | None = None,
        pattern: str | None = None,
        max_records: int = 500,
        metadata_max_age_ms: int = 300_000,
    ) -> None:
        self._group = group
        self._idle_timeout = idle_timeout
        self._max_records = max_records
        self._pattern = pattern
        self._from_beginning = from_beginning
        self._consumer = AIOKafkaConsumer(
            *topics,
            **connection_options(settings, bootstrap_servers),
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if from_beginning or pattern is not None else "latest",
            # The broker holds a JoinGroup for half the session timeout; 6 s is Kafka's minimum.
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            metadata_max_age_ms=metadata_max_age_ms,
        )
        self._done: dict[TopicPartition, int] = {}
        #: Held while a batch from :meth:`batches` is being handled; a rebalance waits for it.
        self._lock = asyncio.Lock()
        self._owned: set[TopicPartition] = set()
        self._initial_topics: set[str] = set()
        self.assigned = asyncio.Event()
        if group is not None and pattern is not None:
            self._consumer.subscribe(pattern=pattern, listener=_Rebalance(self))

    async def __aenter__(self) -> TopicReader:
        try:
            await self._consumer.start()
            if self._pattern is not None:
                self._initial_topics = set(await self._consumer.topics())
        except BaseException:
            # Closed here, or aiokafka logs "Unclosed AIOKafkaConsumer" under the caller's error.
            await self._consumer.stop()
            raise
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.commit()
        finally:
            await self._consumer.stop()

    def processed(self, record: Any) -> None:
        """Mark ``record`` as handled: its offset is committed with the next commit."""
        self._done[TopicPartition(record.topic, record.partition)] = record.offset + 1

    async def commit(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Commit the offsets of processed records (nothing without a group), of
        ``partitions`` only when given."""
        if self._group is None or not self._done:
            return
        if partitions is None:
            offsets, self._done = dict(self._done), {}
        else:
            offsets = {tp: self._done.pop(tp) for tp in partitions if tp in self._done}
        if offsets:
            await self._consumer.commit(offsets)

    async def records(self) -> AsyncIterator[Any]:
        """Yield records as they arrive; stop after ``idle_timeout`` s without one."""
        wait_ms = int((self._idle_timeout or 1.0) * 1000)
        while True:
            batch = await self._consumer.getmany(timeout_ms=wait_ms, max_records=self._max_records)
            if not batch:
                if self._idle_timeout is not None:
                    return
                continue
            for partition_records in batch.values():
                for record in partition_records:
                    yield record
            await self.commit()

    async def batches(self) -> AsyncIterator[list[Any]]:
        """Yield batches of records of the partitions this reader owns. The caller marks
        each record :meth:`processed` once it is handled; what is marked is committed when
        the next batch is asked for, when a rebalance takes partitions away, and on close.

        A rebalance waits while a batch is handled (until the next one is asked for), and
        records of partitions taken away meanwhile are dropped: their new owner reads them.
        """
        wait_ms = int((self._idle_timeout or 1.0) * 1000)
        while True:
            fetched = await self._consumer.getmany(timeout_ms=wait_ms, max_records=self._max_records)
            async with self._lock:
                batch = [r for tp, records in fetched.items() if self._group is None or tp in self._owned for r in records]
                if not batch:
                    continue
                yield batch
                try:
                    await self.commit()
                except CommitFailedError as exc:
                    # The group moved on without us (we took too long): the new owner of these
                    # partitions reads from the last committed offsets.
                    log.warning("kafka.commit.failed", error=str(exc), hint="records since the last commit may be handled twice")

    async def _revoked(self, partitions: set[TopicPartition]) -> None:
        async with self._lock:
            self._owned -= partitions
            try:
                await self.commit(partitions)
            except CommitFailedError as exc:
                log.warning("kafka.commit.failed", error=str(exc), hint="records since the last commit may be handled twice")

    async def _assigned(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            if not self._from_beginning and tp.topic in self._initial_topics and await self._consumer.committed(tp) is None:
                # A topic that was there when we started: only what arrives from now on.
                await self._consumer.seek_to_end(tp)
        self._owned = set(partitions)
        self.assigned.set()


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, reader: TopicReader) -> None:
        self._reader = reader

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self._reader._revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self._reader._assigned(set(assigned))


# -- the broker check behind readiness -------------------------------------------------

_API_VERSIONS = 18
_correlation = count(1)


def _addresses(bootstrap_servers: str) -> list[tuple[str, int]]:
    addresses = []
    for part in bootstrap_servers.split(","):
        host, _, port = part.strip().rpartition(":")
        if host and port.isdigit():
            addresses.append((host.strip("[]"), int(port)))
    return addresses


async def probe_broker(bootstrap_servers: str, *, timeout: float = 2.0, kafka_protocol: bool = True) -> tuple[bool, str | None]:
    """Whether any bootstrap broker answers, and the error when none does.

    With ``kafka_protocol`` (plaintext listeners) the broker must answer a Kafka
    ApiVersions request, not just accept the connection; TLS listeners get a TCP check.
    """
    errors: list[str] = []
    for host, port in _addresses(bootstrap_servers):
        try:
            await asyncio.wait_for(_probe_one(host, port, kafka_protocol), timeout)
            return True, None
        except TimeoutError:
            errors.append(f"{host}:{port}: no answer within {timeout:g}s")
        except asyncio.IncompleteReadError:
            errors.append(f"{host}:{port}: the connection closed before a Kafka answer (is it a Kafka listener?)")
        except (OSError, ValueError) as exc:
            errors.append(f"{host}:{port}: {error_text(exc) if isinstance(exc, OSError) else exc}")
    return False, "; ".join(errors) or f"no usable address in {bootstrap_servers!r}"


async def _probe_one(host: str, port: int, kafka_protocol: bool) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        if not kafka_protocol:
            return
        correlation = next(_correlation) & 0x7FFFFFFF
        client_id = b"news-monitor-probe"
        # ApiVersions v0: header (api key, version, correlation id, client id), empty body.
        payload = struct.pack(">hhih", _API_VERSIONS, 0, correlation, len(client_id)) + client_id
        writer.write(struct.pack(">i", len(payload)) + payload)
        await writer.drain()
        size = struct.unpack(">i", await reader.readexactly(4))[0]
        answer = await reader.readexactly(min(size, 1 << 20))
        if size < 4 or struct.unpack(">i", answer[:4])[0] != correlation:
            raise ValueError("the broker's answer does not match the request")
    finally:
        writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await writer.wait_closed()
