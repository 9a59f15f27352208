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

from bisect import bisect_left
from dataclasses import dataclass
from typing import Callable, Sequence

import ahocorasick_rs
import re

from monitor.engine.query import And, AtLeast, Near, Node, Not, Or, Term, TermKey, iter_terms
from monitor.engine.text import FoldedText, fold
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


def _compile_node(node: Node, key_ids: dict[TermKey, int]) -> _Evaluator:
    """Turn an AST into nested closures (faster than walking the AST per article)."""
    if isinstance(node, Term):
        key_id = key_ids[node.key]
        label = node.label
        allowed = frozenset(FIELDS.index(name) for name in node.fields)
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
    """Every hit of one term in one folded field, without the automaton.

    The reference semantics of a term, used by tests and tools; the matcher must agree.
    """
    hits: TermHits = []
    haystack = text.lower
    start = haystack.find(key.pattern)
    while start != -1:
        end = _accept(key, text, start, start + len(key.pattern))
        if end is not None:
            hits.append((field_index, start, end))
        start = haystack.find(key.pattern, start + 1)
    return hits


def _accept(key: TermKey, text: FoldedText, start: int, end: int) -> int | None:
    """Check one raw occurrence of ``key.pattern``; return the hit's end, or None."""
    haystack = text.lower
    if key.left_boundary and start > 0 and haystack[start - 1].isalnum():
        return None
    if key.wildcard:
        size = len(haystack)
        while end < size and haystack[end].isalnum():
            end += 1
    elif key.right_boundary and end < len(haystack) and haystack[end].isalnum():
        return None
    if key.cased is not None and text.cased[start : start + len(key.cased)] != key.cased:
        return None
    return end


class Matcher:
    """All enabled rules compiled for matching (see the module docstring)."""

    def __init__(self, compiled: Sequence[CompiledRule]) -> None:
        self.rules = tuple(item.rule for item in compiled)
        key_ids: dict[TermKey, int] = {}
        key_rules: list[list[int]] = []
        for rule_index, item in enumerate(compiled):
            for term in iter_terms(item.query):
                key_id = key_ids.setdefault(term.key, len(key_ids))
                if key_id == len(key_rules):
                    key_rules.append([])
                if not key_rules[key_id] or key_rules[key_id][-1] != rule_index:
                    key_rules[key_id].append(rule_index)
        self.keys: tuple[TermKey, ...] = tuple(key_ids)
        self._key_rules = tuple(tuple(rules) for rules in key_rules)
        patterns: dict[str, list[tuple[int, TermKey]]] = {}
        for key, key_id in key_ids.items():
            patterns.setdefault(key.pattern, []).append((key_id, key))
        self._pattern_keys = tuple(tuple(group) for group in patterns.values())
        self._automaton = (
            ahocorasick_rs.AhoCorasick(list(patterns), matchkind=ahocorasick_rs.MatchKind.Standard)
            if patterns
            else None
        )
        self._evaluators = tuple(_compile_node(item.query, key_ids) for item in compiled)

    def term_hits(self, fields: Sequence[FoldedText]) -> dict[int, TermHits]:
        """Scan every field once; return the hits of each term key id that occurs."""
        hits: dict[int, TermHits] = {}
        if self._automaton is None:
            return hits
        pattern_keys = self._pattern_keys
        for field_index, text in enumerate(fields):
            if not text.lower:
                continue
            for pattern_id, start, end in self._automaton.find_matches_as_indexes(text.lower, overlapping=True):
                for key_id, key in pattern_keys[pattern_id]:
                    hit_end = _accept(key, text, start, end)
                    if hit_end is not None:
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
        candidates: set[int] = set()
        for key_id in hits:
            candidates.update(self._key_rules[key_id])
        context = _Context(fields, hits)
        matches: list[Match] = []
        for rule_index in sorted(candidates):
            spans = self._evaluators[rule_index](context)
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
