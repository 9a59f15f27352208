"""``news-monitor backtest`` as an operator runs it, against the real broker."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from monitor.app.backtest import articles_topic
from monitor.cli import main
from monitor.delivery.records import article_record
from monitor.errors import ConfigError
from monitor.model import Article
from monitor.settings import load_settings
from monitor.timefmt import utc_iso
from monitor.worker import Monitor
from tests.support import FeedServer, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("cli_logging")]

CANDIDATES = """
rules:
  - id: summit
    query: '"peace summit"'
  - id: grain
    query: 'grain AND exports'
  - id: quiet
    query: 'zanzibar'
"""


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _publish(bootstrap: str, topic: str, records: list[tuple[bytes | None, bytes, float]]) -> None:
    """``(key, value, unix time)`` records, on a new 3-partition topic, with those timestamps."""

    async def go() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, 3, 1)])
        finally:
            await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        await producer.start()
        try:
            sent = [await producer.send(topic, value, key=key, timestamp_ms=int(at * 1000)) for key, value, at in records]
            await asyncio.gather(*sent)
        finally:
            await producer.stop()

    asyncio.run(go())


def _article(article_id: str, title: str, body: str = "") -> tuple[bytes | None, bytes]:
    record = article_record(Article(id=article_id, feed_url="https://news.example/rss", title=title, body=body), "t")
    return record.key, record.value


def _backtest(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["backtest", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_backtest_counts_a_span_ignores_garbage_and_publishes_nothing(broker, tmp_path, capsys):
    run = uuid.uuid4().hex[:8]
    topic = f"articles-{run}"
    now = time.time()
    hour = 3600.0
    records = [
        (*_article("old", "Peace summit announced"), now - 5 * hour),
        (*_article("a1", "Peace summit opens"), now - 3 * hour),
        (*_article("a1", "Peace summit opens", "grain exports resume"), now - 2.5 * hour),  # updated text
        (*_article("a2", "Grain exports fall"), now - 2 * hour),
        (b"junk", b"{not json", now - 2 * hour),
        (b"junk2", b'{"schema_version": 1}', now - 2 * hour),
        *[(*_article(f"filler{i}", f"Weather report {i}"), now - 1.5 * hour) for i in range(200)],
        (*_article("new", "Peace summit closes"), now - 0.5 * hour),
    ]
    _publish(broker.bootstrap_servers, topic, records)
    config = _write(tmp_path, "monitor.toml", f'[kafka]\nbootstrap_servers = "{broker.bootstrap_servers}"\narticles_topic = "{topic}"\n')
    rules = _write(tmp_path, "candidates.yaml", CANDIDATES)

    code, out, err = _backtest(capsys, "--config", config, "--rules", rules, "--since", "4h", "--until", utc_iso(now - hour), "--format", "json")
    assert code == 0, err
    result = orjson.loads(out)
    assert result["topic"] == topic and result["rules"] == {"summit": 1, "grain": 2, "quiet": 0}
    assert [(m["rule_id"], m["article_id"]) for m in result["matches"]] == [("summit", "a1"), ("grain", "a1"), ("grain", "a2")]
    assert result["matches"][0]["title"] == "Peace summit opens"
    assert (result["articles"], result["distinct_articles"], result["bad_records"]) == (203, 202, 2)
    assert result["records_read"] == len(records)
    # Tansu's time index answers offset 0: the partition holding the older record is scanned.
    assert "scan" in result["starts"].values()
    assert err.count(f"news-monitor: skipped {topic} partition") == 2 and "not JSON" in err and "2 records" in err

    # No bounds: everything; the table names the rules that fired and the matching articles.
    code, out, _err = _backtest(capsys, "--config", config, "--rules", rules)
    assert code == 0
    assert f"{topic}, the beginning to the end: 205 articles (204 distinct ids), 2 bad records" in out
    assert "2 of 3 rules fired, 5 alerts" in out
    assert "      3  summit" in out and "Peace summit closes" in out and "Weather" not in out

    # Nothing was published: the topic holds what the test wrote.
    code, out, _err = _backtest(capsys, "--config", config, "--rules", rules, "--format", "json")
    assert orjson.loads(out)["records_read"] == len(records)


async def test_backtest_reads_the_articles_of_a_single_process_run(broker, feed_server: FeedServer, tmp_path, capsys):
    run = uuid.uuid4().hex[:8]
    topic = f"news.articles.{run}"
    item = "<item><title>{title}</title><link>https://example.net/{run}/{n}</link><guid>urn:bt:{run}:{n}</guid><description>{text}</description></item>"
    items = [
        item.format(run=run, n=0, title="Grain exports resume", text="Ships carrying grain exports left the port."),
        item.format(run=run, n=1, title="Local bakery wins award", text="The bakery on Main Street won a prize."),
    ]
    rss = f'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><link>https://example.net/</link>{"".join(items)}</channel></rss>'
    url = feed_server.serve(f"/bt-{run}.rss", rss)
    settings = make_settings(tmp_path, broker.bootstrap_servers, [url], overrides={"kafka": {"articles_topic": topic, "enable_idempotence": "false"}})
    summary = await Monitor(settings).run(once=True, handle_signals=False)
    assert summary.new_articles == 2 and summary.undelivered == 0

    config = _write(tmp_path, "monitor.toml", f'[kafka]\nbootstrap_servers = "{broker.bootstrap_servers}"\narticles_topic = "{topic}"\n')
    rules = _write(tmp_path, "candidates.yaml", CANDIDATES)
    # In a thread: the command runs its own event loop, and this test's serves the feed.
    code, out, err = await asyncio.to_thread(_backtest, capsys, "--config", config, "--rules", rules, "--since", "10m", "--format", "json")
    assert code == 0, err
    result = orjson.loads(out)
    assert result["rules"] == {"summit": 0, "grain": 1, "quiet": 0} and result["articles"] == 2
    assert result["matches"][0]["article_id"] == f"urn:bt:{run}:0" and result["matches"][0]["feed_url"] == url


def test_the_cluster_topic_wins_when_a_cluster_is_configured(tmp_path):
    both = _write(tmp_path, "both.toml", '[kafka]\narticles_topic = "single"\n[cluster]\narticles_topic = "clustered"\n')
    single = _write(tmp_path, "single.toml", '[kafka]\narticles_topic = "single"\n')
    neither = _write(tmp_path, "neither.toml", '[kafka]\nclient_id = "x"\n')
    assert articles_topic(load_settings(both, environ={}), {}) == "clustered"
    assert articles_topic(load_settings(single, environ={}), {}) == "single"
    environ = {"NEWS_MONITOR_CLUSTER_ARTICLES_TOPIC": "from-env"}
    assert articles_topic(load_settings(single, environ=environ), environ) == "from-env"
    with pytest.raises(ConfigError, match="no articles topic"):
        articles_topic(load_settings(neither, environ={}), {})


def test_backtest_usage_errors_exit_2(broker, tmp_path, capsys):
    rules = _write(tmp_path, "candidates.yaml", CANDIDATES)
    config = _write(tmp_path, "monitor.toml", f'[kafka]\nbootstrap_servers = "{broker.bootstrap_servers}"\n')
    code, _out, err = _backtest(capsys, "--config", config, "--rules", rules)
    assert code == 2 and "backtest: no articles topic" in err
    code, _out, err = _backtest(capsys, "--config", config, "--rules", rules, "--since", "yesterday", "--topic", "x")
    assert code == 2 and "--since 'yesterday' is neither an ISO 8601 time" in err
    code, _out, err = _backtest(capsys, "--config", config, "--rules", rules, "--topic", f"missing-{uuid.uuid4().hex[:8]}")
    assert code == 2 and "does not exist" in err
    embedded = _write(tmp_path, "embedded.toml", '[kafka]\narticles_topic = "a"\n')
    code, _out, err = _backtest(capsys, "--config", embedded, "--rules", rules)
    assert code == 2 and "backtest needs a running broker" in err
