"""Dead letters: a record Kafka rejects for good goes to the dead-letter topic, with the
reason in its ``dlq_reason`` header, and leaves the outbox (see docs/delivery.md).

If the record itself is too large for the dead-letter topic, a small stub that names it
goes instead. If the dead-letter topic refuses it too, the record stays in the outbox
for the next start (``abandoned``); if even the stub is rejected, the log line keeps the
alert so an operator can replay it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import orjson

from monitor.delivery.records import DLQ_ORIGINAL_TOPIC_HEADER, DLQ_REASON_HEADER
from monitor.delivery.sender import Sender
from monitor.errors import RecordRefused, RecordRejected
from monitor.log import get_logger
from monitor.model import Record

__all__ = ["DeadLetters", "dead_letter"]

log = get_logger("delivery")

#: Longest ``dlq_reason`` header value, in bytes.
_REASON_LIMIT = 500


class DeadLetters:
    """Sends records to the dead-letter topic through the delivery's :class:`Sender`."""

    def __init__(
        self,
        sender: Sender,
        *,
        ack: Callable[[Record], Awaitable[None]],
        max_attempts: int = 10,
        on_dead_letter: Callable[[Record, str], None] | None = None,
    ) -> None:
        self._sender = sender
        self._ack = ack
        self._max_attempts = max_attempts
        self._on_dead_letter = on_dead_letter

    async def send(self, record: Record, reason: str) -> None:
        """Send ``record`` to the dead-letter topic (as is, else as a stub) and drop it from the outbox."""
        sender, topic = self._sender, self._sender.dead_letter_topic
        reason = reason.encode("utf-8", "replace")[:_REASON_LIMIT].decode("utf-8", "ignore")
        log.error("alert.dead_lettered", topic=record.topic, alert_id=record.alert_id, reason=reason)
        for letter in (dead_letter(record, reason, topic), _stub_letter(record, reason, topic)):
            sent = await self._send_letter(letter)
            if sent is None:
                # The dead-letter topic refuses it too: keep the record for the next start
                # rather than lose it, and let this run finish.
                sender.stats.abandoned += 1
                log.error(
                    "alert.dead_letter.refused",
                    alert_id=record.alert_id,
                    topic=record.topic,
                    dead_letter_topic=topic,
                    reason=reason,
                    hint="kept in the outbox and sent again at the next start; check the broker's log",
                )
                return
            if sent:
                break
        else:
            # Even a few hundred bytes are refused: the dead-letter topic itself is broken.
            # The log line keeps the alert so an operator can replay it by hand.
            log.critical(
                "alert.dead_letter.rejected",
                alert_id=record.alert_id,
                topic=record.topic,
                dead_letter_topic=topic,
                value=record.value[:4096].decode("utf-8", "replace"),
                hint="check the dead-letter topic's max.message.bytes and ACLs",
            )
        await self._ack(record)
        sender.stats.dead_lettered += 1
        if self._on_dead_letter is not None:
            self._on_dead_letter(record, reason)

    async def _send_letter(self, letter: Record) -> bool | None:
        """True when the broker took the letter, False when it rejected it for good, None
        when it refused it ``max_attempts`` times."""
        sender = self._sender
        refusals = 0
        while True:
            error = await sender.send(letter)
            if error is None:
                sender.mark_healthy()
                return True
            if isinstance(error, RecordRejected):
                log.warning("alert.dead_letter.too_large", alert_id=letter.alert_id, reason=str(error))
                return False
            if isinstance(error, RecordRefused):
                sender.refused(letter, error)
                refusals += 1
                if refusals >= self._max_attempts:
                    return None
                await asyncio.sleep(sender.refusal_backoff(refusals))
                continue
            sender.failed(letter, error)
            # Not under the probe lock: this may run inside a probe already.
            await asyncio.sleep(sender.next_backoff())


def dead_letter(record: Record, reason: str, topic: str) -> Record:
    """``record`` as a letter for the dead-letter ``topic``: its key, value and headers, with
    the reason (``dlq_reason``) and its original topic (``dlq_original_topic``)."""
    headers = tuple((k, v) for k, v in record.headers if k not in (DLQ_REASON_HEADER, DLQ_ORIGINAL_TOPIC_HEADER))
    return Record(
        alert_id=record.alert_id,
        article_id=record.article_id,
        topic=topic,
        key=record.key,
        value=record.value,
        headers=(
            *headers,
            (DLQ_REASON_HEADER, reason.encode()),
            (DLQ_ORIGINAL_TOPIC_HEADER, record.topic.encode()),
        ),
    )


def _stub_letter(record: Record, reason: str, topic: str) -> Record:
    """A small stand-in for a record too large for the dead-letter topic: enough to find it again."""
    value = orjson.dumps(
        {
            "dead_letter": True,
            "alert_id": record.alert_id,
            "article_id": record.article_id[:1000],
            "original_topic": record.topic,
            "original_bytes": len(record.value),
            "reason": reason,
        }
    )
    return Record(
        alert_id=record.alert_id,
        article_id=record.article_id,
        topic=topic,
        key=record.key if record.key is None or len(record.key) <= 1000 else None,
        value=value,
        headers=(
            (DLQ_REASON_HEADER, reason.encode()),
            (DLQ_ORIGINAL_TOPIC_HEADER, record.topic.encode()),
            ("content-type", b"application/json"),
        ),
    )
