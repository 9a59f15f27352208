"""``news-monitor feeds sync`` as an operator runs it, against the real broker."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from monitor.cli import main
from monitor.cluster import MARKER_KEY, feed_from_record, feed_partition
from tests.support import read_topic

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("cli_logging")]


def _config(tmp_path: Path, bootstrap: str, topic: str, feeds: list[dict]) -> str:
    tables = "".join(
        f'\n[[feeds.feed]]\nurl = "{f["url"]}"\n' + "".join(f"{k} = {v}\n" for k, v in f.items() if k != "url") for f in feeds
    )
    path = tmp_path / "monitor.toml"
    path.write_text(
        f'[kafka]\nbootstrap_servers = "{bootstrap}"\nenable_idempotence = "false"\nconnect_timeout = 10\n'
        f'[cluster]\nfeeds_topic = "{topic}"\n{tables}'
    )
    return str(path)


def _feed_records(bootstrap: str, topic: str) -> list:
    """Every record of the topic but the readers' markers."""
    records = asyncio.run(read_topic(bootstrap, topic, idle=0.5))
    return [r for r in records if r.key != MARKER_KEY]


def _sync(capsys, config: str, *args: str) -> dict:
    """The JSON summary of a sync; its stderr under ``"stderr"``."""
    assert main(["feeds", "sync", "--config", config, "--format", "json", *args]) == 0
    captured = capsys.readouterr()
    return {**orjson.loads(captured.out), "stderr": captured.err}


def test_sync_adds_changes_tombstones_and_a_second_run_publishes_nothing(broker, tmp_path, capsys):
    run = uuid.uuid4().hex[:8]
    topic = f"feeds-{run}"
    urls = [f"https://{name}-{run}.example/rss" for name in ("a", "b", "c", "d")]
    config = _config(tmp_path, broker.bootstrap_servers, topic, [{"url": u} for u in urls[:3]])

    first = _sync(capsys, config)
    assert (first["added"], first["changed"], first["removed"], first["unchanged"]) == (3, 0, 0, 0)
    assert first["created"] is True and first["partitions"] == 3
    records = _feed_records(broker.bootstrap_servers, topic)
    assert sorted(r.key.decode() for r in records) == urls[:3]
    for record in records:
        assert record.partition == feed_partition(record.key.decode(), 3)
        assert feed_from_record(record.key, record.value).url == record.key.decode()

    again = _sync(capsys, config)
    assert (again["added"], again["changed"], again["removed"], again["unchanged"], again["records"]) == (0, 0, 0, 3, 0)
    assert len(_feed_records(broker.bootstrap_servers, topic)) == 3

    # b gets another interval, c goes, d comes: a dry run says so and publishes nothing.
    config = _config(tmp_path, broker.bootstrap_servers, topic, [{"url": urls[0]}, {"url": urls[1], "interval": 60}, {"url": urls[3]}])
    dry = _sync(capsys, config, "--dry-run")
    assert dry["feeds"] == {"added": [urls[3]], "changed": [urls[1]], "moved": [], "removed": [urls[2]]}
    assert dry["dry_run"] is True and dry["records"] == 3
    assert len(_feed_records(broker.bootstrap_servers, topic)) == 3

    assert main(["feeds", "sync", "--config", config]) == 0
    assert capsys.readouterr().out == (
        f"{topic}: 1 added, 1 changed, 1 removed, 1 unchanged (published 3 records; 3 partitions)\n"
    )
    latest: dict[str, bytes | None] = {}
    for record in _feed_records(broker.bootstrap_servers, topic):
        latest[record.key.decode()] = record.value
    assert latest[urls[2]] is None  # the tombstone
    assert feed_from_record(urls[1].encode(), latest[urls[1]]).interval == 60
    assert set(latest) == set(urls)
    assert _sync(capsys, config)["records"] == 0


def test_a_record_that_is_not_a_feed_is_reported_and_replaced(broker, tmp_path, capsys):
    run = uuid.uuid4().hex[:8]
    topic = f"feeds-{run}"
    url = f"https://j-{run}.example/rss"
    config = _config(tmp_path, broker.bootstrap_servers, topic, [{"url": url}])
    assert _sync(capsys, config)["added"] == 1

    async def spoil() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap_servers)
        await producer.start()
        try:
            await producer.send_and_wait(topic, b"{not json", key=url.encode(), partition=feed_partition(url, 3))
        finally:
            await producer.stop()

    asyncio.run(spoil())
    outcome = _sync(capsys, config)
    assert (outcome["changed"], outcome["skipped"], outcome["records"]) == (1, 1, 1)
    assert f"warning: {topic}: passed over partition {feed_partition(url, 3)}" in outcome["stderr"]
    assert _sync(capsys, config)["records"] == 0


def test_sync_refuses_the_embedded_broker(tmp_path, capsys):
    path = tmp_path / "monitor.toml"
    path.write_text('[[feeds.feed]]\nurl = "https://e.example/rss"\n')
    assert main(["feeds", "sync", "--config", str(path)]) == 2
    assert "feeds sync needs the cluster's broker" in capsys.readouterr().err


def test_sync_says_when_the_broker_is_unreachable(tmp_path, capsys):
    path = tmp_path / "monitor.toml"
    path.write_text('[kafka]\nbootstrap_servers = "127.0.0.1:1"\nconnect_timeout = 1\n[[feeds.feed]]\nurl = "https://e.example/rss"\n')
    assert main(["feeds", "sync", "--config", str(path)]) == 3
    assert "cannot reach Kafka at 127.0.0.1:1" in capsys.readouterr().err
