"""Polling throughput: 10,000 feeds through the daemon's real poll path, against a local server.

A separate process runs an aiohttp server with N distinct RSS feeds (50 items, ~55 KB
each, ETag / If-None-Match support). Each "cycle" the server changes a share of the
feeds (a new item on top, the oldest dropped, a new ETag). This process polls every
feed once per cycle through the daemon's own poll loop, ``Poller.run_forever`` (the
``Schedule``, the due-queue drained by ``[feeds] concurrency`` pollers with per-host
lines, ``Pipeline.poll``, the run summary, the metrics/health ``Observer``,
``next_interval``, the feed-state cache) of a ``Monitor`` built from default settings,
with the daemon's own transport (``monitor.app.daemon.feed_transport``: scheme routing,
then aiohttp), the ``ParserPool`` worker processes (parsing and story signatures), the
SQLite state store, the story index and the repository's rules; the daemon's upkeep
tasks (batched feed-state write-back, retention) run alongside. A cycle makes
every feed due at once and wakes the loop. Differences from the daemon, on purpose:

* Kafka is stubbed: alert records are counted instead of sent (the outbox rows and the
  seen-store are still written).
* ``[feeds] per_host`` is raised to the concurrency: every benchmark feed lives on
  127.0.0.1, where a real deployment spreads its feeds over many hosts.
* No HTTP status endpoint (it only reads what the Observer collects).

Printed, for (a) all 304, (b) 10 % changed, (c) all changed (time-boxed): sustained
polls/s, CPU (this process, the parse workers, the server), and the event loop's worst
stall, probed by a task that sleeps 10 ms and records how late it wakes. The raw aiohttp
GET rate against the same server (304s) is measured right before and after each (a)
run (as many requests as a cycle polls feeds), so ceiling and polls see the same
machine load; (a) and its ceiling are repeated ``--repeat`` times and both the ratio of
the medians and the median of each run against the ceilings beside it are reported (the
second cancels the drift of a shared machine's speed). Then parse_feed vs feedparser
(default settings) on the same body in one process.

Diagnostics: ``--trace-stalls`` samples the loop thread's stack whenever the loop has
not ticked for 50 ms (printing where it was stuck), where the pollers wait, and how long
garbage collections took; ``--profile`` runs cProfile over each (a) run; ``--gc-off`` and
``--switch-interval`` show what GC pauses and GIL hand-offs cost.

Start-up note: every feed's first poll gets a 1-item body (version 0), so the warm-up
that fills ETags and the seen-store takes seconds, not minutes; a feed's first change
therefore brings 49 new items, not 1 (pessimistic for (b) and (c)).

    .venv/bin/python benchmarks/poll_bench.py [--feeds 10000] [--changed 0.1] [--concurrency 64] [--repeat 7]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import gc
import multiprocessing
import os
import pstats
import random
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

import aiohttp
from aiohttp import web

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[1]

# -- the feed server (its own process) -----------------------------------------------------

ITEM = (
    "<item><title>Story {n} from feed {f}: {headline}</title>"
    "<link>https://news{f}.example.com/world/story-{n}</link><guid>https://news{f}.example.com/world/story-{n}</guid>"
    "<pubDate>{date}</pubDate><description>&lt;p&gt;{text}&lt;/p&gt;</description></item>"
)
WORDS = ["officials", "said", "talks", "would", "resume", "after", "the", "meeting", "as", "markets", "reacted", "on", "thursday", "while", "ministers", "weighed", "sanctions", "against", "the", "exporters", "and", "analysts", "expected", "prices", "to", "rise", "further", "amid", "protests", "in", "the", "capital", "where", "the", "opposition", "demanded", "an", "inquiry", "into", "the", "contract", "awarded", "last", "spring"]


def story_text(feed: int, n: int, words: int) -> str:
    """Distinct text per story (as real feeds have), so the story index sees unrelated articles."""
    rng = random.Random(feed * 1_000_003 + n)
    return " ".join(rng.choice(WORDS) for _ in range(words))


def feed_body(feed: int, version: int, items: int = 50) -> bytes:
    """Feed ``feed`` at ``version``: items version .. version-49 (version 0: one item)."""
    count = 1 if version == 0 else items
    newest = version + items
    dates = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime())
    body = "".join(
        ITEM.format(n=newest - k, f=feed, date=dates, headline=story_text(feed, newest - k, 8), text=story_text(-feed, newest - k, 150))
        for k in range(count)
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Feed {feed}</title>'
        f"<link>https://news{feed}.example.com/</link>{body}</channel></rss>"
    ).encode()


def serve(port: int, feeds: int, ready: multiprocessing.synchronize.Event) -> None:
    versions = [0] * feeds
    cache: dict[int, tuple[int, bytes]] = {}
    cycle = {"n": 0}

    async def handle(request: web.Request) -> web.StreamResponse:
        index = int(request.match_info["index"])
        version = versions[index]
        etag = f'"{index}-{version}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        cached = cache.get(index)
        if cached is None or cached[0] != version:
            cached = cache[index] = (version, feed_body(index, version))
        return web.Response(body=cached[1], headers={"ETag": etag, "Content-Type": "application/rss+xml"})

    async def change(request: web.Request) -> web.Response:
        share = float(request.query["share"])
        count = round(feeds * share)
        start = (cycle["n"] * count) % feeds
        for k in range(count):
            versions[(start + k) % feeds] += 1
        cycle["n"] += 1
        return web.Response(text=str(count))

    async def cpu(request: web.Request) -> web.Response:
        return web.Response(text=repr(time.process_time()))

    app = web.Application()
    app.router.add_get("/feed/{index}", handle)
    app.router.add_get("/change", change)
    app.router.add_get("/cpu", cpu)

    async def main() -> None:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, HOST, port, backlog=4096).start()
        ready.set()
        await asyncio.Event().wait()

    try:
        import uvloop  # type: ignore[import-not-found]

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())


# -- measurement helpers ----------------------------------------------------------------


class StallMeter:
    """The event loop's worst lateness: a 10 ms ticker notes how late it wakes."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.01)
            self.worst = max(self.worst, loop.time() - before - 0.01)

    def start(self) -> None:
        self.worst = 0.0
        self._task = asyncio.create_task(self._tick())

    async def stop(self) -> float:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        return self.worst


class StallTracer:
    """Where the loop is stuck: a watchdog thread samples the loop thread's stack whenever
    the loop has not ticked for ``threshold`` s (a stall in progress), every ``every`` s.

    Samples are grouped by the innermost frames of this repository (and the library frame
    they called into), so the report names the code that holds the loop.
    """

    def __init__(self, threshold: float = 0.05, every: float = 0.005) -> None:
        self.threshold = threshold
        self.every = every
        self.samples: collections.Counter[tuple[str, ...]] = collections.Counter()
        #: Where the poller tasks wait, sampled every 10 ticks.
        self.waits: collections.Counter[str] = collections.Counter()
        #: What the other threads were doing meanwhile (one may hold the GIL the loop waits for).
        self.others: collections.Counter[tuple[str, str]] = collections.Counter()
        self._tick = time.monotonic()
        self._stop = threading.Event()
        self._loop_thread = threading.get_ident()

    async def _ticker(self) -> None:
        beat = 0
        while True:
            self._tick = time.monotonic()
            await asyncio.sleep(self.every)
            beat += 1
            if beat % 10 == 0:
                self._sample_waits()

    def _sample_waits(self) -> None:
        """Where the pollers wait (the innermost await of each poller task in this repository)."""
        for task in asyncio.all_tasks():
            if not task.get_name().startswith("poller"):
                continue
            # Follow the await chain (Task.get_stack shows only the outermost coroutine).
            coro, where = task.get_coro(), None
            while coro is not None:
                frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
                if frame is not None and "/monitor/" in frame.f_code.co_filename:
                    where = f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno} {frame.f_code.co_name}"
                coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
            if where:
                self.waits[where] += 1

    def _watch(self) -> None:
        while not self._stop.wait(self.every):
            if time.monotonic() - self._tick < self.threshold:
                continue
            frame = sys._current_frames().get(self._loop_thread)
            if frame is None:
                continue
            stack = traceback.extract_stack(frame)
            ours = [f for f in stack if "/monitor/" in f.filename or "poll_bench" in f.filename]
            key = tuple(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in ours[-4:])
            if stack and stack[-1] not in ours:
                key += (f"-> {Path(stack[-1].filename).name}:{stack[-1].lineno} {stack[-1].name}",)
            self.samples[key] += 1
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, other in sys._current_frames().items():
                if ident in (self._loop_thread, threading.get_ident()):
                    continue
                where = traceback.extract_stack(other)[-1]
                self.others[(names.get(ident, "?").split("_")[0], f"{Path(where.filename).name}:{where.lineno} {where.name}")] += 1

    def _gc_timer(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            took = time.perf_counter() - self._gc_started
            count, worst, total = self.gc.get(info["generation"], (0, 0.0, 0.0))
            self.gc[info["generation"]] = (count + 1, max(worst, took), total + took)
            if took > 0.02:
                self.slow_gc.append((took, info["generation"], threading.current_thread().name, info["collected"], gc.get_count()))

    def start(self) -> None:
        self.gc: dict[int, tuple[int, float, float]] = {}
        #: Collections over 20 ms: (seconds, generation, thread, objects collected, counts after).
        self.slow_gc: list[tuple[float, int, str, int, tuple[int, int, int]]] = []
        gc.callbacks.append(self._gc_timer)
        self._task = asyncio.create_task(self._ticker())
        threading.Thread(target=self._watch, daemon=True, name="stall-tracer").start()

    def report(self, top: int = 15) -> None:
        self._stop.set()
        total = sum(self.samples.values())
        print(f"\nstall samples (loop stuck > {self.threshold * 1000:.0f} ms, one sample per {self.every * 1000:.0f} ms): {total}", flush=True)
        for key, count in self.samples.most_common(top):
            print(f"{count:6d}  " + "\n        ".join(key), flush=True)
        gc.callbacks.remove(self._gc_timer)
        kinds = collections.Counter(type(o).__name__ for o in gc.get_objects())
        print(f"objects the GC tracks now: {sum(kinds.values())} (frozen at start-up: {gc.get_freeze_count()}); most common: "
              + ", ".join(f"{name} {count}" for name, count in kinds.most_common(8)), flush=True)
        # A collection's cost is the references it follows, not the objects it counts:
        # the containers with the most referents are what a full collection walks.
        biggest = sorted(((len(gc.get_referents(o)), type(o).__name__) for o in gc.get_objects()), reverse=True)[:top]
        print("largest tracked containers (referents): " + ", ".join(f"{name} {size}" for size, name in biggest), flush=True)
        for generation, (count, worst, total) in sorted(self.gc.items()):
            print(f"gc generation {generation}: {count} collections, worst {worst * 1000:.0f} ms, total {total:.2f} s", flush=True)
        for took, generation, thread, collected, counts in sorted(self.slow_gc, reverse=True)[:top]:
            print(f"  slow collection: {took * 1000:.0f} ms, generation {generation}, thread {thread}, {collected} objects freed, counts after {counts}", flush=True)
        print("where the pollers wait (samples of all pollers):", flush=True)
        for where, count in self.waits.most_common(top):
            print(f"{count:6d}  {where}", flush=True)
        print("other threads meanwhile:", flush=True)
        for (thread, where), count in self.others.most_common(top):
            print(f"{count:6d}  {thread:<24} {where}", flush=True)


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def major_faults(pid: int) -> int:
    """Page faults of a process that had to read from disk (a stall no code change fixes)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[9])


@dataclass
class Sample:
    polls: int
    seconds: float
    client_cpu: float
    workers_cpu: float
    server_cpu: float
    stall: float
    major_faults: int = 0

    def line(self, label: str) -> str:
        rate = self.polls / self.seconds
        return (
            f"{label:<34} {self.polls:>6} polls in {self.seconds:6.2f}s = {rate:7.0f} polls/s   "
            f"CPU: client {self.client_cpu / self.seconds:4.0%}, parse workers {self.workers_cpu / self.seconds:4.0%}, "
            f"server {self.server_cpu / self.seconds:4.0%}   worst loop stall {self.stall * 1000:5.0f} ms"
            + (f"   major page faults {self.major_faults}" if self.major_faults else "")
        )


class Counting:
    """The Kafka stand-in: records are counted, not sent."""

    def __init__(self) -> None:
        from monitor.delivery import DeliveryStats

        self.records = 0
        self.stats = DeliveryStats()
        self.healthy = True
        self.pending = 0

    async def submit(self, records: list) -> None:
        self.records += len(records)


# -- the benchmark ----------------------------------------------------------------------


async def current_etags(port: int, feeds: int) -> dict[int, str]:
    """Every feed's current ETag (for the ceiling's conditional GETs)."""
    etags: dict[int, str] = {}
    async with aiohttp.ClientSession() as session:
        for index in range(feeds):
            async with session.get(f"http://{HOST}:{port}/feed/{index}") as response:
                await response.read()
                etags[index] = response.headers["ETag"]
    return etags


async def raw_rate(port: int, feeds: int, requests: int, concurrency: int, etags: dict[int, str] | None) -> tuple[float, float, float]:
    """Plain aiohttp GETs against the same server, conditional when ``etags`` are given:
    (requests/s, worst stall, mean body bytes)."""
    meter = StallMeter()
    connector = aiohttp.TCPConnector(limit=concurrency)
    conditional = bool(etags)
    etags = etags or {}
    async with aiohttp.ClientSession(connector=connector) as session:
        queue = iter(range(requests))
        received = 0
        meter.start()
        started = time.perf_counter()

        async def worker() -> None:
            for n in queue:
                index = n % feeds
                headers = {"If-None-Match": etags[index % len(etags)]} if conditional else {}
                async with session.get(f"http://{HOST}:{port}/feed/{index % max(1, len(etags) or feeds)}", headers=headers) as response:
                    nonlocal received
                    received += len(await response.read())

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return requests / elapsed, await meter.stop(), received / requests


async def poll_cycle(ctx: Context, label: str, *, time_box: float | None = None) -> Sample:
    """Every feed polled once by the daemon's poll loop (or as many as fit in ``time_box`` s).

    The first call starts ``Monitor._poll_forever``, whose start-up round is the warm-up;
    later calls make every feed due now and wake the loop, as a schedule falling due would.
    """
    monitor = ctx.monitor
    polls_before = monitor.summary.polls
    target = polls_before + len(ctx.urls)
    all_done = asyncio.Event()

    def counted(_report: object) -> None:
        if monitor.summary.polls >= target:
            all_done.set()

    monitor.observer.poll_listeners.append(counted)
    client0, workers0, server0 = cpu_seconds(os.getpid()), ctx.workers_cpu(), await ctx.server_cpu()
    faults0 = major_faults(os.getpid())
    ctx.meter.start()
    started = time.perf_counter()
    if ctx.loop_task is None:
        ctx.loop_task = asyncio.create_task(monitor.poller.run_forever(ctx.pipeline), name="poll loop")
    else:
        monitor.poller.schedule.start(ctx.urls, time.monotonic(), window=0.0)
        monitor.poller.wake()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(all_done.wait(), time_box)
    elapsed = time.perf_counter() - started
    polls = monitor.summary.polls - polls_before
    stall = await ctx.meter.stop()
    sample = Sample(polls, elapsed, cpu_seconds(os.getpid()) - client0, ctx.workers_cpu() - workers0, await ctx.server_cpu() - server0, stall,
                    major_faults(os.getpid()) - faults0)
    monitor.observer.poll_listeners.remove(counted)
    print(sample.line(label), flush=True)
    return sample


@dataclass
class Context:
    port: int
    urls: list[str]
    by_url: dict
    pipeline: object
    monitor: object
    parser: object
    concurrency: int
    meter: StallMeter
    session: aiohttp.ClientSession
    loop_task: asyncio.Task[None] | None = None

    def workers_cpu(self) -> float:
        pool = getattr(self.parser, "_pool", None)
        processes = getattr(pool, "_processes", None) or {}
        total = 0.0
        for pid in list(processes):
            with contextlib.suppress(OSError):
                total += cpu_seconds(pid)
        return total

    async def server_cpu(self) -> float:
        async with self.session.get(f"http://{HOST}:{self.port}/cpu") as response:
            return float(await response.text())

    async def change(self, share: float) -> int:
        async with self.session.get(f"http://{HOST}:{self.port}/change", params={"share": str(share)}) as response:
            return int(await response.text())


def parse_comparison(seconds: float = 2.0) -> None:
    import feedparser

    from monitor.parse import parse_feed

    body = feed_body(7, 3)

    def rate(function) -> float:
        function()
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            function()
            count += 1
        return count / (time.perf_counter() - started)

    baseline = rate(lambda: feedparser.parse(body))
    ours = rate(lambda: parse_feed(body, "https://news7.example.com/feed", "application/rss+xml"))
    print(
        f"parse, one process, {len(body) // 1024} KB 50-item feed: feedparser default {baseline:6.1f} feeds/s, "
        f"parse_feed {ours:6.1f} feeds/s = {ours / baseline:.2f}x (target >= 2x)",
        flush=True,
    )


async def run(args: argparse.Namespace) -> None:
    import dataclasses
    import statistics

    from monitor.adapters.broker import free_port
    from monitor.adapters.parser_pool import ParserPool
    from monitor.adapters.store import AsyncStore
    from monitor.app.daemon import feed_transport, story_index
    from monitor.feeds.schedule import Schedule
    from monitor.feeds.state import FeedStates
    from monitor.language import preload as preload_language_model
    from monitor.model import Feed
    from monitor.pipeline import Pipeline
    from monitor.settings import load_settings
    from monitor.upkeep import every, forget_old, state_upkeep_failed
    from monitor.worker import Monitor

    port = free_port()
    ready = multiprocessing.get_context("spawn").Event()
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(port, args.feeds, ready), daemon=True)
    server.start()
    if not ready.wait(30):
        raise SystemExit("feed server did not start")
    print(f"{args.feeds} feeds, 50 items each (~{len(feed_body(1, 1)) // 1024} KB), server pid {server.pid} on its own process; "
          f"concurrency {args.concurrency}; CPUs {os.cpu_count()}; load average {os.getloadavg()[0]:.2f}; "
          "Kafka stubbed (records counted, outbox written)", flush=True)

    with tempfile.TemporaryDirectory() as state_dir:
        base = load_settings(None, environ={})
        settings = dataclasses.replace(
            base,
            source=None,
            state=dataclasses.replace(base.state, dir=state_dir),
            feeds=dataclasses.replace(base.feeds, concurrency=args.concurrency, per_host=args.concurrency,
                                      parse_workers=args.parse_workers, interval=60.0, opml=""),
            rules=dataclasses.replace(base.rules, paths=(str(ROOT / "rules"),)),
            http=dataclasses.replace(base.http, enabled=False),
        )
        urls = [f"http://{HOST}:{port}/feed/{i}" for i in range(args.feeds)]
        feeds = {url: Feed(url=url, interval=60.0) for url in urls}
        monitor = Monitor(settings, feeds=list(feeds.values()))
        # The daemon spreads its first polls over up to 40 s (250/s); the warm-up need not.
        monitor.poller.schedule = Schedule(jitter=settings.feeds.jitter, startup_rate=float("inf"))
        store = AsyncStore.open(state_dir)
        fs = settings.feeds
        transport = feed_transport(fs)  # the daemon's own: routing by scheme, then aiohttp
        parser = ParserPool(fs.parse_workers, fs.parse_timeout)
        stories = await story_index(settings.stories, store)
        feed_states = FeedStates(store)
        await feed_states.load()
        sink = Counting()
        monitor.observer.attach(store=store, delivery=sink)
        await monitor.observer.start()
        pipeline = Pipeline(transport=transport, parser=parser, store=store, rules=monitor.rules, sink=sink,
                            feed_states=feed_states, stories=stories)
        state = settings.state
        upkeep = asyncio.gather(
            every(state.flush_interval, feed_states.flush, monitor.shutdown, state_upkeep_failed),
            every(state.retention_check, lambda: forget_old(store, stories, state.retention_days), monitor.shutdown, state_upkeep_failed),
        )
        await asyncio.to_thread(preload_language_model)  # as the daemon does before its first poll
        gc.freeze()  # as the daemon does once its start-up objects exist
        tracer = StallTracer() if args.trace_stalls else None
        if tracer is not None:
            tracer.start()
        async with aiohttp.ClientSession() as session:
            ctx = Context(port, urls, feeds, pipeline, monitor, parser, args.concurrency, StallMeter(), session)
            await poll_cycle(ctx, "warm-up (first polls, 1-item bodies)")
            # The server's ETags stay put until scenario (b) changes feeds.
            etags = await current_etags(port, args.feeds)
            ceilings, a_runs = [], []
            for round_ in range(args.repeat):
                for _ in range(2 if round_ == 0 else 1):
                    rate, stall, _ = await raw_rate(port, args.feeds, args.raw_requests or args.feeds, args.concurrency, etags)
                    ceilings.append(rate)
                    print(f"raw aiohttp ceiling: {rate:7.0f} req/s of 304s (stall {stall * 1000:.0f} ms)", flush=True)
                profiler = cProfile.Profile() if args.profile else None
                if profiler is not None:
                    profiler.enable()
                a_runs.append(await poll_cycle(ctx, f"(a) all 304, run {round_ + 1}"))
                if profiler is not None:
                    profiler.disable()
                    stats = pstats.Stats(profiler)
                    stats.sort_stats("tottime").print_stats(35)
                    # The daemon's own share: its functions by cumulative time.
                    stats.sort_stats("cumulative").print_stats("/monitor/", 40)
            rate, stall, _ = await raw_rate(port, args.feeds, args.raw_requests or args.feeds, args.concurrency, etags)
            ceilings.append(rate)
            print(f"raw aiohttp ceiling: {rate:7.0f} req/s of 304s (stall {stall * 1000:.0f} ms)", flush=True)
            b_runs = []
            for round_ in range(args.repeat_changed):
                changed = await ctx.change(args.changed)
                b_runs.append(await poll_cycle(ctx, f"(b) {changed} changed ({args.changed:.0%}), run {round_ + 1}"))
            c = None
            if args.time_box > 0:
                await ctx.change(1.0)
                c = await poll_cycle(ctx, "(c) all changed (time-boxed)", time_box=args.time_box)
            monitor.stop()
            await ctx.loop_task
            errors = monitor.summary.failed
            print(f"alert/outbox records written: {sink.records}; poll errors: {monitor.summary.failures}"
                  + (f" (latest: {errors[-1]})" if errors else ""), flush=True)
            ceiling = statistics.median(ceilings)
            a_rates = [r.polls / r.seconds for r in a_runs]
            a_rate = statistics.median(a_rates)
            # Each (a) run against the ceilings measured just before and just after it: this
            # machine's speed drifts by tens of percent within a minute (a shared VM), and
            # a paired ratio cancels what the two had in common.
            paired = [rate / ((ceilings[n + 1] + ceilings[n + 2]) / 2) for n, rate in enumerate(a_rates)]
            lines = [
                f"\n304 polls: median {a_rate:.0f}/s = {a_rate / ceiling:.0%} of the median raw aiohttp ceiling {ceiling:.0f} req/s; "
                f"each run against the ceilings beside it: {', '.join(f'{r:.0%}' for r in paired)}, "
                f"median {statistics.median(paired):.0%} (target >= 60%)"
            ]
            if b_runs:
                b_cycle = statistics.median(r.seconds for r in b_runs)
                b_stall = max(r.stall for r in b_runs)
                lines.append(f"{args.changed:.0%} changed: a cycle of {args.feeds} feeds takes {b_cycle:.1f}s median (target: within 60s), "
                             f"worst stall {b_stall * 1000:.0f} ms over {len(b_runs)} cycles (target <= 100 ms)")
            if c is not None:
                lines.append(f"all changed: {c.polls / c.seconds:.0f} polls/s sustained, worst stall {c.stall * 1000:.0f} ms")
            lines.append(f"load average now {os.getloadavg()[0]:.2f}")
            print(
                "\n".join(lines),
                flush=True,
            )
        if tracer is not None:
            tracer.report()
        upkeep.cancel()
        await asyncio.gather(upkeep, return_exceptions=True)
        await feed_states.flush()
        await monitor.observer.stop()
        await transport.close()
        parser.close()
        await store.close()
    server.terminate()
    parse_comparison()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--feeds", type=int, default=10_000)
    parser.add_argument("--changed", type=float, default=0.10, help="share of feeds changed in scenario (b)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--parse-workers", type=int, default=-1, help="-1: one per CPU")
    parser.add_argument("--raw-requests", type=int, default=0, help="requests per ceiling measurement (0: one per feed, as a cycle)")
    parser.add_argument("--time-box", type=float, default=30.0, help="seconds for scenario (c)")
    parser.add_argument("--repeat", type=int, default=7, help="runs of (a), each between two ceiling measurements")
    parser.add_argument("--repeat-changed", type=int, default=2, help="cycles of (b)")
    parser.add_argument("--gc-off", action="store_true", help="disable the cyclic GC in this process (to see what its pauses cost)")
    parser.add_argument("--switch-interval", type=float, default=0.0, help="sys.setswitchinterval for this process (0: Python's default)")
    parser.add_argument("--profile", action="store_true", help="cProfile the event loop's thread during each (a) run and print the top functions")
    parser.add_argument("--trace-stalls", action="store_true", help="sample the loop's stack during stalls > 50 ms and print where")
    parser.add_argument("--log-level", default="info", help="the daemon's default is info")
    args = parser.parse_args()
    from monitor.log import configure_logging

    # The daemon's default level and format, so per-poll log lines cost what they cost
    # in production; written to /dev/null to keep the report readable.
    with open(os.devnull, "w") as sink:
        configure_logging(args.log_level, "json", stream=sink)
        if args.gc_off:
            gc.disable()
        if args.switch_interval:
            sys.setswitchinterval(args.switch_interval)
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
