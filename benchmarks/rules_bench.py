"""Rule-engine throughput at 10, 1,000 and 10,000 rules (a script, not a test).

    .venv/bin/python benchmarks/rules_bench.py [--articles 400] [--seed 7] [--passes 15]

Generates a large vocabulary of names and phrases, rule sets whose queries use 2-6 of
them (AND/OR/NOT/NEAR/K OF), and ~5 KB news-like articles that mention a few dozen
vocabulary items, so a typical article fires a handful of rules at 10,000 rules.
For each size it prints articles/s and MB/s, normalisation included, for:

* engine:  ``RuleSet.match`` (fold, one Aho-Corasick scan, evaluate candidate rules);
* naive:   one compiled ``re`` per rule searched over the folded text, in a loop. It only
           asks "does any term of this rule occur", so it is a lower bound on the cost of
           a real naive engine; it runs on a subset of articles at large sizes;
* ceiling: the same normalisation (fold + scan view) plus a bare Aho-Corasick scan for
           the union of all terms, with no hit bookkeeping and no rule evaluation.

Throughput is CPU time of this process (``time.process_time``), not wall time: the
targets are per core, and on a shared machine wall time mostly measures the neighbours.
The engine and ceiling passes of every size are interleaved (round-robin, rotating the
order each round) so that all cells see the same conditions, and each cell reports the
best of ``--passes`` passes (interference only ever adds time; the median is printed too).
The process is pinned to one CPU (``--cpu``, default the last one it may use), as pyperf
does: a move to the other core starts on cold caches, which costs the 10,000-rule cell,
whose working set is the largest, more than the others.

Signals: the extra cost per alert of story-signal bookkeeping (``monitor.signals``: the
rules an article counts for, its outlet, the hourly counts and burst detectors, the
journal and checkpoints of their state) at 10,000 rules with a ``burst:`` block on every
one of them, interleaved with the engine cells and reported as a share of the matching
cost per alert. The articles come from 40 outlets, two a second, so windows fill and
bursts fire; every pass counts its articles again, as new ones (the daemon never sees a
new article twice).
"Signals in the daemon's order" times the bookkeeping where the daemon runs it, after
matching an article and building its alerts: the articles handed over only, rules without
blocks, and bursts on all (see :func:`daemon_order`).

Then compile time (process CPU time and wall time, median of 3 loads with the term and
fold caches cleared before each, so every load is a cold first load) and memory (RSS
growth, and Python allocations via tracemalloc) for 10,000 rules, loaded from YAML text
as an operator's files would be.

``--multilingual`` runs the multilingual case instead: the shipped rules (ten languages)
plus 1,000 or 10,000 generated ones, over a stream of ~5 KB articles in eleven languages
made of the labeled passages in tests/data (English and the multilingual set), an equal
share each. It prints articles/s of matching (each article's language detected before,
as the parse stage does) and, separately, the cost of detecting the language
(``monitor.language.detect`` on title, summary and body), with detection's cost as a
share of matching's at 1,000 rules (target: under 20%).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from statistics import median

import ahocorasick_rs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from monitor.engine import RuleSet, collect_rules, fold, parse_rules
from monitor.engine.evaluate import fold_fields
from monitor.engine.query import iter_terms
from monitor.engine.text import scan_text
from monitor.language import detect
from monitor.model import Article, Burst, Match

ROOT = Path(__file__).resolve().parent.parent

FIRST = ["Anna", "Boris", "Carlos", "Dmitri", "Elena", "Farid", "Grace", "Hiroshi", "Ines", "Jamal", "Katarzyna", "Luis", "Mei", "Nadia", "Omar", "Pavel", "Quentin", "Rosa", "Sergei", "Tomas", "Ursula", "Viktor", "Wei", "Ximena", "Yusuf", "Zofia", "Ahmed", "Bianca", "Chen", "Diego", "Emeka", "Fatima"]
SYLLABLES = ["ka", "ro", "vin", "del", "ma", "ra", "ten", "sko", "vich", "ber", "gan", "lo", "mi", "sa", "to", "ne", "dor", "ul", "fen", "ish", "ar", "quo", "zel", "pra", "mon", "tis"]
COMMON_PHRASES = ["interest rates", "supply chain", "central bank", "trade deficit", "grain exports", "border crossing", "ceasefire talks", "election results", "oil prices", "gas pipeline", "refugee camp", "peace plan", "drone strike", "power grid", "budget deficit", "bond yields", "labour strike", "wildfire season", "flood defences", "vaccine rollout", "chip exports", "rare earths", "naval drills", "air defence", "debt relief", "housing market", "coalition talks", "court ruling", "prison sentence", "heatwave"]
FILLER = ["the", "officials", "said", "on", "Tuesday", "that", "talks", "would", "continue", "despite", "the", "setback", "and", "that", "a", "statement", "was", "expected", "later", "in", "the", "week", "according", "to", "people", "familiar", "with", "the", "matter", "who", "spoke", "on", "condition", "of", "anonymity", "because", "they", "were", "not", "authorised", "to", "discuss", "the", "negotiations", "publicly", "while", "analysts", "warned", "markets", "could", "react", "sharply", "if", "the", "plan", "collapsed", "and", "ministers", "met", "again", "in", "the", "capital", "to", "review"]


def vocabulary(rng: random.Random, size: int) -> list[str]:
    """Distinct names and phrases: 'First Surname', surnames, places, topic phrases."""
    words: set[str] = set(COMMON_PHRASES)
    while len(words) < size:
        surname = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))).capitalize()
        kind = rng.random()
        if kind < 0.4:
            words.add(f"{rng.choice(FIRST)} {surname}")
        elif kind < 0.7:
            words.add(surname)
        elif kind < 0.85:
            words.add(f"{surname} {rng.choice(['province', 'ministry', 'port', 'group', 'bank'])}")
        else:
            words.add(f"{surname.lower()} {rng.choice(COMMON_PHRASES).split()[0]}")
    return sorted(words)


def quoted(term: str) -> str:
    return f'"{term}"' if " " in term else term


def random_query(rng: random.Random, vocab: list[str]) -> str:
    terms = [quoted(t) for t in rng.sample(vocab, rng.randint(2, 6))]
    shape = rng.random()
    if shape < 0.35:
        return f"{terms[0]} AND ({' OR '.join(terms[1:])})"
    if shape < 0.55:
        return " OR ".join(f"({a} {b})" for a, b in zip(terms[::2], terms[1::2])) or terms[0]
    if shape < 0.7:
        return f"({terms[0]} NEAR/8 {terms[1]})" + "".join(f" OR {t}" for t in terms[2:4])
    if shape < 0.85 and len(terms) >= 3:
        return f"2 OF ({', '.join(terms)})"
    return f"{terms[0]} AND {terms[1]}" + (f" AND NOT {terms[2]}" if len(terms) > 2 else "")


def rules_yaml(rng: random.Random, vocab: list[str], count: int, extra: str = "") -> str:
    """``count`` rules; ``extra``: YAML lines added to every rule (a ``burst:`` block)."""
    lines = ["rules:"]
    for index in range(count):
        query = random_query(rng, vocab).replace("'", "''")
        lines.append(f"  - id: r{index}\n    query: '{query}'{extra}")
    return "\n".join(lines) + "\n"


BURST_YAML = "\n    burst: {min_outlets: 3, window: 30m, cooldown: 6h}"


def article(rng: random.Random, vocab: list[str], hot: list[str], index: int, size: int = 5000) -> Article:
    """~``size`` characters of filler prose with vocabulary items sprinkled in, some curly
    quotes, dashes and accents so folding is exercised as in real feeds."""
    words: list[str] = []
    length = 0
    while length < size:
        term = (rng.choice(hot) if rng.random() < 0.5 else rng.choice(vocab)) if rng.random() < 0.06 else rng.choice(FILLER)
        if rng.random() < 0.01:
            term = rng.choice(["“Kyïv’s”", "—", "Sánchez’s", "arms–control"])
        words.append(term)
        length += len(term) + 1
    body = " ".join(words)
    # 40 outlets for the signals cell (registrable domains: not 40 hosts under one example.com).
    url = f"https://www.outlet{index % 40}.com/news/{index}"
    return Article(id=f"a{index}", feed_url="bench", title=" ".join(words[:10]), body=body, url=url)


def cpu_pass(run, articles: list[Article]) -> float:
    """CPU seconds this process spends running ``run`` over every article once."""
    start = time.process_time()
    for item in articles:
        run(item)
    return time.process_time() - start


def rates(seconds: float, articles: list[Article]) -> tuple[float, float]:
    """(articles/s, MB/s) for one pass over ``articles`` taking ``seconds``."""
    size = sum(len(a.title) + len(a.body) for a in articles)
    return len(articles) / seconds, size / seconds / 1e6


def interleaved(cells: dict[str, Callable], articles: list[Article], passes: int) -> dict[str, list[float]]:
    """CPU seconds per pass for every cell, the cells run round-robin, the order rotated
    every round so that no cell always runs first (cold caches) or last, and reversed every
    other round so that no cell always follows the same one (a cell after one of the same
    rule set finds its caches warm; the best pass of each then has had that chance)."""
    names = list(cells)
    times: dict[str, list[float]] = {name: [] for name in names}
    for name in names:  # warm-up: lazy evaluators, term caches, branch predictors
        cpu_pass(cells[name], articles[:20])
    gc.collect()
    # As the daemon does with its long-lived objects (the rule sets): a full collection
    # would otherwise re-traverse all three, ~100 ms landing in whichever pass it hits.
    gc.freeze()
    for round_index in range(passes):
        shift = round_index % len(names)
        order = names[shift:] + names[:shift]
        for name in order if round_index % 2 == 0 else order[::-1]:
            times[name].append(cpu_pass(cells[name], articles))
    gc.unfreeze()
    return times


def clear_caches() -> None:
    """Forget the parsed-term and folded-character caches (a cold first load)."""
    from monitor.engine import query, text

    query._parse_term.cache_clear()
    text.fold_char.cache_clear()


def naive_runner(ruleset: RuleSet):
    patterns = []
    for rule in ruleset.rules:
        terms = {term.key.pattern for term in iter_terms(ruleset.query(rule.id))}
        alternation = "|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True))
        patterns.append(re.compile(rf"\b(?:{alternation})\b"))

    def run(item: Article) -> int:
        texts = [fold(item.title).lower, fold(item.summary).lower, fold(item.body).lower]
        fired = 0
        for pattern in patterns:
            for text in texts:
                if pattern.search(text):
                    fired += 1
                    break
        return fired

    return run


def ceiling_runner(ruleset: RuleSet):
    terms = sorted({term.key.scan_pattern for rule in ruleset.rules for term in iter_terms(ruleset.query(rule.id))})
    automaton = ahocorasick_rs.AhoCorasick(terms)

    def run(item: Article) -> int:
        hits = 0
        for text in fold_fields(item):  # the engine's own folding of every field
            if text.lower:
                scan = " " + scan_text(text.lower) + " "
                hits += len(automaton.find_matches_as_indexes(scan, overlapping=True))
        return hits

    return run


def signals_runner(ruleset: RuleSet, articles: list[Article]):
    """Signal bookkeeping for an article's matches, as the daemon does it after admission
    (matches computed beforehand: this cell costs the signals alone). Bursts on every rule."""
    from monitor.dedupe import Candidate, Verdict
    from monitor.signals import Signals
    from monitor.signals.feed import matches_of

    burst = Burst(min_outlets=3, window=1800.0, cooldown=6 * 3600.0)
    bursting = {rule.id: dataclasses.replace(rule, burst=burst) for rule in ruleset.rules}
    # The daemon builds its candidates for matching anyway: not counted here.
    candidates = {a.id: [Candidate(a, [Match(bursting[m.rule.id], m.hits) for m in ruleset.match(a)])] for a in articles}
    new = [Verdict.NEW]
    signals = Signals()
    clock = [1_790_000_000.0]
    signals.watch(bursting.values(), clock[0])
    signals.changes()  # the first checkpoint, at start: every rule's new detector

    def run(item: Article) -> int:
        clock[0] += 0.5  # two articles a second (a large deployment): windows fill, move on, bursts fire
        now = clock[0]
        raised = []
        for seen, rules in matches_of(candidates[item.id], new, []):
            raised += signals.observe_article(seen, rules, now, now)
        raised += signals.expire(now)
        signals.changes(now)  # as the daemon after each batch: the journal each 5 s, a checkpoint each 10 min
        return len(raised)

    def harness(item: Article) -> int:
        """The same closure without the signals: the clock, and the precomputed candidates
        reached and their matches read (cold here; in the daemon matching just made them)."""
        clock[0] += 0.0
        touched = []
        for candidate in candidates[item.id]:
            touched += [(candidate.article.url, match.rule) for match in candidate.matches]
        return len(touched)

    return run, harness


def matched_signals_runner(ruleset: RuleSet):
    """Matching and then signal bookkeeping, as the daemon runs them one after the other on
    an article (``ruleset``'s rules all have a ``burst:`` block): the cost of signals is
    this cell's time less that of matching alone on the same rule set, caches as they are
    in the daemon (the rules matching just touched)."""
    from monitor.dedupe import Candidate, Verdict
    from monitor.signals import Signals
    from monitor.signals.feed import matches_of

    new = [Verdict.NEW]
    signals = Signals()
    clock = [1_790_000_000.0]
    signals.watch(ruleset.rules, clock[0])
    signals.changes()

    def run(item: Article) -> int:
        clock[0] += 0.5
        now = clock[0]
        raised = []
        for seen, rules in matches_of([Candidate(item, ruleset.match(item))], new, []):
            raised += signals.observe_article(seen, rules, now, now)
        raised += signals.expire(now)
        signals.changes(now)
        return len(raised)

    def harness(item: Article) -> int:
        """Matching in the same closure, the candidate made, without the signals."""
        clock[0] += 0.0
        touched = []
        for candidate in [Candidate(item, ruleset.match(item))]:
            touched += [(candidate.article.url, match.rule) for match in candidate.matches]
        return len(touched)

    return run, harness


def daemon_order(bursting: RuleSet, plain: RuleSet, articles: list[Article], passes: int) -> None:
    """Print the cost of signal bookkeeping where the daemon runs it: after matching an
    article and building its alerts and their records (``build_alert``, ``alert_record``:
    the outlet is derived there first). The signals' part of each article is timed alone
    (``perf_counter_ns`` on the pinned CPU: a cell difference would drown it in the cost
    of the alerts) against matching in the same pass; the median of ``passes`` passes.
    Three steps: the articles handed over (``matches_of``) only; rules without blocks (the
    journal, its flushes and the hourly counts, one look-up per rule); bursts on all."""
    from monitor.dedupe import Candidate, Verdict
    from monitor.delivery.records import alert_record, build_alert
    from monitor.signals import Signals
    from monitor.signals.feed import matches_of

    new = [Verdict.NEW]
    steps = (("handed over only", bursting), ("no blocks", plain), ("bursts on all", bursting))
    shares: dict[str, list[float]] = {label: [] for label, _ in steps}
    per_alert: dict[str, list[float]] = {label: [] for label, _ in steps}
    clock = time.perf_counter_ns
    for label, ruleset in steps:
        signals = Signals()
        now = 1_790_000_000.0
        signals.watch(ruleset.rules, now)
        signals.changes()
        version = ruleset.version
        gc.collect()
        gc.freeze()
        for _ in range(passes + 1):  # the first pass warms up
            matching = spent = alerts = 0
            for item in articles:
                now += 0.5
                start = clock()
                candidate = Candidate(item, ruleset.match(item))
                matched = clock()
                for match in candidate.matches:
                    alert_record(build_alert(match, item, ruleset_version=version))
                before = clock()
                handed = matches_of([candidate], new, [])
                if label != "handed over only":
                    for seen, rules in handed:
                        signals.observe_article(seen, rules, now, now)
                    signals.expire(now)
                    signals.changes(now)
                spent += clock() - before
                matching += matched - start
                alerts += len(candidate.matches)
            shares[label].append(spent / matching)
            per_alert[label].append(spent / alerts / 1000)
        gc.unfreeze()
        for series in (shares[label], per_alert[label]):
            del series[0]
    print(
        "signals in the daemon's order at 10,000 rules (after matching and building the alerts; timed alone, median of "
        f"{passes} passes): "
        + "; ".join(f"{label}: {median(per_alert[label]):.1f} us per alert, {median(shares[label]):.1%} of matching" for label, _ in steps)
    )


def pin_to_cpu(cpu: int | None) -> int | None:
    """Pin this process to ``cpu`` (None: the last CPU it may run on; -1: leave it free);
    the CPU pinned to, or None."""
    if cpu == -1 or not hasattr(os, "sched_setaffinity"):
        return None
    if cpu is None:
        cpu = max(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


def multilingual_articles(rng: random.Random, count: int, size: int = 5000) -> list[Article]:
    """~``size``-character articles, each of passages of one language from the labeled
    sets (the title: its first passage's title or first words), languages in turn."""
    passages: dict[str, list[tuple[str, str]]] = {}
    for path in ("labeled.jsonl", "labeled-holdout.jsonl", "multilingual/labeled-holdout.jsonl"):
        for line in (ROOT / "tests" / "data" / path).read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            body = record.get("body") or record.get("text") or ""
            passages.setdefault(record.get("lang", "en"), []).append((record.get("title") or body[:80], body))
    languages = sorted(lang for lang, items in passages.items() if len(items) >= 10)
    articles = []
    for index in range(count):
        items = passages[languages[index % len(languages)]]
        title, body = rng.choice(items)
        while len(body) < size:
            body += " " + rng.choice(items)[1]
        articles.append(Article(id=f"m{index}", feed_url="bench", title=title, body=body[:size]))
    return articles


def multilingual(args: argparse.Namespace, vocab: list[str]) -> None:
    """The multilingual case (see the module docstring)."""
    rng = random.Random(args.seed)
    articles = multilingual_articles(rng, args.articles)
    langs = sorted({detect(a.title, a.summary, a.body) or "?" for a in articles})
    articles = [Article(id=a.id, feed_url=a.feed_url, title=a.title, body=a.body, lang=detect(a.title, a.summary, a.body)) for a in articles]
    mean_kb = sum(len(a.title) + len(a.body) for a in articles) / len(articles) / 1000
    print(f"multilingual: {len(articles)} articles, mean {mean_kb:.1f} KB, languages {' '.join(langs)}")
    rulesets = {}
    with tempfile.TemporaryDirectory() as folder:
        for shipped in sorted((ROOT / "rules").glob("*.yaml")):
            shutil.copy(shipped, folder)
        for count in (1_000, 10_000):
            generated = Path(folder) / "generated.yaml"
            generated.write_text(rules_yaml(random.Random(count), vocab, count), encoding="utf-8")
            ruleset, errors = collect_rules([folder])
            assert not errors, errors
            rulesets[count] = ruleset
    cells: dict[str, Callable] = {f"match-{count}": rulesets[count].match for count in rulesets}
    cells["detect"] = lambda item: detect(item.title, item.summary, item.body)
    times = interleaved(cells, articles, args.passes)
    per_article = {name: min(values) / len(articles) for name, values in times.items()}
    for count, ruleset in rulesets.items():
        fired = sum(len(ruleset.match(a)) for a in articles) / len(articles)
        print(
            f"  match at {len(ruleset.rules):,} rules (shipped + {count:,}): {1 / per_article[f'match-{count}']:,.0f} articles/s "
            f"({per_article[f'match-{count}'] * 1e6:,.0f} us an article; {fired:.2f} rules fired an article)"
        )
    print(f"  language detection: {1 / per_article['detect']:,.0f} articles/s ({per_article['detect'] * 1e6:,.0f} us an article)")
    print(f"  detection / matching at 1,000 rules: {per_article['detect'] / per_article['match-1000']:.1%} (target < 20%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=400)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--passes", type=int, default=15, help="interleaved passes per cell (best is reported)")
    parser.add_argument("--cpu", type=int, default=None, help="CPU to pin to (default: the last allowed; -1: no pinning)")
    parser.add_argument("--multilingual", action="store_true", help="run the multilingual case only")
    args = parser.parse_args()
    pinned = pin_to_cpu(args.cpu)
    rng = random.Random(args.seed)
    vocab = vocabulary(rng, 30_000)
    if args.multilingual:
        multilingual(args, vocab)
        return
    hot = rng.sample(vocab, 300)  # frequently mentioned names, as in any news cycle
    articles = [article(rng, vocab, hot, i) for i in range(args.articles)]
    mean_kb = sum(len(a.title) + len(a.body) for a in articles) / len(articles) / 1000
    print(f"{len(articles)} articles, mean {mean_kb:.1f} KB; vocabulary {len(vocab)} names and phrases")
    print(
        f"CPU-time throughput of this process (one core{f', pinned to CPU {pinned}' if pinned is not None else ''}): "
        f"best of {args.passes} interleaved passes per cell"
    )
    print()
    sizes = (10, 1_000, 10_000)
    rulesets = {count: parse_rules(rules_yaml(random.Random(count), vocab, count), f"<bench-{count}>") for count in sizes}
    cells: dict[str, Callable] = {}
    for count in sizes:
        cells[f"engine-{count}"] = rulesets[count].match
        cells[f"ceiling-{count}"] = ceiling_runner(rulesets[count])
    cells["signals-10000"], cells["harness-10000"] = signals_runner(rulesets[10_000], articles)
    bursting = parse_rules(rules_yaml(random.Random(10_000), vocab, 10_000, BURST_YAML), "<bench-10000-bursts>")
    cells["engine+signals-10000"], cells["engine-bursts-10000"] = matched_signals_runner(bursting)
    times = interleaved(cells, articles, args.passes)
    header = f"{'rules':>6} | {'engine art/s':>12} {'MB/s':>6} | {'ceiling art/s':>13} {'MB/s':>6} | " \
             f"{'naive art/s':>11} | {'eng/ceil':>8} | {'eng/naive':>9} | {'fired/art':>9}"
    print(header)
    print("-" * len(header))
    results = {}
    medians = {}
    for count in sizes:
        ruleset = rulesets[count]
        engine = rates(min(times[f"engine-{count}"]), articles)
        ceiling = rates(min(times[f"ceiling-{count}"]), articles)
        medians[count] = (
            rates(median(times[f"engine-{count}"]), articles)[0],
            rates(median(times[f"ceiling-{count}"]), articles)[0],
        )
        subset = articles[: max(5, min(len(articles), 200_000 // count))]
        naive = rates(cpu_pass(naive_runner(ruleset), subset), subset)
        fired = sum(len(ruleset.match(a)) for a in articles[:100]) / min(100, len(articles))
        results[count] = engine[0]
        print(
            f"{count:>6} | {engine[0]:>12,.0f} {engine[1]:>6.1f} | {ceiling[0]:>13,.0f} {ceiling[1]:>6.1f} | "
            f"{naive[0]:>11,.1f} | {engine[0] / ceiling[0]:>8.0%} | {engine[0] / naive[0]:>8,.0f}x | {fired:>9.1f}"
        )
    print()
    print(f"throughput at 10,000 rules / at 10 rules: {results[10_000] / results[10]:.1%}")
    print(
        "medians of the passes (art/s engine/ceiling): "
        + "; ".join(f"{count:,}: {e:,.0f}/{c:,.0f} ({e / c:.0%})" for count, (e, c) in medians.items())
        + f"; 10,000/10: {medians[10_000][0] / medians[10][0]:.1%}"
    )
    # The cells of one round run within a fraction of a second of each other: a ratio
    # taken within each round cancels the drift of a shared machine's speed between rounds.
    paired = sorted(a / b for a, b in zip(times["engine-10"], times["engine-10000"]))
    print(
        f"within each round, 10,000/10: median {median(paired):.1%} (rounds {paired[0]:.1%}-{paired[-1]:.1%}); "
        + "eng/ceil: "
        + ", ".join(f"{count:,}: {median(c / e for e, c in zip(times[f'engine-{count}'], times[f'ceiling-{count}'])):.0%}" for count in sizes)
    )
    alerts = sum(len(rulesets[10_000].match(a)) for a in articles)
    engine_per_alert = min(times["engine-10000"]) / alerts
    # Less the harness cell (the same closure without the signals), pass by pass.
    signal_times, harness_times = times["signals-10000"], times["harness-10000"]
    signals_per_alert = (min(signal_times) - min(harness_times)) / alerts
    paired_signals = sorted((s - h) / e for e, s, h in zip(times["engine-10000"], signal_times, harness_times))
    print(
        f"signals at 10,000 rules, bursts on all ({alerts / len(articles):.1f} alerts/article): "
        f"{signals_per_alert * 1e6:.1f} us per alert against {engine_per_alert * 1e6:.1f} us of matching per alert: "
        f"{signals_per_alert / engine_per_alert:.1%} (within each round: median {median(paired_signals):.1%}; "
        f"the harness, subtracted: {min(harness_times) / alerts * 1e6:.1f} us per alert)"
    )
    # The same rules with bursts, matched then signalled in one cell against matched alone.
    both, alone = times["engine+signals-10000"], times["engine-bursts-10000"]
    extra = (min(both) - min(alone)) / alerts
    paired_extra = sorted((b - a) / a for a, b in zip(alone, both))
    print(
        f"signals after matching at 10,000 rules (engine+signals less engine in the same closure, bursts on all): "
        f"{extra * 1e6:.1f} us per alert "
        f"against {min(alone) / alerts * 1e6:.1f} us of matching: {extra / (min(alone) / alerts):.1%} "
        f"(within each round: median {median(paired_extra):.1%})"
    )
    daemon_order(bursting, rulesets[10_000], articles, args.passes)
    del rulesets, cells, bursting
    text = rules_yaml(random.Random(10_000), vocab, 10_000)
    cpu_times, wall_times, growths = [], [], []
    for _ in range(3):
        clear_caches()
        gc.collect()
        before = rss_bytes()
        wall, cpu = time.perf_counter(), time.process_time()
        ruleset = parse_rules(text, "<bench-10000>")
        cpu_times.append(time.process_time() - cpu)
        wall_times.append(time.perf_counter() - wall)
        growths.append(rss_bytes() - before)
        del ruleset
    clear_caches()
    gc.collect()
    tracemalloc.start()
    parse_rules(text, "<bench-10000>")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    print(
        f"compile 10,000 rules from YAML (cold caches, median of 3): {median(cpu_times):.2f} s CPU, "
        f"{median(wall_times):.2f} s wall; RSS growth {growths[0] / 1e6:.0f} MB; "
        f"peak Python allocations {peak / 1e6:.0f} MB"
    )


if __name__ == "__main__":
    main()
