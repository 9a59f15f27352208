"""Alerts per second through one ``news-monitor notify`` process to a local webhook.

Starts the embedded broker (Tansu) and a JSON webhook (aiohttp) in a separate process on
127.0.0.1, puts ``--alerts`` alerts (default 3,000, ~1 KB each, 3 partitions) on a fresh
topic, then runs ``news-monitor notify`` as a subprocess with one destination
(``json://``, no digest, no rate limit, ``[notify] concurrency`` as given) reading them
from the beginning. The clock runs from the webhook's first request to its last, so
start-up and the group join are not counted; the webhook counts each alert it receives,
and the run fails if one is missing or repeated.

    .venv/bin/python benchmarks/notify_bench.py [--alerts 3000] [--concurrency 4] [--runs 3]

Prints one line per run and the median, e.g.
``notify: 3000 alerts to a local webhook in 4.41 s: 680 alerts/s (concurrency 4)``.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiokafka import AIOKafkaProducer  # noqa: E402

from monitor.adapters.broker import EmbeddedBroker  # noqa: E402
from monitor.adapters.kafka import TopicAdmin  # noqa: E402
from monitor.settings import KafkaSettings  # noqa: E402
from tests.notify.support import alert_value  # noqa: E402


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _webhook(port: int, expected: int, report: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    """The webhook process: counts alerts by title; reports (first, last, counts) when done."""
    from aiohttp import web

    seen: dict[str, int] = {}
    times: list[float] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        now = time.perf_counter()
        if not times:
            times.append(now)
        seen[body["title"]] = seen.get(body["title"], 0) + 1
        if sum(seen.values()) >= expected:
            report.put((times[0], now, len(seen), sum(seen.values())))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, handle_signals=True)


async def _produce(bootstrap: str, topic: str, count: int, tag: str) -> None:
    await TopicAdmin(KafkaSettings(topic_partitions=3), bootstrap).ensure([topic])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    try:
        futures = []
        for n in range(count):
            key, value, headers = alert_value(n, tag=tag)
            futures.append(await producer.send(topic, value, key=key, headers=list(headers)))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


def run_once(bootstrap: str, alerts: int, concurrency: int) -> float:
    tag = uuid.uuid4().hex[:8]
    prefix = f"alerts.bench{tag}"
    asyncio.run(_produce(bootstrap, f"{prefix}.sanctions", alerts, tag))
    port, http_port = _free_port(), _free_port()
    report: multiprocessing.Queue = multiprocessing.Queue()  # type: ignore[type-arg]
    hook = multiprocessing.Process(target=_webhook, args=(port, alerts, report), daemon=True)
    hook.start()
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "monitor.toml"
        config.write_text(
            f'[kafka]\nbootstrap_servers = "{bootstrap}"\n[state]\ndir = "{tmp}/state"\n'
            '[log]\nlevel = "warning"\nformat = "json"\n'
            f'[notify]\ngroup = "bench-{tag}"\ntopics = ["{prefix}*"]\nfrom_beginning = true\nconcurrency = {concurrency}\n'
            f'listen = "127.0.0.1:{http_port}"\n[[notify.destination]]\nname = "hook"\nurl = "json://127.0.0.1:{port}/hook"\n'
        )
        import subprocess

        notify = subprocess.Popen(
            [sys.executable, "-m", "monitor", "notify", "--config", str(config)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            env=os.environ,
        )
        try:
            first, last, distinct, total = report.get(timeout=300)
        finally:
            notify.terminate()
            notify.wait(30)
            hook.terminate()
            hook.join(10)
    if distinct != alerts or total != alerts:
        raise SystemExit(f"notify_bench: the webhook got {total} messages for {distinct} alerts, expected {alerts} once each")
    rate = alerts / (last - first)
    print(
        f"notify: {alerts} alerts to a local webhook in {last - first:.2f} s: {rate:,.0f} alerts/s (concurrency {concurrency})",
        flush=True,
    )
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    with EmbeddedBroker() as broker:
        rates = [run_once(broker.bootstrap_servers, args.alerts, args.concurrency) for _ in range(args.runs)]
    print(f"median: {statistics.median(rates):,.0f} alerts/s over {len(rates)} runs (target: 500 per destination)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
