"""The presearcher (one automaton scan, then candidate rules only) must give exactly the
result of evaluating every rule on its own, with terms found without the automaton."""

from __future__ import annotations

import random
import re

from monitor.engine.evaluate import find_term_hits
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


SHAPE_WORDS = [*WORDS, "grain exports", "Sánchez", "central bank", "ceasefire", "x-ray deal", "kyiv talks"]


def _term(rng: random.Random) -> str:
    word = rng.choice(SHAPE_WORDS)
    roll = rng.random()
    if " " in word or "-" in word:
        return f'"{word}"'
    if roll < 0.1 and len(word) >= 4:
        return f"{word[:4]}*"
    if roll < 0.2:
        return f"={word}"
    if roll < 0.3:
        return f"{rng.choice(FIELDS)}:{word}"
    return word


def shaped_query(rng: random.Random) -> str:
    """The shapes the fast paths target (AND of OR-groups, OR of ANDs, NOT, NEAR OR terms,
    K OF with groups and NOT items), with field scopes, wildcards and case mixed in."""
    t = [_term(rng) for _ in range(6)]
    roll = rng.random()
    if roll < 0.2:
        return f"{t[0]} AND ({t[1]} OR {t[2]}) AND ({t[3]} OR {t[4]})"
    if roll < 0.35:
        return f"({t[0]} {t[1]}) OR ({t[2]} {t[3]}) OR ({t[4]} AND NOT {t[5]})"
    if roll < 0.5:
        return f"({rng.choice(WORDS)} NEAR/{rng.randint(0, 5)} {rng.choice(WORDS)}) OR {t[2]} OR ({t[3]} {t[4]})"
    if roll < 0.62:
        return f"{rng.randint(1, 3)} OF ({t[0]}, {t[1]}, ({t[2]} OR {t[3]}), {t[4]})"
    if roll < 0.7:
        return f"2 OF ({t[0]}, NOT {t[1]}, {t[2]})"
    if roll < 0.8:
        return f"{t[0]} AND NOT ({t[1]} OR {t[2]}) AND {t[3]}"
    if roll < 0.9:
        return f"title:({t[0]} OR {t[1]}) AND {t[2]}"
    return f"({t[0]} OR ({t[1]} AND {t[2]})) AND NOT {t[3]}"


def test_presearcher_fast_paths_equal_brute_force_and_reference_evidence() -> None:
    from monitor.engine.evaluate import Context as _Context
    from monitor.engine.evaluate import compile_node as _compile_node
    from monitor.engine.evaluate import to_hits as _to_hits
    from monitor.engine.query import iter_terms

    rng = random.Random(1125)
    queries: list[str] = []
    while len(queries) < 400:
        query = shaped_query(rng)
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
    keys = {term.key for node in nodes for term in iter_terms(node)}
    key_ids = {key: i for i, key in enumerate(keys)}
    fired_total = 0
    for index in range(120):
        item = Article(id=str(index), feed_url="t", title=random_text(rng), summary=random_text(rng), body=random_text(rng))
        fields = [fold(item.field_text(name)) for name in FIELDS]
        expected = [i for i, node in enumerate(nodes) if brute_force(node, fields)]
        got = ruleset.match(item)
        assert [m.rule.id for m in got] == [f"r{i}" for i in expected], item
        fired_total += len(expected)
        # Evidence: the plain evaluator over regex-found hits is the reference.
        context = _Context(fields, "", [], [], [], [])
        context.hits = {
            key_ids[key]: [hit for f in range(len(FIELDS)) for hit in find_term_hits(key, fields[f], f)] for key in keys
        }
        context.hits = {key_id: hits for key_id, hits in context.hits.items() if hits}
        for match, i in zip(got, expected):
            spans = _compile_node(nodes[i], key_ids)(context)
            assert spans is not None
            assert match.hits == _to_hits(spans, fields, {}), (queries[i], item)
    assert fired_total > 150  # the check is not vacuous


CLAUSE_WORDS = ["Putin", "putin", "PUTIN", "summit", "Summit", "U.S.", "u s", "sanction*", "=START", "start",
                "\"arms control\"", "\"arms-control\"", "oil", "@leaders", "deal", "x-ray"]


def clause_query(rng: random.Random) -> str:
    """OR of clauses, each exact (AND/NOT/K OF over terms and OR-groups) or not (NEAR,
    field scope), with one key under several labels and terms repeated across clauses:
    the shapes whose evidence the matcher builds from the terms present, not the evaluator."""
    def term() -> str:
        return rng.choice(CLAUSE_WORDS)

    def clause() -> str:
        roll = rng.random()
        if roll < 0.25:
            return term()
        if roll < 0.45:
            return f"({term()} {term()})"
        if roll < 0.6:
            return f"({term()} AND ({term()} OR {term()}) AND NOT {term()})"
        if roll < 0.72:
            return f"2 OF ({term()}, {term()}, ({term()} OR {term()}))"
        if roll < 0.86:
            return f"({rng.choice(['putin', 'summit', 'oil', 'deal'])} NEAR/{rng.randint(0, 4)} {rng.choice(['putin', 'summit', 'oil', 'deal'])})"
        return f"{rng.choice(FIELDS)}:{term()}"

    return " OR ".join(clause() for _ in range(rng.randint(1, 4)))


def test_clause_evidence_equals_reference_evaluator() -> None:
    """Evidence built from exact clauses (and evaluators for the others) must equal the
    reference evaluator's, hit for hit, on rules that repeat keys under several labels."""
    from monitor.engine.evaluate import Context as _Context
    from monitor.engine.evaluate import compile_node as _compile_node
    from monitor.engine.evaluate import to_hits as _to_hits
    from monitor.engine.query import iter_terms

    lists = {"leaders": "    - Putin\n    - =Xi\n    - summit\n"}
    lists_yaml = "lists:\n  leaders:\n" + lists["leaders"]
    rng = random.Random(251125)
    queries: list[str] = []
    while len(queries) < 300:
        query = clause_query(rng)
        try:
            ruleset = rules_from(lists_yaml + f"rules:\n  - id: r\n    query: '{query.replace(chr(39), chr(39) * 2)}'\n")
        except ValueError:
            continue
        queries.append(query)
    yaml_text = lists_yaml + "rules:\n" + "".join(
        f"  - id: r{i}\n    query: '{q.replace(chr(39), chr(39) * 2)}'\n" for i, q in enumerate(queries)
    )
    ruleset = rules_from(yaml_text)
    nodes = [ruleset.query(f"r{i}") for i in range(len(queries))]
    keys = {term.key for node in nodes for term in iter_terms(node)}
    key_ids = {key: i for i, key in enumerate(keys)}
    words = [*WORDS, "Xi", "xi", "PUTIN", "Summit", "arms-control", "u.s.", "sanctioned"]
    fired_total = 0
    for index in range(150):
        texts = ["".join(rng.choice(words) + rng.choice([" ", " ", "-", ", ", "’s "]) for _ in range(rng.randint(0, 30)))
                 for _ in FIELDS]
        item = Article(id=str(index), feed_url="t", title=texts[0], summary=texts[1], body=texts[2])
        fields = [fold(item.field_text(name)) for name in FIELDS]
        expected = [i for i, node in enumerate(nodes) if brute_force(node, fields)]
        got = ruleset.match(item)
        assert [m.rule.id for m in got] == [f"r{i}" for i in expected], item
        context = _Context(fields, "", [], [], [], [])
        context.hits = {
            key_ids[key]: [hit for f in range(len(FIELDS)) for hit in find_term_hits(key, fields[f], f)] for key in keys
        }
        context.hits = {key_id: hits for key_id, hits in context.hits.items() if hits}
        for match, i in zip(got, expected):
            spans = _compile_node(nodes[i], key_ids)(context)
            assert spans is not None
            assert match.hits == _to_hits(spans, fields, {}), (queries[i], item)
            fired_total += len(match.hits) > 1
    assert fired_total > 100  # many matches carry several hits (merging is exercised)


def test_fast_hit_construction_sets_every_field() -> None:
    """Hits are built through the slot descriptors; they must equal Hit(...) field for field."""
    import dataclasses

    from monitor.engine.evaluate import _hit
    from monitor.model import Hit

    assert [f.name for f in dataclasses.fields(Hit)] == ["term", "field", "start", "end", "text"]
    fields = [fold("Kyïv’s  summit"), fold(""), fold("a — b  summit")]
    for span in [("summit", 0, 8, 14), ("b", 2, 2, 3), ("summit", 2, 4, 10)]:
        field_text = fields[span[1]]
        start, end = field_text.original_span(span[2], span[3])
        expected = Hit(span[0], FIELDS[span[1]], start, end, field_text.original[start:end])
        built = _hit(span, fields)
        assert built == expected and hash(built) == hash(expected) and repr(built) == repr(expected)


def test_loading_rules_restores_the_garbage_collector() -> None:
    import gc

    assert gc.isenabled()
    rules_from("rules:\n  - id: r\n    query: putin\n")
    assert gc.isenabled()
    gc.disable()
    try:
        rules_from("rules:\n  - id: r\n    query: putin\n")
        assert not gc.isenabled()
    finally:
        gc.enable()
