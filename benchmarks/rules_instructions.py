"""Instructions per article of the rule engine at 10 and 10,000 rules, counted by
callgrind (a script, not a test; needs valgrind).

    .venv/bin/python benchmarks/rules_instructions.py [--articles 100] [--seed 7]

On a shared machine, throughput swings by tens of percent within a minute; instruction
counts do not. For each rule-set size this runs itself under ``valgrind --tool=callgrind``
with PYTHONHASHSEED fixed, on the same generated rules and articles as
``rules_bench.py``. The child runs uninstrumented (fast) through rule loading and a
warm-up pass; then instrumentation is switched on with ``callgrind_control`` and the
measured pass runs inside ``functools.reduce``, the only code callgrind counts
(``--toggle-collect``). Each size runs twice, on more articles the second time, and the
difference is reported, so any one-off cost cancels.

Instructions are not time: cache misses and branch mispredictions are why an article
costs about twice as long at 10,000 rules as at 10 while it takes about 1.4 times the
instructions. A change that removes work from the per-article path shows here, without
noise (runs agree to a few tenths of a percent); whether it pays in time is for
``rules_bench.py`` to say.
"""

from __future__ import annotations

import argparse
import functools
import gc
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rules_bench import article, rules_yaml, vocabulary

from monitor.engine import parse_rules

SIZES = (10, 10_000)


def child(count: int, articles: int, seed: int) -> None:
    """Build the rule set and articles, warm up, say so, wait for the word, then match
    ``articles`` articles inside ``functools.reduce`` (what callgrind counts)."""
    rng = random.Random(seed)
    vocab = vocabulary(rng, 30_000)
    hot = rng.sample(vocab, 300)
    items = [article(rng, vocab, hot, i) for i in range(articles)]
    ruleset = parse_rules(rules_yaml(random.Random(count), vocab, count), f"<bench-{count}>")
    for item in items:
        ruleset.match(item)
    # As the daemon does once its long-lived objects exist: otherwise a full collection
    # landing in one of the two measured passes and not the other (it depends on the
    # allocation count) adds tens of thousands of instructions to one figure.
    gc.collect()
    gc.freeze()
    print("ready", flush=True)
    sys.stdin.readline()
    functools.reduce(lambda _, item: ruleset.match(item), items, None)


def counted(count: int, articles: int, seed: int, valgrind: str, control: str) -> int:
    """Instructions callgrind counted in one child run. The child runs uninstrumented
    (fast) until it is warm; then instrumentation is switched on from outside."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        command = [
            valgrind, "--tool=callgrind", "--instr-atstart=no", "--toggle-collect=functools_reduce*",
            f"--callgrind-out-file={out}", f"--log-file={Path(tmp) / 'valgrind.log'}",
            sys.executable, __file__, "--child", str(count), "--articles", str(articles), "--seed", str(seed),
        ]
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        with subprocess.Popen(command, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as process:
            assert process.stdin is not None and process.stdout is not None
            if process.stdout.readline().strip() != "ready":
                raise SystemExit(f"the {count}-rule child failed before its measured pass")
            subprocess.run(
                [control, "--instr=on", str(process.pid)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            process.stdin.write("go\n")
            process.stdin.flush()
        if process.returncode:
            raise SystemExit(f"the {count}-rule child exited with {process.returncode}")
        totals = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
        if totals is None:
            raise SystemExit(f"no instruction total in {out}")
        return int(totals.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=100, help="articles in the shorter measured pass")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        child(args.child, args.articles, args.seed)
        return
    valgrind, control = shutil.which("valgrind"), shutil.which("callgrind_control")
    if valgrind is None or control is None:
        raise SystemExit("valgrind is not installed (apt install valgrind)")
    short, long = args.articles, 2 * args.articles
    per_article = {}
    for count in SIZES:
        per_article[count] = (counted(count, long, args.seed, valgrind, control) - counted(count, short, args.seed, valgrind, control)) / (long - short)
        print(f"{count:>6} rules: {per_article[count]:>10,.0f} instructions an article")
    print(f"10 rules / 10,000 rules: {per_article[10] / per_article[10_000]:.1%} of the instructions")


if __name__ == "__main__":
    main()
