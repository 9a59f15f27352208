"""The clause pair index: every clause is listed under pairs of keys that must both occur
when it holds; clauses listed without a predicate must hold whenever one of their pairs
occurs; the orientation of pairs (which key heads them) covers every pair."""

from __future__ import annotations

import random

from monitor.engine.presearch import _clause, _cover, _or_children
from monitor.engine.query import iter_terms
from tests.engine.helpers import rules_from
from tests.engine.test_presearch import clause_query, shaped_query


def _queries(rng: random.Random, count: int) -> list[str]:
    from monitor.engine.query import can_match_without_terms, parse_query

    queries: list[str] = []
    while len(queries) < count:
        query = clause_query(rng) if rng.random() < 0.5 else shaped_query(rng)
        try:
            node = parse_query(query)
        except ValueError:
            continue
        if not can_match_without_terms(node):
            queries.append(query)
    return queries


def _matcher(queries: list[str]):
    yaml_text = "rules:\n" + "".join(
        f"  - id: r{i}\n    query: '{q.replace(chr(39), chr(39) * 2)}'\n" for i, q in enumerate(queries)
    )
    return rules_from(yaml_text)._matcher


def test_clauses_without_predicate_hold_whenever_a_pair_of_theirs_occurs() -> None:
    rng = random.Random(2611)
    matcher = _matcher(_queries(rng, 400))
    # The exact predicate of every clause, to check the entries listed without one.
    exact = {}
    for rule_index, query in enumerate(matcher._queries):
        for clause_index, node in enumerate(_or_children(query)):
            clause = _clause(node, matcher._key_ids)
            exact[(rule_index, clause_index)] = (clause, node)
    implied = checked = 0
    listed = [(key, key, entries) for key, entries in enumerate(matcher._own_entries) if entries]
    for head, partners in enumerate(matcher._partner_keys):
        pairs = matcher.pairs_headed_by(head)
        assert set(pairs) == partners and head not in partners
        listed.extend((head, partner, entries) for partner, entries in pairs.items())
    assert {head for head, partner, _ in listed if head == partner} and {head for head, partner, _ in listed if head != partner}
    for head, partner, entries in listed:
        for entry in entries:
            checked += 1
            # Which clause of its rule this entry is: the one with the same key set.
            candidates = [
                (clause, node)
                for (rule_index, _), (clause, node) in exact.items()
                if rule_index == entry.index
                and frozenset(matcher._key_ids[term.key] for term in iter_terms(node)) >= entry.keys
            ]
            assert candidates
            if entry.check is None:
                implied += 1
                # Some clause of the rule with these keys is exact and true on the pair.
                assert any(
                    clause.exact and not clause.negatives and clause.predicate()({head, partner})
                    for clause, _node in candidates
                ), (matcher.rules[entry.index].query, head, partner)
    assert implied > 100 and checked > implied  # both kinds occur


def test_pair_orientation_covers_every_pair() -> None:
    rng = random.Random(5)
    for _ in range(200):
        keys = rng.randint(1, 30)
        pairs = {(rng.randrange(keys), rng.randrange(keys)) for _ in range(rng.randint(0, 60))}
        heads = _cover(pairs)
        assert all(a in heads or b in heads for a, b in pairs)
        assert all(a in heads for a, b in pairs if a == b)
        assert heads <= {key for pair in pairs for key in pair}
    # A star is covered by its centre alone.
    assert _cover({(0, i) for i in range(1, 10)}) == {0}
