"""Errors in words an operator reads: no Python class name where it says nothing to them,
and never an empty reason (monitor.errors.error_text and the Kafka and HTTP wordings)."""

from __future__ import annotations

import asyncio
import errno
import io
import socket
from datetime import UTC, datetime

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, RequestTimedOutError, UnknownError

from monitor.adapters.broker import free_port
from monitor.adapters.kafka import kafka_error_text, probe_broker
from monitor.errors import FeedError, PublishError


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "/var/lib/nm/state.sqlite3"), "/var/lib/nm/state.sqlite3: No space left on device"),
        (PermissionError(errno.EACCES, "Permission denied"), "Permission denied"),
        # asyncio's wording of a refused connection, with Python's address tuple.
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed ('127.0.0.1', 9)"), "Connection refused"),
        (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), "Name or service not known"),
        (TimeoutError(), "timed out"),
        (ConnectionResetError(), "connection reset"),
        (OSError(), "OSError (no message)"),
        (FeedError("https://x.example/feed: HTTP 500", hint="retried later"), "https://x.example/feed: HTTP 500 (retried later)"),
        # Unexpected: a bug report needs the class; one line whatever the text.
        (KeyError("feed"), "KeyError: 'feed'"),
        (AssertionError(), "AssertionError"),
        (ValueError("first line\n  second line"), "ValueError: first line second line"),
    ],
)
def test_error_text_says_what_happened_without_python_vocabulary(exc, expected):
    # Before, each call site wrote f"{type(exc).__name__}: {exc}": "OSError: [Errno 28] No space
    # left on device: '/var/...'", "TimeoutError: " (nothing said), "FeedError: ..." twice worded.
    from monitor.errors import error_text

    assert error_text(exc) == expected


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (KafkaTimeoutError(), "KafkaTimeoutError: timed out"),
        (RequestTimedOutError(), "RequestTimedOutError (Kafka error 7): This error is thrown if the request exceeds the user-specified time limit in the request"),
        (UnknownError("policy says no"), "UnknownError (Kafka error -1): policy says no"),
        (KafkaConnectionError("Connection at kafka-1:9092 closed"), "KafkaConnectionError: Connection at kafka-1:9092 closed"),
        (ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed ('127.0.0.1', 9)"), "Connection refused"),
    ],
)
def test_kafka_errors_keep_their_kafka_name_and_say_something(exc, expected):
    # Before: "KafkaTimeoutError: KafkaTimeoutError", "RequestTimedOutError: [Error 7] RequestTimedOutError".
    assert kafka_error_text(exc) == expected


async def test_the_broker_probe_says_why_in_words():
    # What /readyz and the status page show. Before: "127.0.0.1:P: ConnectionRefusedError: [Errno 111]
    # Connect call failed ('127.0.0.1', P)" and, for a silent listener, "127.0.0.1:P: TimeoutError".
    port = free_port()
    assert await probe_broker(f"127.0.0.1:{port}", timeout=1) == (False, f"127.0.0.1:{port}: Connection refused")
    silent = await asyncio.start_server(lambda reader, writer: reader.read(), "127.0.0.1", 0)
    try:
        port = silent.sockets[0].getsockname()[1]
        assert await probe_broker(f"127.0.0.1:{port}", timeout=0.3) == (False, f"127.0.0.1:{port}: no answer within 0.3s")
    finally:
        silent.close()


@pytest.fixture
def log_stream():
    from monitor.log import configure_logging

    stream = io.StringIO()
    configure_logging("debug", "json", stream)
    yield stream
    configure_logging("warning", "json")  # what conftest set up for the rest of the suite


def _events(stream: io.StringIO, name: str) -> list[dict]:
    return [event for event in map(orjson.loads, stream.getvalue().splitlines()) if event["event"] == name]


def test_a_full_disk_and_a_send_timeout_are_worded_for_the_operator(log_stream):
    from monitor.delivery.sender import Sender
    from monitor.model import Record
    from monitor.upkeep import state_upkeep_failed

    state_upkeep_failed(OSError(errno.ENOSPC, "No space left on device", "/var/lib/nm/state.sqlite3-wal"))
    [upkeep] = _events(log_stream, "state.upkeep.failed")
    # Before: "OSError: [Errno 28] No space left on device: '/var/lib/nm/state.sqlite3-wal'".
    assert upkeep["error"] == "/var/lib/nm/state.sqlite3-wal: No space left on device"

    sender = Sender(None, dead_letter_topic="alerts.dead-letter")  # type: ignore[arg-type]
    record = Record(alert_id="a1", article_id="x", topic="alerts.t", key=b"x", value=b"{}", headers=())
    sender.failed(record, TimeoutError())
    sender.failed(record, PublishError("publish to alerts.t failed: KafkaTimeoutError: timed out"))
    [unhealthy] = _events(log_stream, "delivery.unhealthy")
    [retrying] = _events(log_stream, "alert.publish.retrying")
    # Before: "TimeoutError: " (nothing said) and "PublishError: publish to alerts.t failed: ...".
    assert unhealthy["error"] == "timed out" and unhealthy["topic"] == "alerts.t"
    assert retrying["error"] == sender.stats.last_error == "publish to alerts.t failed: KafkaTimeoutError: timed out"


def test_an_unserialisable_alert_gets_a_dead_letter_reason_that_says_why():
    from monitor.delivery.records import DLQ_REASON_HEADER, alert_record
    from monitor.model import Alert, Hit

    alert = Alert(
        alert_id="a1", rule_id="r", topic="alerts.t", severity="low", tags=(), article_id="x", url=None,
        title="broken decoder output \ud800 here", published=None, feed_url="https://example.net/feed",
        matches=(Hit("r", "title", 0, 6, "broken"),), snippet="", detected_at=datetime.now(UTC), ruleset_version="v",
    )  # fmt: skip
    reason = dict(alert_record(alert).headers)[DLQ_REASON_HEADER].decode()
    # Before: "cannot serialise record for alerts.t: TypeError: str is not valid UTF-8: surrogates not allowed".
    assert reason == (
        "cannot serialise record for alerts.t: its text is not valid Unicode "
        "(str is not valid UTF-8: surrogates not allowed; a bad decoder upstream, typically)"
    )


def test_a_url_file_that_is_not_utf8_says_so(tmp_path):
    from monitor.errors import ConfigError
    from monitor.notify.config import destination_from_table

    secret = tmp_path / "url"
    secret.write_bytes(b"\xffslack://a/b/c\n")
    with pytest.raises(ConfigError) as raised:
        destination_from_table({"name": "desk", "url_file": str(secret)}, 0, where="m.toml", environ={})
    # Before: "... cannot be read: UnicodeDecodeError".
    assert f"url_file {str(secret)!r} cannot be read: not UTF-8 text (invalid start byte at byte 0)" in str(raised.value)
