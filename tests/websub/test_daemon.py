"""WebSub end to end: the daemon, a local W3C hub, a feed server and the real broker.

The feed names the hub in its Link headers; the daemon subscribes, the hub verifies,
a signed push becomes an alert, a badly signed one does not, an item pushed and then
polled alerts once, and when the hub vanishes the feed is polled at the fallback
interval and the next item still alerts.
"""

from __future__ import annotations

import dataclasses
import socket

import pytest

from monitor.adapters.web import render_status_page
from monitor.worker import Monitor
from tests.support import Running, make_settings, read_alerts, rss, until

pytestmark = pytest.mark.integration

TOPICS = ("alerts.sanctions",)

SANCTIONS = "The European Union agreed new sanctions against Russia on Friday, targeting oil exports and banks."
#: A second story (the story index would take a near copy of the first for the same news).
SANCTIONS_2 = "Washington imposed sanctions on Iranian shipping firms accused of moving oil to China, the Treasury said."
QUIET = "The village fete drew a record crowd this year, organisers said."


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def websub_settings(tmp_path, broker, feeds, port: int, **websub):
    options = {
        "enabled": True,
        "callback_url": f"http://127.0.0.1:{port}/websub/",
        "listen": f"127.0.0.1:{port}",
        "hub_allow": ("127.0.0.1",),
        "retry_initial": 1.0,
        "retry_max": 2.0,
        **websub,
    }
    # Below the settings' 1 s floor (make_settings does not validate): a short test.
    overrides = {"feeds": {"interval": 0.3, "max_interval": 0.3, "jitter": 0.0}, "websub": options}
    return make_settings(tmp_path, broker.bootstrap_servers, feeds, overrides=overrides)


def subscription(monitor, url):
    """The daemon's subscription for ``url`` (None before WebSub started, or without one)."""
    websub = monitor.parts.websub
    return websub.subscriber.subscriptions.get(url) if websub is not None else None


async def test_push_alerts_forgery_does_not_and_fallback_polling_catches_up(broker, server, hub, tmp_path):
    items = [("quiet-1", "Village fete", QUIET)]
    body = {"rss": rss(items)}
    feed = server.url("/push.rss")
    links = f'<{hub.url("/hub")}>; rel="hub", <{feed}>; rel="self"'

    async def handler(request):
        from aiohttp import web

        return web.Response(body=body["rss"], headers={"Content-Type": "application/rss+xml", "Link": links})

    server.handlers["/push.rss"] = handler
    port = free_port()
    settings = websub_settings(tmp_path, broker, [feed], port, fallback_interval=1.5)
    async with Running(settings) as monitor:
        await until(lambda: (s := subscription(monitor, feed)) is not None and s.state == "active", what="an active subscription")
        await until(lambda: bool(hub.active(feed)), what="the hub's verified subscription")
        request = hub.requests[0].form
        assert request["hub.mode"] == "subscribe" and request["hub.topic"] == feed
        assert request["hub.callback"].startswith(f"http://127.0.0.1:{port}/websub/") and len(request["hub.secret"]) >= 32

        # A forged push (wrong secret) is answered 202 and ignored; a signed one alerts.
        forged = rss([("forged", "EU sanctions", SANCTIONS + " Forged.")])
        assert await hub.publish(feed, forged, secret="not-the-secret") == [202]
        pushed = [("pushed-1", "EU sanctions on Russian oil", SANCTIONS)]
        assert await hub.publish(feed, rss(pushed)) == [202]
        alerts = await read_alerts(broker.bootstrap_servers, [feed], expect=1, topics=TOPICS)
        assert {a["article"]["url"] for a in alerts} == {"https://news.example/pushed-1"}
        assert monitor.parts.websub.inbox.stats.outcomes["bad_signature"] == 1
        # A signed body that is no feed is refused by the parser, as a polled one would be.
        assert await hub.publish(feed, b"<html><body>not a feed</body></html>", "text/html") == [202]
        metrics = monitor.observer.metrics
        await until(lambda: metrics.push_counts["error"] == 1, what="the bad push through the pipeline")
        text = metrics.render().decode()
        assert 'news_monitor_websub_subscriptions{state="active"} 1.0' in text
        assert 'news_monitor_websub_signature_failures_total{kind="bad"} 1.0' in text
        assert "news_monitor_websub_push_to_alert_seconds_count 1.0" in text
        snapshot = monitor.observer.status.snapshot()
        shown = snapshot.extra["websub"]["feeds"]
        assert [(row["url"], row["state"], row["pushes"]) for row in shown] == [(feed, "active", 2)]
        page = render_status_page(snapshot)
        assert f'data-url="{feed}" data-push="active"' in page and "Push (WebSub)" in page

        # The feed now lists the pushed item too: the fallback poll finds it seen.
        body["rss"] = rss(items + pushed)
        polls = len(server.of("/push.rss"))
        await until(lambda: len(server.of("/push.rss")) >= polls + 2, what="two fallback polls")
        gaps = [b.at - a.at for a, b in zip(server.of("/push.rss")[-3:], server.of("/push.rss")[-2:])]
        assert min(gaps) >= 1.5 * 0.9, f"polled at the fallback interval, not every second: {gaps}"

        # The hub vanishes: nothing is pushed any more, and polling still brings the next item.
        await hub.stop()
        body["rss"] = rss(items + pushed + [("polled-1", "US sanctions Iranian shipping", SANCTIONS_2)])
        alerts = await read_alerts(broker.bootstrap_servers, [feed], expect=2, topics=TOPICS)
    guids = sorted(a["article"]["url"] for a in alerts)
    assert guids == ["https://news.example/polled-1", "https://news.example/pushed-1"], "each item alerted once, whether pushed, polled or both"


async def test_a_feed_polled_before_websub_was_on_is_fetched_whole_once_to_find_its_hub(broker, server, hub, tmp_path):
    etag = '"v1"'
    feed = server.url("/etag.rss")
    links = f'<{hub.url("/hub")}>; rel="hub"'

    async def handler(request):
        from aiohttp import web

        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag, "Link": links})
        headers = {"Content-Type": "application/rss+xml", "ETag": etag, "Link": links}
        return web.Response(body=rss([("q", "Quiet", QUIET)]), headers=headers)

    server.handlers["/etag.rss"] = handler
    port = free_port()
    settings = websub_settings(tmp_path, broker, [feed], port)
    # A run without WebSub leaves the ETag behind: from then on the server answers 304,
    # and hub links are read from answers with a body.
    await Monitor(dataclasses.replace(settings, websub=dataclasses.replace(settings.websub, enabled=False))).run(once=True, handle_signals=False)
    assert "If-None-Match" not in server.of("/etag.rss")[0].headers
    async with Running(settings) as monitor:
        await until(lambda: (s := subscription(monitor, feed)) is not None and s.state == "active", what="an active subscription")
    first_of_run = server.of("/etag.rss")[1]
    assert "If-None-Match" not in first_of_run.headers, "the first poll of the run asks for the whole body"
    assert hub.requests[0].form["hub.topic"] == feed, "no self link: the feed is its own topic"


async def test_a_taken_callback_port_is_a_config_error_naming_the_setting(broker, tmp_path):
    from monitor.errors import ConfigError

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = websub_settings(tmp_path, broker, ["https://example.org/feed.xml"], port)
        with pytest.raises(ConfigError) as caught:
            await Monitor(settings).run(handle_signals=False)
    assert str(caught.value).startswith(f"[websub] listen: cannot listen on 127.0.0.1:{port}")
