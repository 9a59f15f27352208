"""The status page, ``/status.json`` and ``news-monitor status`` at 50,000 feeds.

Builds the daemon's :class:`~monitor.observe.metrics.Observer` with N feeds (default 50,000) in
a realistic mix of health: 2 % failing (with a ~120-character error each), 1 % stale,
0.1 % disabled (HTTP 410), the rest ok with a new item in the last hour; half of them
have a name. The repository's rules are loaded and 50 alerts raised, as on a live
daemon. Then, on a running event loop:

* ``/`` and ``/status.json`` (first page, default query) through the web server's own
  handlers (``WebServer._status_page`` / ``_status_json`` with a mocked request, so no
  client parses the body): the response size, the handler's wall time (median of
  ``--repeat`` runs), and the event loop's worst stall meanwhile (a task that sleeps
  1 ms and records how late it wakes);
* the same with filters (``?q=`` a substring of 1.5 % of the urls, ``?health=ok``) and
  deep pages (``?offset=`` near the end, in both orders), when the code under test takes
  query parameters;
* the Prometheus scrape (``/metrics``), for scale: it exports one series per feed.

Then the same feeds are written to a SQLite state store, as the daemon leaves it, and
``news-monitor status`` is run on it: in-process (``monitor.observe.status.status``, median of
``--repeat``) for the plain and JSON formats (and ``--all`` where it exists), the rich
table once (37 s before pages), and once as the real command in a subprocess (imports
included), printing the size of the output and the number of lines.

The script runs against whatever code is checked out, so the same command gives the
"before" and "after" figures (docs/operations.md, "Large deployments").

    .venv/bin/python benchmarks/status_bench.py [--feeds 50000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import io
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiohttp.test_utils import make_mocked_request  # noqa: E402

from monitor.adapters.store import Store  # noqa: E402
from monitor.adapters.web import WebServer  # noqa: E402
from monitor.engine.loader import load_rules  # noqa: E402
from monitor.engine.reload import RulesHolder  # noqa: E402
from monitor.feeds.state import FeedState, feed_row  # noqa: E402
from monitor.model import Alert, Feed  # noqa: E402
from monitor.observe.observer import Observer  # noqa: E402
from monitor.settings import load_settings  # noqa: E402


def make_states(count: int, now: float, seed: int = 13) -> list[FeedState]:
    """``count`` feed states in the mix the module docstring describes."""
    rng = random.Random(seed)
    states: list[FeedState] = []
    for i in range(count):
        host = f"news{i % 997}.example{i % 13}.org"
        url = f"https://{host}/sections/{i:06d}/feed.rss.xml"
        roll = i % 1000
        common = dict(url=url, polls=rng.randint(50, 5000), items_seen=rng.randint(100, 20000), cadence=600.0,
                      interval=300.0, next_poll=now + rng.uniform(1, 300))
        if roll < 20:  # failing
            error = f"{url}: HTTP 503 Service Unavailable (the server answered with an error page of 812 bytes)"
            states.append(FeedState(**common, last_poll=now - 30, last_success=now - rng.uniform(3600, 86400),
                                    last_new_item=now - rng.uniform(3600, 86400), last_error=error,
                                    last_error_at=now - 30, consecutive_errors=rng.randint(3, 40)))
        elif roll < 30:  # stale
            states.append(FeedState(**common, last_poll=now - 60, last_success=now - 60,
                                    last_new_item=now - rng.uniform(2 * 86400, 9 * 86400)))
        elif roll < 31:  # disabled
            states.append(FeedState(**common, last_poll=now - 600, last_success=now - 86400,
                                    last_new_item=now - 86400, disabled="HTTP 410 Gone", last_error=f"{url}: HTTP 410 Gone",
                                    last_error_at=now - 600))
        else:
            states.append(FeedState(**common, last_poll=now - rng.uniform(1, 300), last_success=now - rng.uniform(1, 300),
                                    last_new_item=now - rng.uniform(1, 3500)))
    return states


def make_feeds(states: list[FeedState]) -> list[Feed]:
    return [Feed(url=s.url, interval=300.0, name=f"Example news, section {i}" if i % 2 else None) for i, s in enumerate(states)]


def _alert(i: int) -> Alert:
    return Alert(
        alert_id=f"a{i}", rule_id="summit", topic="alerts.summit", severity="high", tags=(), article_id=f"x{i}",
        url=f"https://news.example.org/world/story-{i}", title=f"Leaders meet in Anchorage, story {i}", published=None,
        feed_url="https://news1.example1.org/sections/000001/feed.rss.xml", matches=(), snippet="",
        detected_at=datetime.now(UTC), ruleset_version="v1",
    )


def build_observer(feeds: list[Feed], states: list[FeedState], now: float) -> Observer:
    observer = Observer(feeds, rules=RulesHolder(load_rules([ROOT / "rules"])), clock=lambda: now)
    for state in states:
        observer.tracker.observe(state, now)
    observer.tracker.sweep(now)
    for i in range(50):
        observer.alert_raised(_alert(i))
    return observer


@dataclass
class Measure:
    name: str
    size: int
    seconds: list[float]
    stall: float

    def line(self) -> str:
        med = statistics.median(self.seconds) * 1000
        return (f"{self.name:<38} {self.size:>12,} B  {med:>9.1f} ms (min {min(self.seconds) * 1000:.1f})"
                f"  worst loop stall {self.stall * 1000:.1f} ms")


async def _stall_probe(stop: asyncio.Event, worst: list[float]) -> None:
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(0.001)
        worst[0] = max(worst[0], time.perf_counter() - before - 0.001)


async def measure_handler(name: str, handler, path: str, repeat: int) -> Measure:
    seconds: list[float] = []
    worst = [0.0]
    size = 0
    for _ in range(repeat):
        stop = asyncio.Event()
        probe = asyncio.create_task(_stall_probe(stop, worst))
        await asyncio.sleep(0.005)
        request = make_mocked_request("GET", path)
        started = time.perf_counter()
        response = await handler(request)
        seconds.append(time.perf_counter() - started)
        stop.set()
        await probe
        size = len(response.body) if response.body is not None else len(response.text.encode())
        if response.status != 200:
            raise SystemExit(f"{path}: HTTP {response.status}: {response.text}")
    return Measure(name, size, seconds, worst[0])


def takes_queries() -> bool:
    from monitor.adapters import web

    return hasattr(web, "parse_feed_query")


async def bench_web(observer: Observer, repeat: int, feeds: int) -> list[Measure]:
    server = WebServer(observer, "127.0.0.1:0", refresh=10)
    results = [
        await measure_handler("/", server._status_page, "/", repeat),
        await measure_handler("/status.json (first page)", server._status_json, "/status.json", repeat),
    ]
    if takes_queries():
        deep = max(0, feeds - 150)
        results += [
            await measure_handler("/?q=example7.org/sections/00", server._status_page, "/?q=example7.org/sections/00", repeat),
            await measure_handler("/?health=ok", server._status_page, "/?health=ok", repeat),
            await measure_handler(f"/status.json?offset={deep}&limit=1000", server._status_json,
                                  f"/status.json?offset={deep}&limit=1000", repeat),
            await measure_handler(f"/status.json?order=url&offset={deep}", server._status_json,
                                  f"/status.json?order=url&offset={deep}", repeat),
        ]
    results.append(await measure_handler("/metrics", server._metrics, "/metrics", repeat))
    return results


NEWLINE = b"\n"


def bench_cli(states: list[FeedState], repeat: int) -> list[str]:
    from monitor.app.status import feed_tracker
    from monitor.observe.status import status as print_status

    def run_status(settings, out, **options) -> int:
        """What ``news-monitor status`` does: the tracker from the store, then the table."""
        now = time.time()
        return print_status(feed_tracker(settings, now=now), out, now=now, **options)

    lines = []
    with tempfile.TemporaryDirectory(prefix="status-bench-") as tmp:
        state_dir = Path(tmp) / "state"
        store = Store(state_dir)
        store.save_feed_rows([feed_row(state.evolve(health="ok")) for state in states])
        store.close()
        config = Path(tmp) / "monitor.toml"
        config.write_text(f'[state]\ndir = "{state_dir}"\n')
        settings = load_settings(config, environ={})
        # The code before pages had no limit and no summary line (err).
        paged = "limit" in inspect.signature(print_status).parameters
        variants: list[tuple[str, dict]] = [("plain", {}), ("json", {})]
        if paged:
            variants += [("plain", {"limit": None}), ("json", {"limit": None})]
        for fmt, extra in variants:
            seconds = []
            for _ in range(repeat):
                out = io.StringIO()
                started = time.perf_counter()
                run_status(settings, out, fmt=fmt, **extra, **({"err": io.StringIO()} if paged else {}))
                seconds.append(time.perf_counter() - started)
            text = out.getvalue()
            label = f"status --format {fmt}" + (" --all" if extra else "")
            lines.append(f"{label:<38} {len(text.encode()):>12,} B  {statistics.median(seconds) * 1000:>9.1f} ms"
                         f"  {text.count(chr(10)):,} lines")
        out = io.StringIO()
        started = time.perf_counter()
        run_status(settings, out, fmt="table")
        text = out.getvalue()
        lines.append(f"{'status --format table (rich)':<38} {len(text.encode()):>12,} B  "
                     f"{(time.perf_counter() - started) * 1000:>9.1f} ms  {text.count(chr(10)):,} lines")
        env = {k: v for k, v in os.environ.items() if not k.startswith("NEWS_MONITOR_")}
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "monitor", "status", "--config", str(config)],
                              cwd=ROOT, env=env, capture_output=True, timeout=600)
        elapsed = time.perf_counter() - started
        lines.append(f"{'news-monitor status (subprocess)':<38} {len(done.stdout):>12,} B  {elapsed * 1000:>9.1f} ms"
                     f"  {done.stdout.count(NEWLINE):,} lines, exit {done.returncode}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--feeds", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--no-cli", action="store_true", help="skip the news-monitor status part")
    args = parser.parse_args()

    now = time.time()
    states = make_states(args.feeds, now)
    started = time.perf_counter()
    observer = build_observer(make_feeds(states), states, now)
    print(f"{args.feeds:,} feeds; observer built in {time.perf_counter() - started:.2f} s; "
          f"health counts {observer.tracker.counts()}")

    async def web_part() -> list[Measure]:
        return await bench_web(observer, args.repeat, args.feeds)

    for measure in asyncio.run(web_part()):
        print(measure.line())
    if not args.no_cli:
        for line in bench_cli(states, args.repeat):
            print(line)


if __name__ == "__main__":
    main()
