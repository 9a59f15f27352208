"""WebSub in the poller role, against the real broker, a local W3C hub and a feed server:
the poller subscribes its feeds with a callback URL of its own, a signed push becomes an
article record (and, with the matcher in the process, an alert), and after a hand-over the
new owner asks the hub again with its own callback while the old owner answers 404, so
every item is published once."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import uuid
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import orjson
import pytest

from monitor.app.poller_websub import callback_base
from monitor.app.roles import RoleHost
from monitor.cluster import feed_partition
from monitor.errors import ConfigError
from monitor.model import Feed
from monitor.settings import Settings
from tests.app.test_poller_role import SEED, RunningPoller, articles, cluster_settings, ids, write_feeds
from tests.support import FeedServer, read_alerts, read_topic, rss, until
from tests.websub.hub import Hub

pytestmark = pytest.mark.integration


@pytest.fixture
async def hub():
    hub = await Hub().start()
    try:
        yield hub
    finally:
        await hub.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_websub(settings: Settings, port: int) -> Settings:
    """``settings`` with WebSub on: this poller's own listener, a per-instance callback URL, this test's WebSub topic."""
    websub = dataclasses.replace(
        settings.websub, enabled=True, callback_url=f"http://127.0.0.1:{port}/websub/{{instance}}/",
        listen=f"127.0.0.1:{port}", hub_allow=("127.0.0.1",), retry_initial=1.0, retry_max=2.0,
    )  # fmt: skip
    cluster = dataclasses.replace(settings.cluster, websub_topic=settings.cluster.feed_state_topic.replace("feed-state", "websub"))
    return dataclasses.replace(settings, websub=websub, cluster=cluster)


def serve_pushing(feed_server: FeedServer, hub: Hub, url: str, items: list[tuple[str, str, str]]) -> str:
    """The feed ``url`` (on ``feed_server``) naming ``hub``, and itself as the topic, in its Link headers."""
    path = "/" + url.split("/", 3)[3]
    feed_server.serve(path, rss(items), headers={"Link": f'<{hub.url("/hub")}>; rel="hub", <{url}>; rel="self"'})
    return url


def callbacks(hub: Hub, topic: str) -> list[str]:
    return sorted(s.callback for s in hub.active(topic))


async def subscriptions_on_topic(settings: Settings, holds: Any) -> dict[str, dict[str, Any]]:
    """The latest subscription per feed url on the WebSub topic, once ``holds(them)``."""

    def latest(records: list[Any]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for record in records:
            if record.key == b"__news-monitor-marker__":
                continue
            if record.value:
                found[record.key.decode()] = orjson.loads(record.value)
            else:
                found.pop(record.key.decode(), None)
        return found

    records = await read_topic(
        settings.kafka.bootstrap_servers, settings.cluster.websub_topic, until=lambda rs: holds(latest(rs)), timeout=20
    )
    return latest(records)


def test_the_poller_role_needs_a_callback_url_per_instance(tmp_path: Path) -> None:
    settings = with_websub(cluster_settings(tmp_path, "127.0.0.1:1", "poller-a", "x"), 1)
    assert callback_base(settings, "pod/0:1") == "http://127.0.0.1:1/websub/pod%2F0%3A1/"
    shared = dataclasses.replace(settings, websub=dataclasses.replace(settings.websub, callback_url="https://m.example/websub/"))
    with pytest.raises(ConfigError, match=r"has no \{instance\}") as caught:
        callback_base(shared, "poller-a")
    assert "proxy" in (caught.value.hint or "")


async def test_a_pushed_item_becomes_an_article_and_an_alert_in_poller_matcher(
    broker: Any, feed_server: FeedServer, hub: Hub, tmp_path: Path
) -> None:
    """``run --role poller,matcher`` with WebSub: the poller subscribes with its own callback,
    keeps the subscription on the WebSub topic, and a signed push is published once as an
    article and matched into alerts; a forged push is not."""
    if not SEED.exists():
        pytest.skip("../shared/seeds is not present")
    tag = uuid.uuid4().hex[:10]
    port = free_port()
    settings = with_websub(cluster_settings(tmp_path, broker.bootstrap_servers, "both", tag), port)
    settings = dataclasses.replace(settings, rules=dataclasses.replace(settings.rules, watch=False))
    url = serve_pushing(feed_server, hub, f"http://127.0.0.1:{feed_server.port}/{tag}/push.xml", [("q1", "quiet", "nothing")])
    await write_feeds(settings, Feed(url=url, interval=3600.0))
    host = RoleHost(settings, ("poller", "matcher"))
    task = asyncio.create_task(host.run(handle_signals=False))
    try:
        await until(lambda: bool(hub.active(url)), timeout=40, what="the hub's verified subscription")
        assert callbacks(hub, url)[0].startswith(f"http://127.0.0.1:{port}/websub/both/")
        stored = await subscriptions_on_topic(settings, lambda subs: subs.get(url, {}).get("state") == "active")
        assert stored[url]["owner"] == "both" and stored[url]["secret"] == hub.active(url)[0].secret
        assert ids(await articles(settings, 1)) == ["urn:t:q1"]

        text = escape(" ".join(SEED.read_text(encoding="utf-8").split()))
        pushed = rss([("s1", "Trump and Putin to meet in Anchorage", text), ("q1", "quiet", "nothing")])
        assert await hub.publish(url, rss([("forged", "forged", text)]), secret="not-the-secret") == [202]
        assert await hub.publish(url, pushed) == [202]
        alerts = await read_alerts(broker.bootstrap_servers, [url], expect=3, timeout=30)
        assert {a["rule_id"] for a in alerts} >= {"summit"} and len({a["alert_id"] for a in alerts}) == len(alerts)
        assert ids(await articles(settings, 2)) == ["urn:t:q1", "urn:t:s1"]  # the forged item is not there
    finally:
        host.stop()
        await asyncio.wait_for(task, timeout=30)


async def test_after_a_hand_over_the_new_owner_takes_the_pushes_and_nothing_is_published_twice(
    broker: Any, feed_server: FeedServer, hub: Hub, tmp_path: Path
) -> None:
    """Two feeds in two partitions, subscribed by the first poller; a second joins and takes
    one. The first forgets that subscription without unsubscribing (its callback answers 404
    from then on); the second asks the hub again with its own callback, same token and secret.
    A push to each feed is then published once, by its owner."""
    tag = uuid.uuid4().hex[:10]
    first = with_websub(cluster_settings(tmp_path, broker.bootstrap_servers, "poller-a", tag, topic_partitions=2), free_port())
    second = with_websub(cluster_settings(tmp_path, broker.bootstrap_servers, "poller-b", tag, topic_partitions=2), free_port())
    port = feed_server.port
    feeds = [
        serve_pushing(feed_server, hub, f"http://{host}:{port}/{tag}/{host}.xml", [(f"{host}-1", "first", "x")])
        for host in ("127.0.0.1", "localhost")
    ]
    assert sorted(feed_partition(url, 2) for url in feeds) == [0, 1]
    await write_feeds(first, *(Feed(url=url, interval=3600.0) for url in feeds))
    joining = RunningPoller(second)
    try:
        async with RunningPoller(first) as a:
            await until(lambda: all(hub.active(url) for url in feeds), timeout=40, what="both feeds subscribed by the first")
            tokens = {url: callbacks(hub, url)[0].rsplit("/", 1)[1] for url in feeds}
            assert all(callbacks(hub, url)[0].startswith(first.websub.callback_url.replace("{instance}", "poller-a")) for url in feeds)
            b = await joining.__aenter__()
            await until(lambda: len(a.owned) == len(b.owned) == 1, timeout=40, what="the partitions split between two pollers")
            moved = next(url for url in feeds if feed_partition(url, 2) in b.owned)
            stays = next(url for url in feeds if url != moved)
            b_callback = second.websub.callback_url.replace("{instance}", "poller-b") + tokens[moved]
            await until(lambda: b_callback in callbacks(hub, moved), timeout=40, what="the new owner's verified callback")
            assert b.websub is not None and a.websub is not None and a.websub.parts is not None
            assert a.websub.parts.subscriber.subscriptions.keys() == {stays}
            assert not [r for r in hub.requests if r.form.get("hub.mode") == "unsubscribe"]
            stored = await subscriptions_on_topic(first, lambda subs: subs.get(moved, {}).get("owner") == "poller-b")
            assert stored[moved]["callback"] == b_callback and stored[stays]["owner"] == "poller-a"

            # The hub still holds the old owner's callback for the moved feed: that one answers 404.
            first_item = (moved.rsplit("/", 1)[1].removesuffix(".xml") + "-1", "first", "x")
            statuses = await hub.publish(moved, rss([("moved-2", "second", "y"), first_item]))
            assert sorted(statuses) == [202, 404]
            assert await hub.publish(stays, rss([("stays-2", "second", "y")])) == [202]
            published = await articles(first, 4)
            assert ids(published) == sorted(["urn:t:127.0.0.1-1", "urn:t:localhost-1", "urn:t:moved-2", "urn:t:stays-2"])
    finally:
        if joining.task is not None:
            await joining.__aexit__(None, None, None)
        else:  # failed before the second poller started: the first failure is the one to see
            await joining.publisher.stop()
    assert len(await articles(first, 4)) == 4
