"""Backtest throughput at 10 and 10,000 rules (a script, not a test).

    .venv/bin/python benchmarks/backtest_bench.py [--articles 400] [--passes 7] [--broker-articles 5000]

Uses ``rules_bench``'s generated vocabulary, rule sets and ~5 KB articles. For each size it
prints articles/s (CPU time of this process, best of ``--passes`` interleaved passes):

* engine:   ``RuleSet.match`` on ready ``Article`` objects (what the live matcher pays);
* backtest: ``Backtest.add`` on the record values of the articles topic: JSON decode,
            ``article_from_dict`` (content-hash check included), ``RuleSet.match``, the
            first-match bookkeeping. backtest/engine is the share of the engine's speed kept.

Then the whole command's path against the embedded broker (Tansu): ``--broker-articles``
records published to a fresh 3-partition topic, read back by ``run_backtest`` with the
10,000-rule set, in wall time (reading, decoding and matching together).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import random
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from rules_bench import article, pin_to_cpu, rules_yaml, vocabulary

from monitor.cluster.backtest import Backtest
from monitor.delivery.records import article_to_dict
from monitor.engine import RuleSet, parse_rules
from monitor.model import Article

SIZES = (10, 10_000)


def engine_pass(ruleset: RuleSet, articles: list[Article]) -> float:
    start = time.process_time()
    for item in articles:
        ruleset.match(item)
    return time.process_time() - start


def backtest_pass(ruleset: RuleSet, values: list[bytes]) -> float:
    backtest = Backtest(ruleset)
    start = time.process_time()
    for value in values:
        backtest.add(value, 0.0)
    backtest.result()
    return time.process_time() - start


def broker_run(ruleset: RuleSet, values: list[bytes]) -> tuple[float, int]:
    """Publish ``values`` to the embedded broker, then time ``run_backtest`` over them."""
    import uuid

    from aiokafka import AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from monitor.adapters.broker import EmbeddedBroker
    from monitor.app.backtest import run_backtest
    from monitor.settings import KafkaSettings, Settings

    topic = f"bench-articles-{uuid.uuid4().hex[:8]}"

    async def go(bootstrap: str) -> tuple[float, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        await admin.create_topics([NewTopic(topic, 3, 1)])
        await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=10, max_request_size=4_000_000)
        await producer.start()
        sent = [await producer.send(topic, value, key=str(i).encode()) for i, value in enumerate(values)]
        await asyncio.gather(*sent)
        await producer.stop()
        settings = Settings(kafka=KafkaSettings(bootstrap_servers=bootstrap))
        start = time.perf_counter()
        result, _starts = await run_backtest(settings, topic, ruleset, since=None, until=None, errors=io.StringIO())
        return time.perf_counter() - start, result.articles

    with EmbeddedBroker() as broker:
        return asyncio.run(go(broker.bootstrap_servers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--passes", type=int, default=7)
    parser.add_argument("--broker-articles", type=int, default=5000, help="0: skip the run against the broker")
    parser.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the last allowed; -1: no pinning)")
    args = parser.parse_args()
    pinned = pin_to_cpu(args.cpu)
    rng = random.Random(args.seed)
    vocab = vocabulary(rng, 30_000)
    hot = rng.sample(vocab, 300)
    articles = [article(rng, vocab, hot, i) for i in range(args.articles)]
    observed = datetime.now(UTC)
    values = [orjson.dumps(article_to_dict(a, observed)) for a in articles]
    rulesets = {count: parse_rules(rules_yaml(random.Random(count), vocab, count), f"<bench-{count}>") for count in SIZES}
    print(f"{len(articles)} articles, mean {sum(map(len, values)) / len(values) / 1000:.1f} KB as records; "
          f"CPU time, one core{f' (pinned to CPU {pinned})' if pinned is not None else ''}, best of {args.passes} passes")
    for count in SIZES:  # warm-up
        engine_pass(rulesets[count], articles[:20])
        backtest_pass(rulesets[count], values[:20])
    gc.collect()
    gc.freeze()
    times: dict[str, list[float]] = {}
    for _ in range(args.passes):
        for count in SIZES:
            times.setdefault(f"engine-{count}", []).append(engine_pass(rulesets[count], articles))
            times.setdefault(f"backtest-{count}", []).append(backtest_pass(rulesets[count], values))
    gc.unfreeze()
    print(f"{'rules':>6} | {'engine art/s':>12} | {'backtest art/s':>14} | {'backtest/engine':>15}")
    for count in SIZES:
        engine = len(articles) / min(times[f"engine-{count}"])
        backtest = len(articles) / min(times[f"backtest-{count}"])
        print(f"{count:>6} | {engine:>12,.0f} | {backtest:>14,.0f} | {backtest / engine:>15.0%}")
    ten, tenk = (len(articles) / min(times[f"backtest-{c}"]) for c in SIZES)
    print(f"backtest at 10,000 rules / at 10 rules: {tenk / ten:.1%}")
    if args.broker_articles:
        many = [values[i % len(values)] for i in range(args.broker_articles)]
        seconds, matched = broker_run(rulesets[10_000], many)
        print(f"from the embedded broker, 10,000 rules: {matched} articles in {seconds:.2f} s wall = {matched / seconds:,.0f} articles/s")


if __name__ == "__main__":
    main()
