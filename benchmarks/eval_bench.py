"""``rules eval`` throughput at 10 and 10,000 rules (a script, not a test).

    .venv/bin/python benchmarks/eval_bench.py [--passages 2000] [--passes 5] [--cpu N]

Writes a labeled file of ~1.5 KB news-like passages (JSON lines, as operators write
them) and scores it with :func:`monitor.engine.tools.score`, which is what
``news-monitor rules eval`` runs once the rules are loaded: read the file a line at a
time, match each passage, tally. Each rule is a name or a phrase from a generated
vocabulary, alone or ANDed with a second one, so which rules a passage fires is known:

* *handful*: each passage mentions 5 rules' terms, at both sizes (about 5 rules fire);
* *dozens*: each passage mentions 40 rules' terms, at 10,000 rules (about 40 fire).

Labels name most of the rules that fire and a few that do not, so every tally (true
and false positives, false negatives, unknown labels) is exercised. Throughput is CPU
time of this process (``time.process_time``), best of ``--passes`` passes, interleaved
round-robin so every cell sees the same conditions; pinned to one CPU like
``rules_bench.py``. Loading the rules is not timed (``rules_bench.py`` measures it).

Passages a second are per passage: each cell scores a file of N passages and one of
2N, and the difference is the cost of N passages. What does not grow with the file
cancels: the report, one line per enabled rule (~20 ms at 10,000 rules, which would
otherwise weigh on a 2,000-passage file as much as 10 µs a passage). The whole-file
rate (N passages, report included) is printed beside it.

Targets: at 10,000 rules at least half the passages a second of 10 rules when a passage
fires a handful, and at least 1,000 passages a second when it fires dozens.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rules_bench import FILLER, quoted, vocabulary

from monitor.engine import RuleSet, parse_rules
from monitor.engine.tools import score
from monitor.model import Article


def rules_yaml(rng: random.Random, vocab: list[str], count: int) -> tuple[str, list[list[str]]]:
    """``count`` rules (id ``r<i>``) and, per rule, the terms a passage needs to fire it."""
    lines = ["rules:"]
    needs: list[list[str]] = []
    for index, terms in enumerate(zip(vocab[0 : 2 * count : 2], vocab[1 : 2 * count : 2])):
        used = list(terms) if rng.random() < 0.4 else [terms[0]]
        needs.append(used)
        query = " AND ".join(quoted(term) for term in used).replace("'", "''")
        lines.append(f"  - id: r{index}\n    query: '{query}'")
    return "\n".join(lines) + "\n", needs


def passage(rng: random.Random, needs: list[list[str]], fires: int, index: int) -> dict:
    """~1.5 KB of filler with the terms of ``fires`` rules, labeled with most of them
    (missed ones make false positives), plus a rule not mentioned (a false negative)
    and now and then an id that is no rule."""
    chosen = rng.sample(range(len(needs)), fires)
    words = [rng.choice(FILLER) for _ in range(220)]
    for rule in chosen:
        for term in needs[rule]:
            words.insert(rng.randrange(len(words) + 1), term)
    labels = [f"r{rule}" for rule in chosen if rng.random() < 0.8]
    labels.append(f"r{rng.randrange(len(needs))}")
    if rng.random() < 0.05:
        labels.append("retired-rule")
    return {"id": f"p{index}", "title": " ".join(words[:12]), "body": " ".join(words), "labels": labels}


def cpu_pass(path: Path, ruleset: RuleSet) -> float:
    """CPU seconds to score the labeled file once (the report goes to a string)."""
    out = io.StringIO()
    start = time.process_time()
    code = score(path, ruleset, out)
    elapsed = time.process_time() - start
    if code != 0:
        raise SystemExit(out.getvalue()[-2000:])
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=2000, help="N: passages in the shorter file")
    parser.add_argument("--passes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the last allowed; -1: none)")
    args = parser.parse_args()
    allowed = sorted(os.sched_getaffinity(0))
    cpu = allowed[-1] if args.cpu is None else args.cpu
    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})
    rng = random.Random(args.seed)
    vocab = vocabulary(rng, 20_400)
    rng.shuffle(vocab)
    cells: dict[str, tuple[Path, Path, RuleSet]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for count, fires in ((10, 5), (10_000, 5), (10_000, 40)):
            text, needs = rules_yaml(random.Random(count), vocab, count)
            ruleset = parse_rules(text, f"<eval-bench-{count}>")
            records = [json.dumps(passage(rng, needs, fires, index)) + "\n" for index in range(2 * args.passages)]
            short, long = Path(tmp) / f"short-{count}-{fires}.jsonl", Path(tmp) / f"long-{count}-{fires}.jsonl"
            short.write_text("".join(records[: args.passages]), encoding="utf-8")
            long.write_text("".join(records), encoding="utf-8")
            cells[f"{count} rules, {fires} fire"] = (short, long, ruleset)
        for short, _long, ruleset in cells.values():  # warm-up: lazy evaluators, caches
            cpu_pass(short, ruleset)
        gc.collect()
        gc.freeze()  # as the daemon does with its rule sets
        names = list(cells)
        times: dict[str, dict[Path, list[float]]] = {name: {} for name in names}
        for round_index in range(args.passes):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                for path in cells[name][:2]:
                    times[name].setdefault(path, []).append(cpu_pass(path, cells[name][2]))
        fired = {}
        for name, (short, _long, ruleset) in cells.items():
            with short.open("rb") as lines:
                sample = [json.loads(line) for _, line in zip(range(200), lines)]
            fired[name] = sum(
                len(ruleset.match(Article(id="x", feed_url="b", title=r["title"], body=r["body"]))) for r in sample
            ) / len(sample)
    print(f"labeled passages of ~1.5 KB; CPU time of this process, pinned to CPU {cpu}; best of {args.passes} interleaved passes")
    print("per passage: the time of a file of 2N passages minus that of N (the report, one line per rule, cancels);")
    print(f"whole file: N = {args.passages:,} passages, report included")
    print()
    print(f"{'cell':<22} | {'passages/s':>10} | {'whole file':>10} | {'fired/passage':>13}")
    print("-" * 65)
    rate = {}
    for name in names:
        short, long, _ruleset = cells[name]
        rate[name] = args.passages / (min(times[name][long]) - min(times[name][short]))
        whole = args.passages / min(times[name][short])
        print(f"{name:<22} | {rate[name]:>10,.0f} | {whole:>10,.0f} | {fired[name]:>13.1f}")
    print()
    handful = rate["10000 rules, 5 fire"] / rate["10 rules, 5 fire"]
    whole_handful = min(times["10 rules, 5 fire"][cells["10 rules, 5 fire"][0]]) / min(
        times["10000 rules, 5 fire"][cells["10000 rules, 5 fire"][0]]
    )
    print(f"10,000 rules / 10 rules, a handful firing: {handful:.1%} per passage, {whole_handful:.1%} whole file (target >= 50%)")
    print(f"10,000 rules, dozens firing: {rate['10000 rules, 40 fire']:,.0f} passages/s (target >= 1,000)")


if __name__ == "__main__":
    main()
