"""Logging: JSON lines or console, stable dotted event names, no secrets, level from config."""

from __future__ import annotations

import ast
import io
import logging
import re

import orjson
import pytest

from monitor.log import configure_logging, get_logger
from monitor.settings import load_settings
from tests.support import ROOT


@pytest.fixture
def stream():
    buffer = io.StringIO()
    yield buffer
    configure_logging("warning", "json")  # what conftest set up for the rest of the suite


def _lines(buffer: io.StringIO) -> list[dict]:
    return [orjson.loads(line) for line in buffer.getvalue().splitlines()]


def test_json_lines_off_a_terminal_with_name_and_context(stream):
    configure_logging("info", "auto", stream)
    get_logger("pipeline").info("feed.poll.ok", feed_url="https://example.org/feed", new=2)
    [line] = _lines(stream)
    assert line["event"] == "feed.poll.ok" and line["feed_url"] == "https://example.org/feed" and line["new"] == 2
    assert line["level"] == "info" and line["component"] == "pipeline" and line["timestamp"].endswith("Z")


def test_console_format_is_readable_not_json(stream):
    configure_logging("info", "console", stream)
    get_logger().info("alert.published", topic="alerts.summit")
    text = stream.getvalue()
    assert "alert.published" in text and "topic=alerts.summit" in text
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(text)


def test_level_filters(stream):
    configure_logging("warning", "json", stream)
    get_logger().info("feed.poll.ok")
    get_logger().warning("feed.poll.error", feed_url="u")
    assert [line["event"] for line in _lines(stream)] == ["feed.poll.error"]


def test_level_comes_from_config_or_environment():
    assert load_settings(None, environ={"NEWS_MONITOR_LOG_LEVEL": "debug"}).log.level == "debug"
    assert load_settings(None, environ={"NEWS_MONITOR_LOG_FORMAT": "json"}).log.format == "json"


def test_secrets_never_reach_a_line(stream):
    configure_logging("info", "json", stream)
    get_logger().info(
        "kafka.connect",
        sasl_password="hunter2",
        headers={"Authorization": "Bearer hunter2", "Accept": "application/rss+xml"},
        feed_url="https://bob:hunter2@feeds.example/rss?api_key=hunter2&page=2",
        error="GET https://bob:hunter2@feeds.example/x failed",
    )
    text = stream.getvalue()
    assert "hunter2" not in text
    [line] = _lines(stream)
    assert line["headers"]["Accept"] == "application/rss+xml"
    assert line["feed_url"] == "https://***@feeds.example/rss?api_key=***&page=2"


def test_library_logs_are_json_too(stream):
    configure_logging("info", "json", stream)
    logging.getLogger("aiokafka.conn").warning("Unable to connect to node %s", 1)
    logging.getLogger("aiokafka.conn").info("chatty library detail")
    [line] = _lines(stream)
    assert line["event"] == "lib.aiokafka.conn" and line["message"] == "Unable to connect to node 1"
    # docs/operations.md: each line has event, level, timestamp and component.
    assert line["level"] == "warning" and line["timestamp"].endswith("Z") and line["component"] == "aiokafka"


_EVENT = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")
_LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}


def _log_calls():
    """(file, line, first argument) of every log call in the package."""
    for path in sorted((ROOT / "monitor").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in _LEVELS):
                continue
            receiver = node.func.value
            name = receiver.id if isinstance(receiver, ast.Name) else getattr(receiver, "attr", "")
            if name not in {"log", "bound", "logger", "level"} or not node.args:
                continue
            yield path.relative_to(ROOT), node.lineno, node.args[0]


def test_every_event_name_is_a_stable_dotted_literal():
    calls = list(_log_calls())
    assert len(calls) > 20, "the scan finds the package's log calls"
    bad = [
        f"{path}:{line}: {ast.unparse(arg)}"
        for path, line, arg in calls
        if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str) and _EVENT.match(arg.value))
    ]
    assert not bad, "event names must be literal dotted names:\n" + "\n".join(bad)


def test_library_lines_are_masked_at_every_level_with_their_tracebacks(stream):
    configure_logging("debug", "json", stream)
    library = logging.getLogger("aiokafka.producer")
    secret_url = "https://bob:hunter2@feeds.example/rss?token=hunter2&page=2"
    for level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR, logging.CRITICAL):
        library.log(level, "Sending value=b'{\"feed_url\":\"%s\"}'", secret_url)
    try:
        raise ConnectionError(f"cannot reach {secret_url}")
    except ConnectionError:
        library.exception("send failed")
        get_logger().exception("feed.poll.crashed", error="see traceback")
    text = stream.getvalue()
    assert "hunter2" not in text
    lines = _lines(stream)
    assert len(lines) == 7
    assert "https://***@feeds.example/rss?token=***&page=2" in lines[0]["message"]
    assert "ConnectionError: cannot reach https://***@feeds.example" in lines[5]["exception"]


def test_console_tracebacks_are_masked(stream):
    configure_logging("info", "console", stream)
    try:
        raise ConnectionError("cannot reach https://bob:hunter2@feeds.example/rss?api_key=hunter2")
    except ConnectionError:
        get_logger().exception("feed.poll.crashed")
        logging.getLogger("aiohttp.client").exception("request failed")
    text = stream.getvalue()
    assert "hunter2" not in text and text.count("ConnectionError: cannot reach https://***@feeds.example/rss?api_key=***") == 2


@pytest.mark.integration
async def test_auto_idempotence_probe_logs_no_error_but_real_errors_still_show(stream, broker):
    from monitor.adapters.kafka import KafkaPublisher
    from monitor.settings import KafkaSettings

    configure_logging("info", "json", stream)
    # Not "embedded": "auto" asks for idempotence, and Tansu refuses it.
    publisher = KafkaPublisher(KafkaSettings(bootstrap_servers=broker.bootstrap_servers, connect_timeout=10), broker.bootstrap_servers)
    await publisher.start()
    await publisher.stop()
    lines = _lines(stream)
    assert [line["event"] for line in lines if line["level"] in ("error", "critical")] == []
    assert [line["event"] for line in lines] == ["kafka.idempotence.unsupported"]

    # The demotion lasts only as long as the probe, and never touches other errors.
    from aiokafka.errors import UnknownError

    logging.getLogger("aiokafka.producer.sender").error("Unexpected error during InitProducerIdRequest: %s", UnknownError)
    assert _lines(stream)[-1]["level"] == "error"

    # With idempotence asked for explicitly the refusal is an error the operator must see
    # (a fresh set-up: the same line just logged would count as a repeat).
    stream.truncate(0)
    stream.seek(0)
    configure_logging("info", "json", stream)
    explicit = KafkaPublisher(KafkaSettings(enable_idempotence="true", connect_timeout=1), broker.bootstrap_servers)
    with pytest.raises(Exception, match="refused the producer"):
        await explicit.start(timeout=1)
    assert any(line["level"] == "error" and "InitProducerIdRequest" in line["message"] for line in _lines(stream))


def test_a_library_line_repeated_word_for_word_is_logged_once_per_window_with_the_count(stream, monkeypatch):
    """aiokafka retries a broker that is away several times a second per connection: 1,643
    error lines in 20 s from one poller before. Each distinct line once per window, then the count."""
    import monitor.log

    now = [1000.0]
    monkeypatch.setattr(monitor.log, "_clock", lambda: now[0])
    configure_logging("info", "json", stream)
    conn = logging.getLogger("aiokafka.conn")
    for _ in range(50):
        conn.error("Unable connect to node with id %s: %s", 1, "KafkaConnectionError: Connection at 127.0.0.1:9 closed")
        conn.error("Unable to update metadata from [%s]", 1)
        now[0] += 0.1
    logging.getLogger("aiokafka").warning("another line")
    now[0] += monitor.log.REPEAT_WINDOW
    conn.error("Unable to update metadata from [%s]", 1)
    lines = _lines(stream)
    assert [(line["message"], line.get("repeated")) for line in lines] == [
        ("Unable connect to node with id 1: KafkaConnectionError: Connection at 127.0.0.1:9 closed", None),
        ("Unable to update metadata from [1]", None),
        ("another line", None),
        ("Unable to update metadata from [1]", 49),
    ]
