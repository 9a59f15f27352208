"""Matching cost grows linearly (or n log n) with the number of term occurrences, for
every construct, and no article can make it grow past the per-term cap.

NEAR used to compare every occurrence on one side with every occurrence on the other
(~1 µs a pair: 20,000 + 20,000 occurrences took 433 s). The evidence of the linear
version is checked against that quadratic definition on dense random texts.
"""

from __future__ import annotations

import random
import re
import time
from itertools import islice

import pytest

import monitor.engine.evaluate as evaluate
from monitor.engine.evaluate import MAX_HITS_PER_TERM, Span, find_term_hits
from monitor.engine.evaluate import to_hits as _to_hits
from monitor.engine.query import And, AtLeast, Near, Node, Not, Or, Term
from monitor.engine.text import fold
from monitor.model import FIELDS, Article
from tests.engine.helpers import article, one_rule, rules_from

_GAP_WORD = re.compile(r"(?<![\w'])[^\W_]+")


def reference_spans(node: Node, fields: list) -> list[Span] | None:
    """The evidence of ``node`` by definition: terms found with a regex each, and NEAR
    checking every pair of occurrences (quadratic, so only for small texts)."""
    if isinstance(node, Term):
        spans = [
            (node.label, FIELDS.index(name), start, end)
            for name in node.fields
            for _, start, end in find_term_hits(node.key, fields[FIELDS.index(name)])
        ]
        return spans or None
    if isinstance(node, Not):
        return [] if reference_spans(node.child, fields) is None else None
    if isinstance(node, Near):
        # A K OF side: each item's spans, at least K items near the other side.
        sides = []
        for operand in (node.left, node.right):
            items = operand.children if isinstance(operand, AtLeast) else (operand,)
            sides.append([spans for spans in (reference_spans(item, fields) for item in items) if spans])
        if not sides[0] or not sides[1]:
            return None
        left = [span for spans in sides[0] for span in spans]
        right = [span for spans in sides[1] for span in spans]
        found: dict[Span, None] = {}
        for a in left:
            for b in right:
                if a[1] != b[1] or not (a[3] <= b[2] or b[3] <= a[2]):
                    continue
                gap = _GAP_WORD.finditer(fields[a[1]].lower, min(a[3], b[3]), max(a[2], b[2]))
                if next(islice(gap, node.distance, None), None) is None:
                    found[a] = found[b] = None
        for operand, items in zip((node.left, node.right), sides):
            if isinstance(operand, AtLeast) and sum(any(span in found for span in spans) for spans in items) < operand.k:
                return None
        return list(found) or None
    results = [reference_spans(child, fields) for child in node.children]
    true = [result for result in results if result is not None]
    if isinstance(node, And) and len(true) < len(results):
        return None
    if isinstance(node, Or) and not true:
        return None
    if isinstance(node, AtLeast) and len(true) < node.k:
        return None
    return [span for result in true for span in result]


DENSE_WORDS = ["alpha", "bravo", "Alpha", "alphas", "charlie", "delta", "alpha bravo", "bravo's", "U.S.", "x"]
SEPARATORS = [" ", " ", " ", ", ", "-", "’s ", ". ", " ,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,,, "]
NEAR_QUERIES = [
    "alpha NEAR/0 bravo",
    "alpha NEAR/3 bravo",
    "bravo NEAR/1 alpha",
    "alph* NEAR/2 (bravo OR charlie)",
    '(alpha OR "alpha bravo") NEAR/2 (bravo OR delta)',
    "=Alpha NEAR/4 bravo",
    "(alpha OR bravo) NEAR/1 (bravo OR charlie)",
    "@side NEAR/5 @other",
    "body:(alpha NEAR/2 bravo) OR title:(charlie NEAR/0 delta)",
    "2 OF (alpha NEAR/1 bravo, charlie NEAR/3 delta, x) AND NOT (delta NEAR/0 alpha)",
    '"U.S." NEAR/6 alpha',
    "alpha NEAR/100 delta",
    "2 OF @side NEAR/3 @other",
    "2 OF (alpha, charlie, (delta OR x)) NEAR/1 2 OF (bravo, \"alpha bravo\", =Alpha)",
    "3 OF @side NEAR/0 bravo",
]
LISTS = "lists:\n  side: [alpha, alphas, =Alpha, charlie]\n  other: [bravo, delta, \"alpha bravo\"]\n"


def dense_text(rng: random.Random, words: int) -> str:
    return "".join(rng.choice(DENSE_WORDS) + rng.choice(SEPARATORS) for _ in range(words))


def test_near_evidence_equals_every_pair_on_dense_text() -> None:
    """Hundreds of occurrences per side (every code path: pairs, nearest partners, word
    index, runs of punctuation longer than the scan window): the same evidence as
    comparing every pair."""
    yaml_text = LISTS + "rules:\n" + "".join(
        f"  - id: r{i}\n    query: '{q.replace(chr(39), chr(39) * 2)}'\n" for i, q in enumerate(NEAR_QUERIES)
    )
    ruleset = rules_from(yaml_text)
    nodes = [ruleset.query(f"r{i}") for i in range(len(NEAR_QUERIES))]
    rng = random.Random(20261204)
    fired = 0
    for index in range(40):
        sizes = [rng.choice([0, 3, 20]), rng.choice([0, 40]), rng.choice([5, 60, 160])]
        item = Article(id=str(index), feed_url="t", **{name: dense_text(rng, size) for name, size in zip(FIELDS, sizes)})
        fields = [fold(item.field_text(name)) for name in FIELDS]
        expected = {f"r{i}": reference_spans(node, fields) for i, node in enumerate(nodes)}
        got = {match.rule.id: match.hits for match in ruleset.match(item)}
        assert sorted(got) == sorted(rule_id for rule_id, spans in expected.items() if spans is not None), item
        for rule_id, hits in got.items():
            assert hits == _to_hits(expected[rule_id], fields, {}), (rule_id, item)  # type: ignore[arg-type]
            fired += 1
    assert fired > 150


def _best_of(runs: int, function) -> float:
    """The least CPU time of ``runs`` calls (the neighbours' load only ever adds time)."""
    best = float("inf")
    for _ in range(runs):
        start = time.process_time()
        function()
        best = min(best, time.process_time() - start)
    return best


def _blocks(n: int) -> Article:
    """``alpha`` n times, then ``bravo`` n times: 2n occurrences, only one pair near."""
    return article(body="alpha " * n + "bravo " * n, title="alpha charlie")


def _interleaved(n: int) -> Article:
    """``alpha`` and ``bravo`` alternating, each pair far apart."""
    return article(body=" ".join(f"alpha {'x ' * 6}bravo {'x ' * 6}" for _ in range(n)))


# (query, article of n occurrences per term, whether it fires)
CONSTRUCTS = [
    ("alpha NEAR/3 bravo", _blocks, True),
    ("bravo NEAR/3 alpha", _blocks, True),
    ("alpha NEAR/100 bravo", _blocks, True),
    ("alpha NEAR/3 bravo", _interleaved, False),
    ("alpha NEAR/0 alpha", _blocks, True),
    ('"alpha bravo" NEAR/3 alpha', _blocks, True),
    ("alph* NEAR/3 brav*", _blocks, True),
    ("@a NEAR/3 @b", _blocks, True),
    ("(alpha OR charlie) NEAR/2 (bravo OR delta)", _interleaved, False),
    ("body:(alpha NEAR/3 bravo)", _blocks, True),
    ("title:alpha AND body:bravo", _blocks, True),
    ("2 OF (alpha NEAR/3 bravo, alpha NEAR/0 charlie, bravo NEAR/1 delta)", _blocks, True),
    ("2 OF (alpha, bravo, charlie)", _blocks, True),
    ("alpha AND NOT (alpha NEAR/3 bravo)", _interleaved, True),
    ("alpha OR bravo", _interleaved, True),
    ("2 OF (alpha, bravo) NEAR/3 (alpha OR bravo)", _blocks, True),
]


@pytest.mark.parametrize(("query", "make", "fires"), CONSTRUCTS, ids=[f"{q} [{m.__name__}]" for q, m, _ in CONSTRUCTS])
def test_matching_time_grows_linearly_with_occurrences(monkeypatch, query: str, make, fires: bool) -> None:
    """8x the occurrences costs 8x the time for linear work, 9-12x as measured (sorting
    the evidence is n log n, and the larger working set leaves the CPU caches); a
    quadratic step costs 64x. The per-term cap is lifted, so the algorithms themselves
    are what is measured."""
    monkeypatch.setattr(evaluate, "MAX_HITS_PER_TERM", 10**9)
    ruleset = one_rule(query, "lists:\n  a: [alpha, alphas]\n  b: [bravo, =Bravo]\n")
    small, large = make(1000), make(8000)
    assert bool(ruleset.match(small)) == fires and bool(ruleset.match(large)) == fires
    ratio = _best_of(5, lambda: ruleset.match(large)) / _best_of(5, lambda: ruleset.match(small))
    assert ratio < 16, f"{query}: 8x the occurrences took {ratio:.1f}x the time"


def test_twenty_thousand_occurrences_on_each_side_match_well_under_a_second(monkeypatch) -> None:
    item = _blocks(20_000)
    ruleset = one_rule("alpha NEAR/3 bravo")
    assert _best_of(1, lambda: ruleset.match(item)) < 1.0  # with the cap: the first 1,000 of each
    monkeypatch.setattr(evaluate, "MAX_HITS_PER_TERM", 10**9)
    uncapped = one_rule("alpha NEAR/3 bravo")
    assert _best_of(1, lambda: uncapped.match(item)) < 1.0  # every occurrence considered
    [match] = uncapped.match(item)
    assert [hit.text for hit in match.hits] == ["alpha"] * 4 + ["bravo"] * 4


def test_hits_past_the_cap_are_not_considered_but_presence_is() -> None:
    cap = MAX_HITS_PER_TERM
    # The only "alpha" next to "bravo" is occurrence cap + 1 of the body.
    item = article(body="alpha x x x x " * cap + "alpha bravo", title="alpha bravo")
    assert not one_rule("body:(alpha NEAR/0 bravo)").match(item)
    # Each field has its own cap: the title's hits are not pushed out by the body's.
    assert one_rule("title:(alpha NEAR/0 bravo)").match(item)
    assert one_rule("alpha AND bravo").match(item)
    [match] = one_rule("alpha bravo").match(item)
    body_alphas = [hit for hit in match.hits if hit.field == "body" and hit.term == "alpha"]
    assert len(body_alphas) == cap and body_alphas[-1].start == (cap - 1) * len("alpha x x x x ")
    # Under the cap nothing changes.
    assert one_rule("body:(alpha NEAR/0 bravo)").match(article(body="alpha x x x x " * (cap - 1) + "alpha bravo"))
