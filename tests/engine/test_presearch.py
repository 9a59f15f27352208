"""The presearcher (one automaton scan, then candidate rules only) must give exactly the
result of evaluating every rule on its own, with terms found without the automaton."""

from __future__ import annotations

import random

from monitor.engine.compiler import find_term_hits
import re

from monitor.engine.query import And, AtLeast, Near, Node, Not, Or, Term, can_match_without_terms, parse_query
from monitor.engine.text import fold
from monitor.model import FIELDS, Article
from tests.engine.helpers import rules_from

WORDS = ["putin", "trump", "summit", "Kyïv", "arms", "control", "START", "start", "sanction", "sanctions",
         "oil", "talks", "New", "nuclear", "farms", "U.S.", "x-ray", "deal"]


def brute_force(node: Node, fields: list) -> bool:
    """Reference evaluation straight from the AST, terms found with a regex per term."""
    if isinstance(node, Term):
        return any(find_term_hits(node.key, fields[FIELDS.index(f)]) for f in node.fields)
    if isinstance(node, Not):
        return not brute_force(node.child, fields)
    if isinstance(node, And):
        return all(brute_force(child, fields) for child in node.children)
    if isinstance(node, Or):
        return any(brute_force(child, fields) for child in node.children)
    if isinstance(node, AtLeast):
        return sum(brute_force(child, fields) for child in node.children) >= node.k
    assert isinstance(node, Near)
    return _near(node, fields)


def _positions(node: Node, fields: list) -> list[tuple[int, int, int]]:
    if isinstance(node, Term):
        return [
            (FIELDS.index(f), s, e)
            for f in node.fields
            for _, s, e in find_term_hits(node.key, fields[FIELDS.index(f)])
        ]
    return [p for child in node.children for p in _positions(child, fields)]


def _near(node: Near, fields: list) -> bool:
    for fa, sa, ea in _positions(node.left, fields):
        for fb, sb, eb in _positions(node.right, fields):
            if fa != fb or not (ea <= sb or eb <= sa):
                continue
            # Words starting in the gap; "Putin's" is one word (the 's does not count).
            words = re.compile(r"(?<![\w'])[^\W_]+").findall(fields[fa].lower, min(ea, eb), max(sa, sb))
            if len(words) <= node.distance:
                return True
    return False


def random_query(rng: random.Random, depth: int = 0) -> str:
    roll = rng.random()
    if depth > 2 or roll < 0.35:
        word = rng.choice(WORDS)
        style = rng.random()
        if style < 0.15:
            return f"{word[:4]}*" if len(word) >= 4 else word
        if style < 0.3:
            return f"={word}"
        if style < 0.45:
            return f'"{word} {rng.choice(WORDS)}"'
        if style < 0.55:
            return f"{rng.choice(FIELDS)}:{word}"
        return word
    if roll < 0.5:
        return f"({random_query(rng, depth + 1)} OR {random_query(rng, depth + 1)})"
    if roll < 0.65:
        return f"({random_query(rng, depth + 1)} {random_query(rng, depth + 1)})"
    if roll < 0.75:
        return f"({random_query(rng, depth + 1)} AND NOT {random_query(rng, depth + 1)})"
    if roll < 0.88:
        return f"({rng.choice(WORDS)} NEAR/{rng.randint(0, 4)} {rng.choice(WORDS)})"
    return f"2 OF ({random_query(rng, depth + 1)}, {random_query(rng, depth + 1)}, {rng.choice(WORDS)})"


def random_text(rng: random.Random) -> str:
    separators = [" ", " ", " ", "-", "–", ", ", "’s ", ". "]
    return "".join(rng.choice(WORDS) + rng.choice(separators) for _ in range(rng.randint(0, 25)))


def test_presearcher_equals_brute_force_on_random_rules() -> None:
    rng = random.Random(20261125)
    queries: list[str] = []
    while len(queries) < 400:
        query = random_query(rng)
        try:
            node = parse_query(query)
        except ValueError:
            continue
        if not can_match_without_terms(node):
            queries.append(query)
    yaml_text = "rules:\n" + "".join(
        f"  - id: r{i}\n    query: '{q.replace(chr(39), chr(39) * 2)}'\n" for i, q in enumerate(queries)
    )
    ruleset = rules_from(yaml_text)
    nodes = [parse_query(q) for q in queries]
    for index in range(150):
        item = Article(id=str(index), feed_url="t", title=random_text(rng), summary=random_text(rng), body=random_text(rng))
        fields = [fold(item.field_text(name)) for name in FIELDS]
        expected = [f"r{i}" for i, node in enumerate(nodes) if brute_force(node, fields)]
        assert [m.rule.id for m in ruleset.match(item)] == expected, item
