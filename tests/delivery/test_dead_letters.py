"""Dead letters and the raw article stream, against the real broker.

A record the broker cannot take (too large) or that cannot be serialised goes to the
dead-letter topic with its reason in a header, is counted, and never holds up the
alerts behind it. With ``[kafka] articles_topic`` every new article is published too.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime

import orjson
import pytest

from monitor.adapters.kafka import KafkaPublisher
from monitor.adapters.store import AsyncStore
from monitor.delivery import Delivery
from monitor.delivery.records import alert_record
from monitor.engine.evaluate import MAX_HITS_PER_TERM
from monitor.model import Alert, Hit, Record, alert_id_for
from monitor.worker import Monitor
from tests.kafka_proxy import KafkaProxy
from tests.support import FeedServer, alerts_from, make_settings, read_topic

pytestmark = pytest.mark.integration

_RSS = """<?xml version="1.0"?><rss version="2.0"><channel><title>t</title><link>https://example.net/</link>
{items}</channel></rss>"""
_ITEM = """<item><title>{title}</title><link>https://example.net/{run}/{n}</link>
<guid isPermaLink="false">urn:dlq:{run}:{n}</guid><description>{text}</description></item>"""
SANCTIONS_TEXT = "The European Union agreed a new package of economic sanctions against Russia on Friday."


def _headers(record) -> dict[str, bytes]:
    return {k: v for k, v in record.headers}


async def test_too_large_alert_is_dead_lettered_and_does_not_block(broker, feed_server: FeedServer, tmp_path):
    run = uuid.uuid4().hex[:8]
    dead_letters = f"alerts.dead-letter.{run}"
    # A headline of 4000 characters makes an alert far beyond the 2000-byte request limit.
    huge_title = "EU sanctions against Russia " + " ".join(f"clause{i}" for i in range(600))
    items = [
        _ITEM.format(run=run, n=0, title=huge_title, text=SANCTIONS_TEXT),
        _ITEM.format(run=run, n=1, title="EU adopts sanctions on Russia", text="Brussels widened economic sanctions against Russia's banks."),
    ]
    url = feed_server.serve("/big.rss", _RSS.format(items="".join(items)))
    settings = make_settings(
        tmp_path,
        broker.bootstrap_servers,
        [url],
        overrides={"kafka": {"max_request_size": 2000, "dead_letter_topic": dead_letters, "enable_idempotence": "false"}},
    )

    monitor = Monitor(settings)
    summary = await monitor.run(once=True, handle_signals=False)

    assert monitor.delivery is not None and monitor.delivery.stats.dead_lettered == 1
    assert summary.undelivered == 0
    letters = await read_topic(broker.bootstrap_servers, dead_letters, until=lambda rs: len(rs) >= 1)
    assert len(letters) == 1
    headers = _headers(letters[0])
    assert b"rejected" in headers["dlq_reason"] and b"TooLarge" in headers["dlq_reason"]
    assert headers["dlq_original_topic"] == b"alerts.sanctions"
    # The letter itself could not carry the 4 KB alert: it is the stub that names it.
    stub = orjson.loads(letters[0].value)
    assert stub["alert_id"] == alert_id_for("sanctions", f"urn:dlq:{run}:0")
    assert stub["original_topic"] == "alerts.sanctions" and stub["original_bytes"] > 2000
    assert letters[0].key == f"urn:dlq:{run}:0".encode()
    # The small alert behind it was delivered.
    delivered = alerts_from(await read_topic(broker.bootstrap_servers, "alerts.sanctions"), [url])
    assert [a["article"]["id"] for a in delivered] == [f"urn:dlq:{run}:1"]


async def test_unserialisable_alert_goes_to_dead_letter_topic_with_reason(broker, tmp_path):
    run = uuid.uuid4().hex[:8]
    dead_letters = f"alerts.dead-letter.{run}"
    article_id = f"urn:dlq:{run}:bad"
    alert = Alert(
        alert_id=alert_id_for("sanctions", article_id),
        rule_id="sanctions",
        topic=f"alerts.sanctions.{run}",
        severity="medium",
        tags=(),
        article_id=article_id,
        url=None,
        title="broken decoder output \ud800 here",
        published=None,
        feed_url="https://example.net/feed",
        matches=(Hit("sanctions", "title", 0, 9, "sanctions"),),
        snippet="",
        detected_at=datetime.now(UTC),
        ruleset_version="test",
    )
    record = alert_record(alert)
    assert _headers(record)["dlq_reason"].startswith(b"cannot serialise")

    settings = make_settings(tmp_path, broker.bootstrap_servers, overrides={"kafka": {"enable_idempotence": "false"}})
    store = AsyncStore.open(settings.state_dir)
    publisher = KafkaPublisher(settings.kafka, broker.bootstrap_servers)
    await publisher.start()
    try:
        await store.enqueue([record])
        delivery = Delivery(publisher, store, dead_letter_topic=dead_letters)
        assert await delivery.start() == 1  # re-queued from the outbox, like after a restart
        assert await delivery.wait_idle(15)
        await delivery.stop(1)
        assert delivery.stats.dead_lettered == 1 and delivery.stats.published == 0
        assert await store.pending_count() == 0
    finally:
        await publisher.stop()
        await store.close()
    letters = await read_topic(broker.bootstrap_servers, dead_letters, until=lambda rs: len(rs) >= 1)
    assert len(letters) == 1
    headers = _headers(letters[0])
    assert headers["dlq_reason"].startswith(b"cannot serialise") and b"surrogates" in headers["dlq_reason"]
    assert headers["dlq_original_topic"] == alert.topic.encode()
    assert headers["ce_id"] == alert.alert_id.encode()
    # The evidence is kept, the bad character escaped, in JSON the standard library reads.
    evidence = json.loads(letters[0].value)
    assert evidence["alert_id"] == alert.alert_id and evidence["article"]["title"] == alert.title


async def test_articles_topic_carries_every_new_article_keyed_by_id(broker, feed_server: FeedServer, tmp_path):
    run = uuid.uuid4().hex[:8]
    topic = f"news.articles.{run}"
    items = [
        _ITEM.format(run=run, n=0, title="EU adopts sanctions on Russia", text=SANCTIONS_TEXT),
        _ITEM.format(run=run, n=1, title="Local bakery wins award", text="The bakery on Main Street won a regional bread prize."),
    ]
    url = feed_server.serve("/articles.rss", _RSS.format(items="".join(items)))
    settings = make_settings(tmp_path, broker.bootstrap_servers, [url], overrides={"kafka": {"articles_topic": topic, "enable_idempotence": "false"}})

    summary = await Monitor(settings).run(once=True, handle_signals=False)
    assert summary.new_articles == 2 and summary.undelivered == 0

    records = await read_topic(broker.bootstrap_servers, topic, until=lambda rs: len(rs) >= 2)
    by_key = {r.key.decode(): orjson.loads(r.value) for r in records}
    assert set(by_key) == {f"urn:dlq:{run}:0", f"urn:dlq:{run}:1"}
    bakery = by_key[f"urn:dlq:{run}:1"]
    assert bakery["title"] == "Local bakery wins award" and "bread prize" in bakery["summary"] + bakery["body"]
    assert bakery["feed_url"] == url and bakery["id"] == f"urn:dlq:{run}:1"
    for record in records:
        headers = _headers(record)
        assert headers["ce_type"] == b"news.article.v1" and headers["content-type"] == b"application/json"

    # A second pass over the same feed publishes no article again.
    again = await Monitor(settings).run(once=True, handle_signals=False)
    assert again.new_articles == 0
    assert len(await read_topic(broker.bootstrap_servers, topic, idle=0.5)) == 2


async def test_an_articles_topic_created_among_existing_topics_does_not_stall_the_alerts(broker, feed_server: FeedServer, tmp_path):
    # A run that created the articles topic while the alert topics already existed had its
    # alerts refused (NotLeaderForPartition) until request_timeout_ms ran out: 30 s at the
    # default, every restart with a new articles topic or a rule's first signal topic.
    run = uuid.uuid4().hex[:8]
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "sanctions.yaml").write_text(_rule("sanctions", f"alerts.stall-{run}", "sanctions"))
    url = feed_server.serve(f"/stall-{run}.rss", _RSS.format(items=_ITEM.format(run=run, n=0, title="EU sanctions", text=SANCTIONS_TEXT)))
    kafka = {"enable_idempotence": "false", "request_timeout_ms": 8000}
    first = make_settings(tmp_path / "first", broker.bootstrap_servers, [url], rules=[rules], overrides={"kafka": kafka})
    assert (await Monitor(first).run(once=True, handle_signals=False)).published == 1

    second = make_settings(tmp_path / "second", broker.bootstrap_servers, [url], rules=[rules],
                           overrides={"kafka": {**kafka, "articles_topic": f"news.articles.stall-{run}"}})  # fmt: skip
    started = asyncio.get_running_loop().time()
    summary = await Monitor(second).run(once=True, handle_signals=False)
    elapsed = asyncio.get_running_loop().time() - started
    assert summary.published == 1 and summary.undelivered == 0
    assert summary.delivery is not None and summary.delivery.failed_attempts == 0, "the alert was refused before it went through"
    assert elapsed < 8.0, f"run --once took {elapsed:.1f} s: the alert waited for request_timeout_ms"


# -- errors that never go away, and outages that do ---------------------------------


def _rule(rule_id: str, topic: str, query: str) -> str:
    return f"rules:\n  - id: {rule_id}\n    topic: {topic}\n    query: '{query}'\n"


async def test_a_record_refused_on_every_try_is_dead_lettered_and_run_once_ends(feed_server: FeedServer, tmp_path):
    """The broker answers one topic's records with an error code nobody lists, every time:
    after [delivery] max_attempts tries the alert goes to the dead-letter topic with the
    reason, the other alert is delivered, and ``run --once`` ends with exit code 4."""
    run = uuid.uuid4().hex[:8]
    refused_topic, ok_topic, dead_letters = f"alerts.refused-{run}", f"alerts.ok-{run}", f"alerts.dead-letter.{run}"
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "animals.yaml").write_text(_rule("zebra", refused_topic, "zebra") + _rule("giraffe", ok_topic, "giraffe")[len("rules:\n"):])
    items = [
        _ITEM.format(run=run, n=0, title="A zebra escaped from the zoo", text="Keepers caught the zebra at noon."),
        _ITEM.format(run=run, n=1, title="A giraffe was born", text="The giraffe calf is healthy."),
    ]
    url = feed_server.serve("/animals.rss", _RSS.format(items="".join(items)))
    proxy = await KafkaProxy(marker=refused_topic.encode(), error_code=999).start()
    config = tmp_path / "monitor.toml"
    config.write_text(
        f"""
[kafka]
bootstrap_servers = "{proxy.bootstrap_servers}"
enable_idempotence = "false"
linger_ms = 1
dead_letter_topic = "{dead_letters}"
[state]
dir = "{tmp_path / 'state'}"
[feeds]
parse_workers = 0
[[feeds.feed]]
url = "{url}"
[rules]
paths = ["{rules}"]
watch = false
[delivery]
max_attempts = 3
retry_backoff_initial = 0.05
retry_backoff_max = 0.2
[log]
format = "json"
""",
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEWS_MONITOR_")}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "monitor", "run", "--once", "--config", str(config),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    try:
        try:
            out, err = await asyncio.wait_for(process.communicate(), 60)
        except TimeoutError:
            pytest.fail(f"run --once did not end within 60 s; the broker refused {proxy.refused} times")
        assert process.returncode == 4, err.decode()[-2000:]
        assert proxy.refused == 3
        summary = out.decode()
        assert "dead-lettered:  1" in summary and "undelivered" not in summary
        letters = await read_topic(proxy.bootstrap_servers, dead_letters, until=lambda rs: len(rs) >= 1)
        assert len(letters) == 1
        headers = _headers(letters[0])
        assert headers["dlq_original_topic"] == refused_topic.encode()
        assert headers["dlq_reason"].startswith(b"refused 3 times (max_attempts)") and b"UnknownError" in headers["dlq_reason"]
        assert orjson.loads(letters[0].value)["alert_id"] == alert_id_for("zebra", f"urn:dlq:{run}:0")
        delivered = await read_topic(proxy.bootstrap_servers, ok_topic, until=lambda rs: len(rs) >= 1)
        assert [orjson.loads(r.value)["rule_id"] for r in delivered] == ["giraffe"]
        events = [orjson.loads(line) for line in err.splitlines() if line.startswith(b"{")]
        assert sum(1 for e in events if e.get("event") == "alert.publish.refused") == 3
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await proxy.stop()


async def test_an_outage_is_retried_past_max_attempts_and_never_dead_lettered(tmp_path):
    """Connection failures are not refusals: with max_attempts = 1 a record still waits
    through several failed tries and is delivered when the broker is back."""
    run = uuid.uuid4().hex[:8]
    topic, dead_letters = f"alerts.outage-{run}", f"alerts.dead-letter.{run}"
    proxy = await KafkaProxy().start()
    settings = make_settings(
        tmp_path, proxy.bootstrap_servers, overrides={"kafka": {"enable_idempotence": "false", "request_timeout_ms": 1000}}
    )
    store = AsyncStore.open(settings.state_dir)
    publisher = KafkaPublisher(settings.kafka, proxy.bootstrap_servers)
    await publisher.start()
    article_id = f"urn:outage:{run}"
    alert = Alert(
        alert_id=alert_id_for("sanctions", article_id), rule_id="sanctions", topic=topic, severity="medium", tags=(),
        article_id=article_id, url=None, title="EU sanctions", published=None, feed_url="https://example.net/feed",
        matches=(Hit("sanctions", "title", 3, 12, "sanctions"),), snippet="EU sanctions",
        detected_at=datetime.now(UTC), ruleset_version="test",
    )
    delivery = Delivery(
        publisher, store, dead_letter_topic=dead_letters, max_attempts=1, backoff_initial=0.05, backoff_max=0.2
    )
    try:
        await store.enqueue([alert_record(alert)])
        proxy.down = True
        proxy.cut()
        await delivery.start()
        deadline = asyncio.get_running_loop().time() + 60
        while delivery.stats.failed_attempts < 3:
            assert asyncio.get_running_loop().time() < deadline, "the outage never failed a send"
            await asyncio.sleep(0.05)
        assert delivery.stats.dead_lettered == 0 and not delivery.healthy
        proxy.down = False
        assert await delivery.wait_idle(60)
        assert delivery.stats.published == 1 and delivery.stats.dead_lettered == 0
        assert await store.pending_count() == 0
    finally:
        await delivery.stop(1)
        await publisher.stop()
        await store.close()
        await proxy.stop()


async def test_an_alert_on_a_huge_article_fits_the_default_request_size(broker, feed_server: FeedServer, tmp_path):
    """A 147 KB article of one repeated sentence: 12,600 hits, which listed whole made an
    alert over 1 MB that only reached the dead-letter topic as a stub."""
    run = uuid.uuid4().hex[:8]
    topic, dead_letters = f"alerts.huge-{run}", f"alerts.dead-letter.{run}"
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "huge.yaml").write_text(_rule("huge", topic, "officials OR discussed OR sanctions"))
    body = "Officials discussed sanctions. " * 4_750
    assert len(body) > 147_000
    url = feed_server.serve("/huge.rss", _RSS.format(items=_ITEM.format(run=run, n=0, title="Long", text=body)))
    settings = make_settings(
        tmp_path, broker.bootstrap_servers, [url], rules=[rules],
        overrides={"kafka": {"dead_letter_topic": dead_letters, "enable_idempotence": "false"}},
    )
    monitor = Monitor(settings)
    summary = await monitor.run(once=True, handle_signals=False)
    assert monitor.delivery is not None and monitor.delivery.stats.dead_lettered == 0
    assert summary.undelivered == 0
    records = await read_topic(broker.bootstrap_servers, topic, until=lambda rs: len(rs) >= 1)
    assert len(records) == 1 and len(records[0].value) < 20_000
    alert = alerts_from(records)[0]
    # The rule engine considers the first MAX_HITS_PER_TERM hits of a term in a field.
    assert alert["match_counts"] == {"officials": MAX_HITS_PER_TERM, "discussed": MAX_HITS_PER_TERM, "sanctions": MAX_HITS_PER_TERM}
    assert alert["matches_truncated"] is True and len(alert["matches"]) == 30


async def test_a_record_the_dead_letter_topic_refuses_too_is_kept_in_the_outbox(tmp_path):
    """Both the alert's topic and the dead-letter topic refuse it: delivery gives up for
    this run (so run --once can end) but keeps the record for the next start."""
    run = uuid.uuid4().hex[:8]
    proxy = await KafkaProxy(marker=run.encode(), error_code=999).start()
    settings = make_settings(tmp_path, proxy.bootstrap_servers, overrides={"kafka": {"enable_idempotence": "false"}})
    store = AsyncStore.open(settings.state_dir)
    publisher = KafkaPublisher(settings.kafka, proxy.bootstrap_servers)
    await publisher.start()
    article_id = f"urn:given-up:{run}"
    alert = Alert(
        alert_id=alert_id_for("sanctions", article_id), rule_id="sanctions", topic=f"alerts.refused-{run}", severity="medium",
        tags=(), article_id=article_id, url=None, title="EU sanctions", published=None, feed_url="https://example.net/feed",
        matches=(Hit("sanctions", "title", 3, 12, "sanctions"),), snippet="EU sanctions",
        detected_at=datetime.now(UTC), ruleset_version="test",
    )
    delivery = Delivery(
        publisher, store, dead_letter_topic=f"alerts.dead-letter.{run}", max_attempts=2, backoff_initial=0.05, backoff_max=0.1
    )
    try:
        await store.enqueue([alert_record(alert)])
        await delivery.start()
        assert await delivery.wait_idle(30)
        assert delivery.stats.abandoned == 1 and delivery.stats.dead_lettered == 0 and delivery.stats.published == 0
        assert proxy.refused == 4  # twice on its topic, twice on the dead-letter topic
        assert [r.alert_id for r in await store.pending()] == [alert.alert_id]
    finally:
        await delivery.stop(1)
        await publisher.stop()
        await store.close()
        await proxy.stop()


async def test_an_outbox_row_this_version_cannot_read_is_dead_lettered_and_the_rows_after_it_are_sent(broker, tmp_path):
    """Headers not in this version's format (another version's row, or a damaged one): the
    exception ended the resend at that row, with a traceback, and the rows after it waited
    for a next start that stopped there again."""
    run = uuid.uuid4().hex[:8]
    dead_letters = f"alerts.dead-letter.{run}"
    topic = f"alerts.outbox.{run}"
    settings = make_settings(tmp_path, broker.bootstrap_servers, overrides={"kafka": {"enable_idempotence": "false"}})
    store = AsyncStore.open(settings.state_dir)
    publisher = KafkaPublisher(settings.kafka, broker.bootstrap_servers)
    await publisher.start()

    def record(n: int) -> Record:
        return Record(f"{run}-{n}", f"urn:{run}:{n}", topic, b"k", b'{"n": %d}' % n, (("ce_id", f"{run}-{n}".encode()),))

    try:
        await store.enqueue([record(1)])
        store.sync._db.execute(
            "INSERT INTO outbox (alert_id, article_id, topic, key, value, headers, created) VALUES (?, ?, ?, ?, ?, ?, 0)",
            (f"{run}-old", f"urn:{run}:old", topic, "k", b'{"n": "old"}', b"ce_id=1;ce_type=news.alert.v0"),
        )
        await store.enqueue([record(2)])
        delivery = Delivery(publisher, store, dead_letter_topic=dead_letters)
        assert await delivery.start() == 3
        assert await delivery.wait_idle(15)
        await delivery.stop(1)
        assert delivery.stats.published == 2 and delivery.stats.dead_lettered == 1
        assert await store.pending_count() == 0
    finally:
        await publisher.stop()
        await store.close()
    sent = await read_topic(broker.bootstrap_servers, topic, until=lambda rs: len(rs) >= 2)
    assert sorted(r.value for r in sent) == [b'{"n": 1}', b'{"n": 2}']
    (letter,) = await read_topic(broker.bootstrap_servers, dead_letters, until=lambda rs: len(rs) >= 1)
    assert letter.value == b'{"n": "old"}' and letter.key == b"k"
    assert _headers(letter)["dlq_reason"].startswith(b"the outbox row's headers cannot be read (written by another version")


async def test_an_outbox_the_failing_store_cannot_read_at_start_is_sent_when_it_recovers(broker, tmp_path):
    # The StoreError ended the resend task ("Task exception was never retrieved") and the
    # outbox waited for the next start, though the store recovered meanwhile.
    from structlog.testing import capture_logs

    from monitor.errors import StoreError

    run = uuid.uuid4().hex[:8]
    topic = f"alerts.outbox.{run}"
    settings = make_settings(tmp_path, broker.bootstrap_servers, overrides={"kafka": {"enable_idempotence": "false"}})
    store = AsyncStore.open(settings.state_dir)
    await store.enqueue([Record(f"{run}-1", f"urn:{run}:1", topic, b"k", b"{}", ())])
    read = store.pending_page
    failures = [StoreError("monitor.sqlite3: disk I/O error", kind="unavailable")]

    async def failing_once(*args, **kwargs):
        if failures:
            raise failures.pop()
        return await read(*args, **kwargs)

    store.pending_page = failing_once  # type: ignore[method-assign]
    publisher = KafkaPublisher(settings.kafka, broker.bootstrap_servers)
    await publisher.start()
    try:
        delivery = Delivery(publisher, store, dead_letter_topic=f"dead-{run}")
        with capture_logs() as logs:
            assert await delivery.start() == 1
            assert await delivery.wait_idle(15)
            assert delivery.stats.published == 0
            for recovered in store.recovery_listeners:
                recovered()
            await asyncio.sleep(0)  # the sweep starts
            assert await delivery.wait_idle(15)
        await delivery.stop(1)
        assert delivery.stats.published == 1 and await store.pending_count() == 0
        assert [e["event"] for e in logs if e["event"].startswith("delivery.outbox")][:1] == ["delivery.outbox.resend_failed"]
    finally:
        await publisher.stop()
        await store.close()
