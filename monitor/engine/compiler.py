"""Compile parsed rules into one matcher: a presearcher plus per-rule evaluators.

How an article is matched:

1. each field is folded (:func:`monitor.engine.text.fold`);
2. one Aho-Corasick automaton holding the folded pattern of every distinct term of every
   enabled rule scans each field once; raw hits are checked for whole-word boundaries,
   wildcard extension and, for case-sensitive terms, the original case;
3. only rules owning at least one term that hit are evaluated (their boolean query runs
   against the term hits); the loader rejects queries that could be true with none of
   their terms present, so skipping the other rules never loses a match.

The cost per article is the scan (linear in the text, nearly flat in the number of
patterns) plus the evaluation of the few rules that have candidate terms.
"""

from __future__ import annotations

import re
from bisect import bisect_left
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Sequence

import ahocorasick_rs

from monitor.engine.query import And, AtLeast, Near, Node, Not, Or, Term, TermKey, iter_terms, required_groups
from monitor.engine.text import FoldedText, fold, scan_text
from monitor.model import FIELDS, Article, Hit, Match, Rule

__all__ = ["CompiledRule", "Matcher", "Span", "TermHits", "find_term_hits"]

#: One piece of evidence: (term label, field index, folded start, folded end).
Span = tuple[str, int, int, int]
#: Positions of a term in an article: (field index, folded start, folded end).
TermHits = list[tuple[int, int, int]]

# A word for NEAR distances: a run of letters/digits not glued to a previous word by an
# apostrophe, so "Putin's summit" counts "Putin's" as one word.
_WORD = re.compile(r"(?<![\w'])[^\W_]+")


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule with its parsed query."""

    rule: Rule
    query: Node


class _Context:
    """Per-article state shared by the evaluators of all candidate rules."""

    __slots__ = ("fields", "hits", "_word_starts")

    def __init__(self, fields: Sequence[FoldedText], hits: dict[int, TermHits]) -> None:
        self.fields = fields
        self.hits = hits
        self._word_starts: dict[int, list[int]] = {}

    def word_starts(self, field_index: int) -> list[int]:
        """Start offsets of every word of a field (computed once, only if NEAR needs it)."""
        starts = self._word_starts.get(field_index)
        if starts is None:
            starts = [m.start() for m in _WORD.finditer(self.fields[field_index].lower)]
            self._word_starts[field_index] = starts
        return starts


#: An evaluator returns None when false, else the evidence (empty for a true NOT).
_Evaluator = Callable[[_Context], "list[Span] | None"]


@lru_cache(maxsize=None)
def _field_indexes(fields: tuple[str, ...]) -> frozenset[int]:
    return frozenset(FIELDS.index(name) for name in fields)


def _compile_node(node: Node, key_ids: dict[TermKey, int]) -> _Evaluator:
    """Turn an AST into nested closures (faster than walking the AST per article)."""
    if isinstance(node, Term):
        key_id = key_ids[node.key]
        label = node.label
        allowed = _field_indexes(node.fields)
        every_field = len(allowed) == len(FIELDS)

        def term(ctx: _Context) -> list[Span] | None:
            found = ctx.hits.get(key_id)
            if not found:
                return None
            spans = [(label, f, s, e) for f, s, e in found if every_field or f in allowed]
            return spans or None

        return term
    if isinstance(node, Not):
        inner = _compile_node(node.child, key_ids)
        return lambda ctx: [] if inner(ctx) is None else None
    if isinstance(node, And):
        parts = [_compile_node(child, key_ids) for child in node.children]

        def conjunction(ctx: _Context) -> list[Span] | None:
            spans: list[Span] = []
            for part in parts:
                result = part(ctx)
                if result is None:
                    return None
                spans.extend(result)
            return spans

        return conjunction
    if isinstance(node, Or):
        parts = [_compile_node(child, key_ids) for child in node.children]

        def disjunction(ctx: _Context) -> list[Span] | None:
            spans: list[Span] | None = None
            for part in parts:  # no short-circuit: every true branch is evidence
                result = part(ctx)
                if result is not None:
                    spans = result if spans is None else spans + result
            return spans

        return disjunction
    if isinstance(node, AtLeast):
        parts = [_compile_node(child, key_ids) for child in node.children]
        k = node.k

        def at_least(ctx: _Context) -> list[Span] | None:
            spans: list[Span] = []
            count = 0
            for part in parts:
                result = part(ctx)
                if result is not None:
                    count += 1
                    spans.extend(result)
            return spans if count >= k else None

        return at_least
    if isinstance(node, Near):
        left = _compile_node(node.left, key_ids)
        right = _compile_node(node.right, key_ids)
        distance = node.distance

        def near(ctx: _Context) -> list[Span] | None:
            left_spans = left(ctx)
            if left_spans is None:
                return None
            right_spans = right(ctx)
            if right_spans is None:
                return None
            evidence: dict[Span, None] = {}
            for a in left_spans:
                for b in right_spans:
                    if a[1] == b[1] and _within(ctx, a, b, distance):
                        evidence[a] = None
                        evidence[b] = None
            return list(evidence) or None

        return near
    raise TypeError(f"unknown query node {node!r}")


def _within(ctx: _Context, a: Span, b: Span, distance: int) -> bool:
    """Whether two spans in one field are disjoint with at most ``distance`` words between."""
    if a[3] <= b[2]:
        gap_start, gap_end = a[3], b[2]
    elif b[3] <= a[2]:
        gap_start, gap_end = b[3], a[2]
    else:
        return False  # overlapping spans are one mention, not two near each other
    starts = ctx.word_starts(a[1])
    return bisect_left(starts, gap_end) - bisect_left(starts, gap_start) <= distance


def find_term_hits(key: TermKey, text: FoldedText, field_index: int = 0) -> TermHits:
    """Every hit of one term in one folded field, found with a regex instead of the automaton.

    The reference semantics of a term (whole words, punctuation counts as a space, a
    wildcard's last word may continue, a case-sensitive term must match ``text.cased``);
    tests check that the matcher agrees.
    """
    hits: TermHits = []
    # Any punctuation in the pattern matches any non-alphanumeric character in the text.
    parts = []
    for char in key.pattern:
        parts.append(re.escape(char) if char.isalnum() else r"[\W_]")
    tail = r"[^\W_]*" if key.wildcard else r"(?![^\W_])"
    regex = re.compile(r"(?<![^\W_])(?=(" + "".join(parts) + tail + "))")
    for found in regex.finditer(text.lower):
        start, end = found.start(1), found.end(1)
        if key.cased is not None and text.cased[start : start + len(key.cased)] != key.cased:
            continue
        hits.append((field_index, start, end))
    return hits


class Matcher:
    """All enabled rules compiled for matching (see the module docstring)."""

    def __init__(self, compiled: Sequence[CompiledRule]) -> None:
        self.rules = tuple(item.rule for item in compiled)
        key_ids: dict[TermKey, int] = {}
        for item in compiled:
            for term in iter_terms(item.query):
                key_ids.setdefault(term.key, len(key_ids))
        # Each rule is indexed under the keys of one necessary condition (so it becomes a
        # candidate only if one of them occurs) and its other conditions are checked with
        # set operations before the full evaluation. The loader guarantees a condition.
        key_rules: list[list[int]] = [[] for _ in key_ids]
        checks: list[tuple[tuple[int, tuple[frozenset[int], ...]], ...]] = []
        for rule_index, item in enumerate(compiled):
            conditions = [
                (k, tuple(frozenset(key_ids[key] for key in group) for group in groups))
                for k, groups in required_groups(item.query)
            ]
            if not conditions:
                raise ValueError(f"rule {item.rule.id!r} can match without any of its terms")
            conditions.sort(key=lambda cond: (cond[0] > 1 or len(cond[1]) > 1, sum(map(len, cond[1]))))
            index_condition = conditions[0]
            for key_id in frozenset().union(*index_condition[1]):
                key_rules[key_id].append(rule_index)
            simple_index = index_condition[0] == 1 and len(index_condition[1]) == 1
            checks.append(tuple(conditions[1:] if simple_index else conditions))
        self._checks = tuple(checks)
        self.keys: tuple[TermKey, ...] = tuple(key_ids)
        self._key_rules = tuple(frozenset(rules) for rules in key_rules)
        patterns: dict[str, list[tuple[int, bool, str | None]]] = {}
        for key, key_id in key_ids.items():
            patterns.setdefault(key.scan_pattern, []).append((key_id, key.wildcard, key.cased))
        self._pattern_keys = tuple(tuple(group) for group in patterns.values())
        # Pattern id -> key id when the pattern is one plain term (no wildcard, no case).
        self._simple = tuple(
            group[0][0] if len(group) == 1 and not group[0][1] and group[0][2] is None else -1
            for group in self._pattern_keys
        )
        self._automaton = (
            ahocorasick_rs.AhoCorasick(list(patterns), matchkind=ahocorasick_rs.MatchKind.Standard)
            if patterns
            else None
        )
        # Evaluators are built on first use: most rules are never candidates for most
        # articles, and this halves the time to load a large rule set.
        self._queries = tuple(item.query for item in compiled)
        self._key_ids = key_ids
        self._evaluators: list[_Evaluator | None] = [None] * len(compiled)

    def term_hits(self, fields: Sequence[FoldedText]) -> dict[int, TermHits]:
        """Scan every field once; return the hits of each term key id that occurs."""
        hits: dict[int, TermHits] = {}
        if self._automaton is None:
            return hits
        pattern_keys = self._pattern_keys
        simple = self._simple
        for field_index, text in enumerate(fields):
            if not text.lower:
                continue
            # Offsets in the padded scan text are those of text.lower plus one, and a
            # pattern starts with its padding space, so a hit's word starts at ``start``.
            scan = " " + scan_text(text.lower) + " "
            cased_text = text.cased
            for pattern_id, start, end in self._automaton.find_matches_as_indexes(scan, overlapping=True):
                key_id = simple[pattern_id]
                if key_id >= 0:  # the common case: one plain term, no check needed
                    found = hits.get(key_id)
                    if found is None:
                        hits[key_id] = [(field_index, start, end - 2)]
                    else:
                        found.append((field_index, start, end - 2))
                    continue
                for key_id, wildcard, cased in pattern_keys[pattern_id]:
                    # A wildcard runs to the end of its word; others end before their pad.
                    hit_end = scan.find(" ", end) - 1 if wildcard else end - 2
                    if cased is not None and cased_text[start : start + len(cased)] != cased:
                        continue
                    found = hits.get(key_id)
                    if found is None:
                        hits[key_id] = [(field_index, start, hit_end)]
                    else:
                        found.append((field_index, start, hit_end))
        return hits

    def match(self, article: Article) -> list[Match]:
        """The rules that fire on ``article``, in rule order, each with its evidence."""
        fields = [fold(article.field_text(name)) for name in FIELDS]
        hits = self.term_hits(fields)
        if not hits:
            return []
        # Union in C of the rule sets indexed under each key that occurs.
        candidates = set().union(*map(self._key_rules.__getitem__, hits))
        context = _Context(fields, hits)
        matches: list[Match] = []
        present = hits.keys()
        checks = self._checks
        for rule_index in sorted(candidates):
            for k, groups in checks[rule_index]:
                if k == 1 and len(groups) == 1:
                    if present.isdisjoint(groups[0]):
                        break
                elif sum(not present.isdisjoint(group) for group in groups) < k:
                    break
            else:
                evaluator = self._evaluators[rule_index]
                if evaluator is None:
                    evaluator = self._evaluators[rule_index] = _compile_node(self._queries[rule_index], self._key_ids)
                spans = evaluator(context)
                if spans is not None:
                    matches.append(Match(self.rules[rule_index], _to_hits(spans, fields)))
        return matches


def _to_hits(spans: list[Span], fields: Sequence[FoldedText]) -> tuple[Hit, ...]:
    """Evidence in folded offsets -> unique Hits in original offsets, in text order."""
    unique = sorted(set(spans), key=lambda span: (span[1], span[2], span[3], span[0]))
    hits = []
    for label, field_index, start, end in unique:
        text = fields[field_index]
        orig_start, orig_end = text.original_span(start, end)
        hits.append(Hit(label, FIELDS[field_index], orig_start, orig_end, text.original[orig_start:orig_end]))
    return tuple(hits)
