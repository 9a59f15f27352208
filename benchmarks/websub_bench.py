"""WebSub push latency and throughput: 1,000 subscribed feeds, pushes at a steady rate.

A separate process runs the W3C hub of the tests (``tests/websub/hub.py``) and a feed
server whose 1,000 feeds name it in their ``Link`` headers. This process runs the real
daemon (``Monitor``, default settings but for what is listed below) with the embedded
broker: it polls each feed once, discovers the hub, subscribes, answers the 1,000
verifications, and from then on the hub pushes. Each push is one new item that matches
a rule of the repository's rule set, so each push makes one alert.

Measured, per push: from the moment the hub starts its POST to Kafka's acknowledgement
of the alert (the daemon's ``on_published`` hook, ``time.time()`` in both processes):
hub POST, the callback listener (rate limits, body, signature), the push queue, the
parse in the CPU pool, dedupe, matching, the outbox write and the produce. Printed:
p50, p99 and max at the steady rate (default 100 pushes/s for 20 s), pushes/s handled,
and the same for a flood phase (pushes as fast as the hub sends them, 32 at a time).

The daemon logs at its default level (info, JSON) to /dev/null, so each push's log
lines cost what they cost in production.

Differences from a deployment, on purpose: everything is on loopback; ``[stories]`` is
off (each push is its own story; the story index is measured in its own benchmark);
``[websub] rate_limit`` and ``feed_rate_limit`` are raised so the flood phase measures
the pipeline, not the flood guard.

    .venv/bin/python benchmarks/websub_bench.py [--feeds 1000] [--rate 100] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import orjson
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from monitor.settings import load_settings
from monitor.worker import Monitor
from tests.websub.hub import Hub

RULES = Path(__file__).resolve().parents[1] / "rules"
TEXT = "The European Union agreed new sanctions against Russia on Friday, targeting oil exports and banks, item {n}."


def _item(n: int) -> bytes:
    return (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>bench</title><item><title>EU sanctions {n}</title>'
        f"<link>https://bench.example/{n}</link><guid>urn:bench:{n}</guid><description>{TEXT.format(n=n)}</description>"
        "</item></channel></rss>"
    ).encode()


# -- the hub and feed process ------------------------------------------------------------------


def serve(feeds: int, conn: Connection) -> None:
    asyncio.run(_serve(feeds, conn))


async def _serve(feeds: int, conn: Connection) -> None:
    hub = await Hub().start()
    hub_url = hub.url("/hub")

    async def feed(request: web.Request) -> web.Response:
        url = f"http://127.0.0.1:{port}{request.path}"
        body = b'<?xml version="1.0"?><rss version="2.0"><channel><title>quiet</title></channel></rss>'
        return web.Response(body=body, headers={"Content-Type": "application/rss+xml", "Link": f'<{hub_url}>; rel="hub", <{url}>; rel="self"'})

    app = web.Application()
    app.router.add_get("/f/{n}.rss", feed)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    conn.send([f"http://127.0.0.1:{port}/f/{n}.rss" for n in range(feeds)])
    loop = asyncio.get_running_loop()
    while True:
        command = await loop.run_in_executor(None, conn.recv)
        if command[0] == "active":
            conn.send(len([s for s in hub.subscriptions.values() if s.expires > time.time()]))
        elif command[0] == "publish":
            conn.send(await _publish(hub, *command[1:]))
        else:
            break
    await hub.stop()
    await runner.cleanup()


async def _publish(hub: Hub, topics: list[str], rate: float, count: int, start: int, concurrency: int) -> dict[str, float]:
    """Push ``count`` items round the topics, ``rate`` a second (0: as fast as ``concurrency`` allows)."""
    sent: dict[str, float] = {}
    gate = asyncio.Semaphore(concurrency)
    tasks = []
    began = time.monotonic()

    async def one(n: int) -> None:
        async with gate:
            sent[f"https://bench.example/{n}"] = time.time()
            await hub.publish(topics[n % len(topics)], _item(n))

    for i in range(count):
        if rate:
            delay = began + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(start + i)))
    await asyncio.gather(*tasks)
    return sent


# -- the daemon ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _settings(state: Path, feeds: list[str]):  # -> Settings
    base = load_settings(None, environ={})
    port = _free_port()
    return dataclasses.replace(
        base,
        state=dataclasses.replace(base.state, dir=str(state)),
        feeds=dataclasses.replace(base.feeds, feed=tuple({"url": url} for url in feeds), per_host=64),
        rules=dataclasses.replace(base.rules, paths=(str(RULES),), watch=False),
        http=dataclasses.replace(base.http, enabled=False),
        stories=dataclasses.replace(base.stories, enabled=False),
        websub=dataclasses.replace(
            base.websub, enabled=True, callback_url=f"http://127.0.0.1:{port}/websub/", listen=f"127.0.0.1:{port}",
            hub_allow=("127.0.0.1",), rate_limit=100_000.0, feed_rate_limit=1_000.0, queue_size=10_000,
        ),
    )


def _report(label: str, sent: dict[str, float], acked: dict[str, float]) -> None:
    latencies = sorted((acked[url] - at) * 1000 for url, at in sent.items() if url in acked)
    missing = len(sent) - len(latencies)
    if not latencies:
        print(f"{label}: nothing acknowledged")
        return
    span = max(acked[url] for url in sent if url in acked) - min(sent.values())
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(
        f"{label}: {len(latencies)} pushes, push-to-Kafka-ack p50 {statistics.median(latencies):.1f} ms, "
        f"p99 {p99:.1f} ms, max {latencies[-1]:.1f} ms; {len(latencies) / span:.0f} pushes/s handled"
        + (f"; {missing} not acknowledged" if missing else "")
    )


async def _bench(args: argparse.Namespace, conn: Connection, feeds: list[str], state: Path) -> None:
    acked: dict[str, float] = {}
    monitor = Monitor(_settings(state, feeds))
    published = monitor.observer.alert_published

    def hooked(record, latency):  # type: ignore[no-untyped-def]
        if record.topic.startswith("alerts."):
            acked[orjson.loads(record.value)["article"]["url"]] = time.time()
        published(record, latency)

    monitor.observer.alert_published = hooked  # type: ignore[method-assign]
    task = asyncio.create_task(monitor.run(handle_signals=False))
    loop = asyncio.get_running_loop()

    async def ask(*command: object) -> object:
        conn.send(command)
        return await loop.run_in_executor(None, conn.recv)

    started = time.monotonic()
    while await ask("active") < len(feeds):
        if time.monotonic() - started > 300 or task.done():
            raise SystemExit(f"only {await ask('active')} of {len(feeds)} subscriptions verified")
        await asyncio.sleep(0.5)
    print(f"{len(feeds)} feeds subscribed and verified in {time.monotonic() - started:.1f} s")

    async def phase(label: str, rate: float, count: int, start: int, concurrency: int) -> None:
        sent = await ask("publish", feeds, rate, count, start, concurrency)
        assert isinstance(sent, dict)
        deadline = time.monotonic() + 30
        while any(url not in acked for url in sent) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        _report(label, sent, acked)

    await phase("warm-up", 50, 200, 10_000_000, 8)
    await phase(f"steady {args.rate:g}/s", args.rate, int(args.rate * args.seconds), 0, 64)
    await phase("flood", 0, args.flood, 1_000_000, 32)
    monitor.stop()
    await task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--flood", type=int, default=2000, help="pushes in the flood phase")
    parser.add_argument("--log-level", default="info", help="the daemon's default is info")
    args = parser.parse_args()
    from monitor.log import configure_logging

    # The daemon's default level and format, so per-push log lines cost what they cost in
    # production; written to /dev/null to keep the report readable.
    sink = open(os.devnull, "w")  # noqa: SIM115 - open for the whole run
    configure_logging(args.log_level, "json", stream=sink)
    ours, theirs = multiprocessing.Pipe()
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(args.feeds, theirs), daemon=True)
    server.start()
    feeds = ours.recv()
    try:
        with tempfile.TemporaryDirectory() as state:
            asyncio.run(_bench(args, ours, feeds, Path(state)))
    finally:
        ours.send(("stop",))
        server.join(10)


if __name__ == "__main__":
    main()
