"""The callback listener (monitor.adapters.websub) against bad input, on loopback:
unknown tokens, wrong methods, floods, oversized and compressed-bomb bodies, unsigned
and badly signed pushes; a good push after all that still goes through."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import hmac

import aiohttp
import pytest

from monitor.model import Feed
from monitor.websub import PushLinks
from tests.support import until
from tests.websub.support import TOPIC

pytestmark = pytest.mark.integration


def signed(secret: str, body: bytes, method: str = "sha256") -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, getattr(hashlib, method)).hexdigest()
    return {"X-Hub-Signature": f"{method}={digest}", "Content-Type": "application/rss+xml"}


async def subscribed(hub, running, **options):
    parts = await running(**options)
    parts.subscriber.links_found(Feed(TOPIC), PushLinks((hub.url("/hub"),), TOPIC))
    await until(lambda: (s := parts.sub()) is not None and s.state == "active", what="an active subscription")
    # The hub records it once it has read our answer: a moment after we did.
    await until(lambda: bool(hub.active(TOPIC)), what="the hub's subscription")
    return parts, parts.sub()


async def test_unknown_tokens_wrong_methods_and_floods(hub, running):
    parts, sub = await subscribed(hub, running, rate_limit=5.0)
    async with aiohttp.ClientSession() as session:
        async with session.post(parts.base + "no-such-token", data=b"<rss/>") as response:
            assert response.status == 404
        async with session.delete(parts.base + sub.token) as response:
            assert response.status == 405
        statuses = []
        for _ in range(20):
            async with session.post(parts.base + "no-such-token", data=b"x") as response:
                statuses.append(response.status)
                if response.status == 429:
                    assert response.headers["Retry-After"] == "1"
    assert statuses.count(429) >= 10, statuses
    assert set(statuses) <= {404, 429}
    assert parts.inbox.stats.outcomes["rate_limited"] >= 10
    assert not parts.pushed


async def test_oversized_bombs_and_bad_signatures_are_refused_and_a_good_push_still_arrives(hub, running):
    parts, sub = await subscribed(hub, running, max_bytes=10_000)
    url = parts.base + sub.token
    big = b"<rss>" + b"x" * 20_000 + b"</rss>"
    bomb = gzip.compress(b"\0" * 5_000_000)
    good = b"<rss><channel><item><title>ok</title></item></channel></rss>"
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=big, headers=signed(sub.secret, big)) as response:
            assert response.status == 413
        headers = {**signed(sub.secret, bomb), "Content-Encoding": "gzip"}
        async with session.post(url, data=bomb, headers=headers) as response:
            assert response.status == 413, "counted inflated: the bomb stops at the limit"
        async with session.post(url, data=good, headers={"Content-Type": "application/rss+xml"}) as response:
            assert response.status == 202, "unsigned: acknowledged, ignored"
        async with session.post(url, data=good, headers=signed("wrong secret", good)) as response:
            assert response.status == 202, "badly signed: acknowledged, ignored"
        async with session.post(url, data=good, headers=signed(sub.secret, good, "sha512")) as response:
            assert response.status == 202
    await until(lambda: bool(parts.pushed), what="the good push delivered")
    assert parts.pushed == [(TOPIC, good)]
    outcomes = parts.inbox.stats.outcomes
    assert (outcomes["too_large"], outcomes["unsigned"], outcomes["bad_signature"], outcomes["accepted"]) == (2, 1, 1, 1)
    assert parts.sub().pushes == 1 and parts.sub().last_push_at is not None  # type: ignore[union-attr]


@pytest.mark.parametrize("method", ["sha1", "sha384"])
async def test_the_hub_may_sign_with_any_method_the_spec_lists(hub, running, method):
    hub.sign = method
    parts, _sub = await subscribed(hub, running)
    assert await hub.publish(TOPIC, b"<rss/>") == [202]
    await until(lambda: bool(parts.pushed), what="the push delivered")


async def test_a_full_push_queue_answers_503_and_the_hub_can_deliver_later(hub, running):
    parts, _sub = await subscribed(hub, running, queue_size=1)
    parts.flowing.clear()
    # Four workers each hold one push, one waits in the queue: the sixth finds it full.
    statuses = [status for _ in range(6) for status in await hub.publish(TOPIC, b"<rss/>")]
    assert statuses == [202] * 5 + [503], statuses
    parts.flowing.set()
    await until(lambda: len(parts.pushed) == 5, what="the queued pushes delivered")
    assert await hub.publish(TOPIC, b"<rss/>") == [202]


async def test_an_unreadable_push_is_logged_with_a_reason_in_words(hub, running):
    import io

    import orjson

    from monitor.log import configure_logging

    parts, sub = await subscribed(hub, running)
    stream = io.StringIO()
    configure_logging("info", "json", stream)
    try:
        headers = {**signed(sub.secret, b"x"), "Content-Encoding": "gzip"}
        async with aiohttp.ClientSession() as session, session.post(parts.base + sub.token, data=b"not gzip at all", headers=headers) as response:
            assert response.status == 400
    finally:
        configure_logging("warning", "json")
    [refused] = [e for e in map(orjson.loads, stream.getvalue().splitlines()) if e["event"] == "websub.push.refused"]
    # Before: a 500 and aiohttp's "Unhandled exception" traceback (its RequestPayloadError was not caught).
    assert refused["reason"] == "the body was cut off or malformed: Can not decode content-encoding: gzip"
    assert parts.inbox.stats.outcomes["bad_request"] == 1 and not parts.pushed


async def test_a_non_ascii_signature_is_a_bad_signature_not_a_server_error(hub, running):
    parts, sub = await subscribed(hub, running)
    # Raw bytes: a client library would not send a header that is not Latin-1.
    assert parts.server.address is not None
    reader, writer = await asyncio.open_connection("127.0.0.1", parts.server.address[1])
    writer.write(
        f"POST /websub/{sub.token} HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nConnection: close\r\n".encode()
        + b"X-Hub-Signature: sha256=\xc3\xa9\xff\r\n\r\n<rss/>"
    )
    status_line = await reader.readline()
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 202"), status_line
    outcomes = parts.inbox.stats.outcomes
    assert (outcomes["bad_signature"], outcomes["accepted"]) == (1, 0)
    assert not parts.pushed


async def test_a_flood_of_refused_verifications_costs_a_few_log_lines_and_a_one_off_refusal_is_logged_in_full(hub, running):
    # One warning line per refused GET: ~200 lines a second under a flood of made-up tokens.
    from structlog.testing import capture_logs

    parts, sub = await subscribed(hub, running)
    flood = 200
    with capture_logs() as logs:
        async with aiohttp.ClientSession() as session:

            async def verify(token: str, mode: str) -> int:
                query = {"hub.mode": mode, "hub.topic": TOPIC, "hub.challenge": "c"}
                async with session.get(parts.base + token, params=query) as response:
                    return response.status

            statuses = [await verify(f"made-up-{n}", "subscribe") for n in range(flood - 1)]
            # A real subscription's one-off refusal, in the middle of the flood: not folded into it.
            assert await verify(sub.token, "unsubscribe") == 404
            statuses.append(await verify("made-up-last", "mode-of-the-last"))
        assert statuses == [404] * flood
        await parts.subscriber.stop()  # the count not yet logged is logged at shutdown
    lines = [e for e in logs if e["event"].startswith("websub.verify.refused")]
    assert [e["event"] for e in lines] == ["websub.verify.refused", "websub.verify.refused", "websub.verify.refused.repeated"]
    first, one_off, repeated = lines
    assert first["reason"] == "unknown token or topic" and "feed_url" not in first
    assert one_off["feed_url"] == TOPIC and one_off["mode"] == "unsubscribe" and one_off["reason"] == "waiting for no verification"
    assert repeated["count"] == flood - 1 and repeated["mode"] == "mode-of-the-last"
    assert parts.inbox.stats.outcomes["verify_refused"] == flood + 1


async def test_refusals_are_counted_once_per_interval_while_they_last_and_in_full_again_after_a_quiet_one():
    from structlog.testing import capture_logs

    from monitor.websub.refusals import RefusalLog

    refusals = RefusalLog(interval=0.05)
    with capture_logs() as logs:
        for n in range(5):
            refusals.refused("", reason=f"made-up {n}")
        await until(lambda: any(e["event"] == "websub.verify.refused.repeated" for e in logs), what="the count of the flood")
        await until(lambda: not refusals._windows, what="a quiet interval")
        refusals.refused("", reason="one-off")
    events = [(e["event"], e.get("count"), e["reason"]) for e in logs]
    assert events == [
        ("websub.verify.refused", None, "made-up 0"),
        ("websub.verify.refused.repeated", 4, "made-up 4"),
        ("websub.verify.refused", None, "one-off"),
    ]
    refusals.flush()
