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

import heapq
import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain, compress, filterfalse, islice
from operator import itemgetter
from typing import Any, Callable, Sequence

import ahocorasick_rs

from monitor.engine.query import And, AtLeast, Near, Node, Not, Or, Term, TermKey, iter_terms, required_groups
from monitor.engine.text import FoldedText, fold, scan_text
from monitor.model import FIELDS, Article, Hit, Match, Rule

__all__ = ["MAX_HITS_PER_TERM", "CompiledRule", "Matcher", "Span", "TermHits", "find_term_hits", "fold_fields"]

#: The first hits of each term in each field that matching considers, in text order;
#: later ones are ignored (by NEAR, field scopes and as evidence), so one article cannot
#: cost more than this many hits a term. Whether a term occurs at all is not limited.
MAX_HITS_PER_TERM = 1000

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

    __slots__ = ("fields", "haystack", "found", "pattern_ids", "bases", "owners", "special", "hits", "words")

    def __init__(
        self,
        fields: Sequence[FoldedText],
        haystack: str,
        found: list[tuple[int, int, int]],
        pattern_ids: list[int],
        bases: list[int],
        owners: list[int],
    ) -> None:
        self.fields = fields
        #: Every field's padded scan text, joined (see ``Matcher.scan``).
        self.haystack = haystack
        #: The raw automaton matches (pattern id, start, end) in haystack offsets, and
        #: their pattern ids alone.
        self.found = found
        self.pattern_ids = pattern_ids
        #: Where each non-empty field's scan text starts in the haystack, ascending, and
        #: which field that is. A match is placed in its field only when it is needed:
        #: most matches never are.
        self.bases = bases
        self.owners = owners
        #: Hits of the keys that needed a check (see ``Matcher._check_special``).
        self.special: dict[int, TermHits] | None = None
        #: Hits of the key ids some candidate needs; built by :meth:`load_keys`.
        self.hits: dict[int, TermHits] = {}
        #: Where each word of a field starts (see :meth:`word_starts`), by field index.
        self.words: dict[int, list[int]] | None = None

    def load_keys(self, keys: set[int]) -> dict[int, TermHits]:
        """Hits of ``keys`` only, in field offsets (the other raw matches are skipped in C)."""
        hits: dict[int, TermHits] = {}
        get = hits.get
        bases = self.bases
        owners = self.owners
        single = len(bases) == 1
        for pattern_id, start, end in compress(self.found, map(keys.__contains__, self.pattern_ids)):
            slot = 0 if single else bisect_right(bases, start) - 1
            base = bases[slot]
            # A plain key ends before its pattern's trailing pad.
            hit = (owners[slot], start - base, end - 2 - base)
            key_hits = get(pattern_id)
            if key_hits is None:
                hits[pattern_id] = [hit]
            else:
                key_hits.append(hit)
        special = self.special
        if special:
            for key_id in keys.intersection(special):
                hits[key_id] = special[key_id]
        if len(self.found) > MAX_HITS_PER_TERM:  # else no key can have more hits
            for key_id, key_hits in hits.items():
                if len(key_hits) > MAX_HITS_PER_TERM:
                    hits[key_id] = _first_per_field(key_hits, MAX_HITS_PER_TERM)
        self.hits = hits
        return hits

    def word_starts(self, field_index: int) -> list[int]:
        """The offset of every word of a field (``_WORD``), ascending; built on first use.

        The number of words between two offsets is then two bisections. Building it is
        one pass over the field, which costs more than counting a few short gaps, so
        NEAR asks for it only when it has many gaps to count or a long one.
        """
        words = self.words
        if words is None:
            words = self.words = {}
        starts = words.get(field_index)
        if starts is None:
            starts = words[field_index] = [found.start() for found in _WORD.finditer(self.fields[field_index].lower)]
        return starts


def _first_per_field(hits: TermHits, cap: int) -> TermHits:
    """The first ``cap`` hits of each field (``hits`` are in field, then text, order)."""
    kept: TermHits = []
    field_index, count = -1, 0
    for hit in hits:
        if hit[0] != field_index:
            field_index, count = hit[0], 0
        if count < cap:
            kept.append(hit)
            count += 1
    return kept


_PATTERN_ID = itemgetter(0)

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
                    # Every evaluator returns a list of its own, so the first one is
                    # extended in place (``spans + result`` for each branch of a long
                    # list would copy the evidence once per branch).
                    if spans is None:
                        spans = result
                    else:
                        spans.extend(result)
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
        distance = node.distance
        if isinstance(node.left, AtLeast) or isinstance(node.right, AtLeast):
            return _near_at_least(node, key_ids)
        left = _compile_node(node.left, key_ids)
        right = _compile_node(node.right, key_ids)

        def near(ctx: _Context) -> list[Span] | None:
            left_spans = left(ctx)
            if left_spans is None:
                return None
            right_spans = right(ctx)
            if right_spans is None:
                return None
            return _near_evidence(ctx, left_spans, right_spans, distance)

        return near
    raise TypeError(f"unknown query node {node!r}")


def _near_at_least(node: Near, key_ids: dict[TermKey, int]) -> _Evaluator:
    """NEAR with a ``K OF`` side: the near evidence of all its items together, true only
    if at least K of the items have a span in it (each occurs near the other side)."""
    sides = []
    for operand in (node.left, node.right):
        if isinstance(operand, AtLeast):
            sides.append((operand.k, [_compile_node(child, key_ids) for child in operand.children]))
        else:
            sides.append((0, [_compile_node(operand, key_ids)]))
    distance = node.distance

    def near(ctx: _Context) -> list[Span] | None:
        items: list[list[list[Span]]] = []
        spans: list[list[Span]] = []
        for k, parts in sides:
            found = [result for result in (part(ctx) for part in parts) if result]
            if len(found) < max(k, 1):
                return None
            items.append(found)
            spans.append([span for result in found for span in result])
        evidence = _near_evidence(ctx, spans[0], spans[1], distance)
        if evidence is None:
            return None
        near_spans = set(evidence)
        for (k, _parts), found in zip(sides, items):
            if k and sum(not near_spans.isdisjoint(result) for result in found) < k:
                return None
        return evidence

    return near


#: Up to this many (left, right) pairs, NEAR checks every pair; beyond it, each span
#: only its nearest partner on either side (see :func:`_near_evidence`).
_PAIRWISE = 16
#: From this many spans in one field, NEAR counts words with the field's word index
#: (:meth:`_Context.word_starts`) rather than by scanning each gap.
_INDEXED_SPANS = 64


def _near_evidence(ctx: _Context, left_spans: list[Span], right_spans: list[Span], distance: int) -> list[Span] | None:
    """Every span of either side with a span of the other side in the same field, disjoint
    from it, with at most ``distance`` words between them; None if there is none.

    Linear in the spans, give or take a sort: the number of words between two spans only
    grows as they move apart, so a span has a partner within ``distance`` if and only if
    the nearest span of the other side before it or after it is one. Each span is
    checked against those two only, instead of against every span of the other side.
    """
    if len(left_spans) * len(right_spans) <= _PAIRWISE:
        evidence: dict[Span, None] = {}
        for a in left_spans:
            for b in right_spans:
                if a[1] == b[1] and _within(ctx, a, b, distance):
                    evidence[a] = None
                    evidence[b] = None
        return list(evidence) or None
    sides: dict[int, tuple[list[Span], list[Span]]] = {}
    for index, spans in ((0, left_spans), (1, right_spans)):
        for span in spans:
            side = sides.get(span[1])
            if side is None:
                side = sides[span[1]] = ([], [])
            side[index].append(span)
    found: dict[Span, None] = {}
    for field_index, (lefts, rights) in sides.items():
        if not lefts or not rights:
            continue
        text = ctx.fields[field_index].lower
        starts = ctx.word_starts(field_index) if len(lefts) + len(rights) >= _INDEXED_SPANS else None
        for spans, others in ((lefts, rights), (rights, lefts)):
            # The nearest span after a span starts first at or after its end (the fewest
            # words between); the nearest before it ends last at or before its start.
            other_starts = sorted([span[2] for span in others])
            other_ends = sorted([span[3] for span in others])
            after_none = len(other_starts)
            for span in spans:
                if span in found:
                    continue
                start, end = span[2], span[3]
                after = bisect_left(other_starts, end)
                if after < after_none and _few_words(ctx, field_index, text, starts, end, other_starts[after], distance):
                    found[span] = None
                    continue
                before = bisect_right(other_ends, start) - 1
                if before >= 0 and _few_words(ctx, field_index, text, starts, other_ends[before], start, distance):
                    found[span] = None
    return list(found) or None


def _within(ctx: _Context, a: Span, b: Span, distance: int) -> bool:
    """Whether two spans in one field are disjoint with at most ``distance`` words between."""
    if a[3] <= b[2]:
        gap_start, gap_end = a[3], b[2]
    elif b[3] <= a[2]:
        gap_start, gap_end = b[3], a[2]
    else:
        return False  # overlapping spans are one mention, not two near each other
    text = ctx.fields[a[1]].lower
    if gap_end - gap_start <= _WINDOW_PER_WORD * (distance + 1):
        # The usual short gap (see _few_words), without the call.
        return next(islice(_WORD.finditer(text, gap_start, gap_end), distance, None), None) is None
    return _few_words(ctx, a[1], text, None, gap_start, gap_end, distance)


def _few_words(
    ctx: _Context, field_index: int, text: str, starts: list[int] | None, gap_start: int, gap_end: int, distance: int
) -> bool:
    """Whether at most ``distance`` words start in ``text[gap_start:gap_end]``.

    With the field's word index, two bisections. Without it, the gap is scanned for words,
    stopping after ``distance + 1`` of them (the lookbehind sees the text before
    ``gap_start``, so a word is never counted twice), but never more than a window of
    characters: a gap that is long for few words (a run of punctuation) is counted with
    the index instead, so no gap costs more than the window or one pass over the field.
    """
    if starts is None:
        if ctx.words is not None:
            starts = ctx.words.get(field_index)
        if starts is None:
            window = gap_start + _WINDOW_PER_WORD * (distance + 1)
            words = _WORD.finditer(text, gap_start, gap_end if gap_end <= window else window)
            if next(islice(words, distance, None), None) is not None:
                return False
            if gap_end <= window:
                return True
            starts = ctx.word_starts(field_index)
    return bisect_left(starts, gap_end) - bisect_left(starts, gap_start) <= distance


#: Characters of a gap scanned per word NEAR allows before the gap is counted with the
#: field's word index (news text averages about 6 characters a word).
_WINDOW_PER_WORD = 32


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
        self._queries = tuple(item.query for item in compiled)
        rule_terms = [iter_terms(query) for query in self._queries]
        # Key ids: the plain key (no wildcard, no case) of scan pattern ``p`` has id ``p``,
        # so the automaton's pattern ids are key ids and the set of keys present in an
        # article is computed in C. Other keys (wildcards, case-sensitive terms, a second
        # spelling with the same scan pattern such as "U.S." and "u s") get ids after the
        # patterns and are checked hit by hit. A pattern id with no plain key behind it is
        # referenced by no rule, so finding it in an article is harmless.
        distinct = dict.fromkeys(term.key for terms in rule_terms for term in terms)
        patterns: dict[str, int] = {}
        pattern_of: dict[TermKey, int] = {}
        plain: dict[int, TermKey] = {}
        for key in distinct:
            pattern_id = pattern_of[key] = patterns.setdefault(key.scan_pattern, len(patterns))
            if not key.wildcard and key.cased is None and pattern_id not in plain:
                plain[pattern_id] = key
        key_ids: dict[TermKey, int] = {}
        special: dict[int, list[tuple[int, bool, str | None]]] = {}
        next_id = len(patterns)
        for key, pattern_id in pattern_of.items():
            if plain.get(pattern_id) == key:
                key_ids[key] = pattern_id
            else:
                key_ids[key] = next_id
                special.setdefault(pattern_id, []).append((next_id, key.wildcard, key.cased))
                next_id += 1
        self._key_ids = key_ids
        # Key ids are 0..next_id-1: placed, not sorted (a sort with a C key function holds
        # the interpreter for its whole run, 0.15 s at 200,000 keys, while a reload's thread
        # must let the event loop in).
        by_id: list[Any] = [None] * next_id
        for key, key_id in key_ids.items():
            by_id[key_id] = key
        self.keys: tuple[TermKey, ...] = tuple(by_id)
        self._special = {pattern_id: tuple(entries) for pattern_id, entries in special.items()}
        self._special_patterns = frozenset(special)
        self._automaton = (
            ahocorasick_rs.AhoCorasick(list(patterns), matchkind=ahocorasick_rs.MatchKind.Standard)
            if patterns
            else None
        )
        # Each clause (top-level OR alternative) of each rule gets a predicate on the set of
        # key ids present in an article: exact for pure boolean clauses (terms, AND, OR,
        # NOT, K OF over unscoped terms), else a necessary condition; clauses passing a
        # necessary one are evaluated in full (the evaluator is the reference, and produces
        # the evidence). A rule fires when one of its clauses holds; its evidence is that of
        # every clause that holds.
        #
        # Candidates are found with a two-level index: each clause is listed under pairs of
        # keys (a, b) such that whenever it holds both keys of one of its pairs occur,
        # usually one key from each of two conditions it needs (a with itself when it has
        # only one). A clause is only looked at when the article has one of its own pairs;
        # for most exact clauses (one or two conditions, no NOT) that alone proves the
        # clause holds, so no predicate runs for them.
        lengths = [0] * next_id
        for key, key_id in key_ids.items():
            lengths[key_id] = len(key.pattern)
        clause_pairs: list[tuple[_Entry, set[tuple[int, int]]]] = []
        for rule_index, query in enumerate(self._queries):
            rule = self.rules[rule_index]
            nodes = _or_children(query)
            clauses = [_clause(node, key_ids) for node in nodes]
            if any(clause is None for clause in clauses):
                raise ValueError(f"rule {rule.id!r} can match without any of its terms")
            for clause_index, (node, clause) in enumerate(zip(nodes, clauses)):
                pairs, implied = clause.index_pairs(lengths)  # type: ignore[union-attr]
                predicate = clause.predicate()  # type: ignore[union-attr]
                _check, terms, keys, evaluated, _index = _plan(node, clause, predicate, key_ids, clause_index)  # type: ignore[arg-type]
                entry = _Entry(rule_index, rule, None if implied else predicate, terms, keys, evaluated)
                clause_pairs.append((entry, pairs))
        # Which key of a pair (a, b) it is listed under is free (both must occur): each key
        # present that heads a pair costs a lookup, so the pairs are oriented to make few
        # keys heads (a greedy vertex cover of the pair graph; static, no article data).
        heads = _cover({pair for _entry, pairs in clause_pairs for pair in pairs})
        pair_index: dict[int, dict[int, list[_Entry]]] = {}
        for entry, pairs in clause_pairs:
            for a, b in pairs:
                if a not in heads:
                    a, b = b, a
                pair_index.setdefault(a, {}).setdefault(b, []).append(entry)
        # A clause listed under a pair (a, a) is a candidate whenever a occurs, so those
        # clauses are listed per key id (most clauses that fire are such, e.g. a lone
        # alternative of an OR). For pairs of two keys, a key's partners are a frozenset
        # (the keys it heads a pair with), so a key present costs one list lookup and one
        # ``isdisjoint``, in C (a plain frozenset: CPython's fast path, which reads the
        # stored hashes); only keys with a partner present go further, a fraction of one
        # per article. Those find the clauses of each pair by the identity of their
        # partner set (each head has its own set object, kept alive by the list).
        own_entries: list[tuple[_Entry, ...]] = [()] * next_id
        no_partners: frozenset[int] = frozenset()
        partner_keys: list[frozenset[int]] = [no_partners] * next_id
        pairs_of: dict[int, dict[int, tuple[_Entry, ...]]] = {}
        for a, inner in pair_index.items():
            # Deduplicated (a clause can list one pair twice only via duplicate keys).
            own = inner.pop(a, None)
            if own:
                own_entries[a] = tuple(dict.fromkeys(own))
            if inner:
                partners = partner_keys[a] = frozenset(inner)
                pairs_of[id(partners)] = {b: tuple(dict.fromkeys(entries)) for b, entries in inner.items()}
        self._own_entries = own_entries
        self._partner_keys = partner_keys
        self._pairs_of = pairs_of

    def pairs_headed_by(self, key_id: int) -> dict[int, tuple[_Entry, ...]]:
        """The clause entries listed under each pair (key_id, partner) (for tests)."""
        return self._pairs_of.get(id(self._partner_keys[key_id]), {})

    def scan(self, fields: Sequence[FoldedText]) -> tuple[set[int], _Context]:
        """Scan every field once: the key ids present, and the context to evaluate with.

        The fields' padded scan texts are joined with NUL (which no scan text or pattern
        contains, so no match spans two fields) and searched in one call: the automaton
        releases the GIL for every search, and each time it must be won back from the
        daemon's other threads, which can hold the event loop up.
        """
        automaton = self._automaton
        if automaton is None:  # no enabled rule has a term: nothing to scan for
            return set(), _Context(fields, "", [], [], [], [])
        pieces: list[str] = []
        bases: list[int] = []
        owners: list[int] = []
        base = 0
        for field_index, text in enumerate(fields):
            if text.lower:
                # Offsets in a padded scan text are those of text.lower plus one, and a
                # pattern starts with its padding space, so a word starts at ``start``.
                piece = " " + scan_text(text.lower) + " "
                pieces.append(piece)
                bases.append(base)
                owners.append(field_index)
                base += len(piece) + 1
        haystack = "\0".join(pieces)
        found = automaton.find_matches_as_indexes(haystack, overlapping=True) if haystack else []
        # The pattern ids, taken out of the match tuples in C.
        pattern_ids = list(map(_PATTERN_ID, found))
        present = set(pattern_ids)
        context = _Context(fields, haystack, found, pattern_ids, bases, owners)
        if self._special_patterns and not present.isdisjoint(self._special_patterns):
            present.update(self._check_special(context))
        return present, context

    def _check_special(self, context: _Context) -> dict[int, TermHits]:
        """Hits of the keys that need a check (wildcards, case, shared patterns)."""
        special = self._special
        hits: dict[int, TermHits] = {}
        haystack = context.haystack
        bases = context.bases
        checked = compress(context.found, map(self._special_patterns.__contains__, context.pattern_ids))
        for pattern_id, start, end in checked:
            slot = bisect_right(bases, start) - 1
            base = bases[slot]
            field_index = context.owners[slot]
            cased_text = context.fields[field_index].cased
            start -= base
            for key_id, wildcard, cased in special[pattern_id]:
                # A wildcard runs to the end of its word (a field's scan text ends with a
                # space); others end before their pad.
                hit_end = (haystack.find(" ", end) if wildcard else end - 1) - 1 - base
                if cased is not None and cased_text[start : start + len(cased)] != cased:
                    continue
                found_hits = hits.get(key_id)
                if found_hits is None:
                    hits[key_id] = [(field_index, start, hit_end)]
                else:
                    found_hits.append((field_index, start, hit_end))
        context.special = hits
        return hits

    def match(self, article: Article) -> list[Match]:
        """The rules that fire on ``article``, in rule order, each with its evidence."""
        fields = fold_fields(article)
        present, context = self.scan(fields)
        if not present:
            return []
        # Candidates: the clauses listed under a key present, and under a pair present
        # (entries hash by identity: deduplicating them reads no int objects). Lookups
        # are in C: itemgetter(*keys) looks every key up without a call, and a key listing
        # no clause of its own, or heading no pair, maps to an empty (false) tuple or
        # partner set, which ``filter`` drops before anything iterates it.
        if len(present) > 1:
            lookup = itemgetter(*present)
            candidates: set[_Entry] = set(chain.from_iterable(filter(None, lookup(self._own_entries))))
            parts = lookup(self._partner_keys)
        else:
            key = next(iter(present))
            candidates = set(self._own_entries[key])
            parts = (self._partner_keys[key],)
        for partners in filterfalse(present.isdisjoint, filter(None, parts)):
            pairs = self._pairs_of[id(partners)]
            candidates.update(chain.from_iterable(map(pairs.__getitem__, partners.intersection(present))))
        # Clauses that hold (exact) or may hold (necessary predicate, evaluated below), by
        # rule, and the keys whose hits that takes.
        fired: dict[int, list[_Entry]] = {}
        needed: set[int] = set()
        for entry in candidates:
            check = entry.check
            if check is None or check(present):
                needed.update(entry.keys)
                group = fired.get(entry.index)
                if group is None:
                    fired[entry.index] = [entry]
                else:
                    group.append(entry)
        if not fired:
            return []
        hits = context.load_keys(needed)
        matches: list[Match] = []
        cache: dict[Span, Hit] = {}
        for rule_index in sorted(fired) if len(fired) > 1 else fired:
            group = fired[rule_index]
            entry = group[0]
            single = entry.single
            if single is not None and len(group) == 1:
                # The usual case: one exact clause that holds, with one positive term,
                # whose hits are its evidence. Its Hits are not shared through ``cache``:
                # other rules rarely cite the same hit, and the lookup costs more than
                # the odd duplicate Hit.
                key_id, label = single
                found = hits[key_id]
                if len(found) == 1:
                    field_index, start, end = found[0]
                    evidence: tuple[Hit, ...] = (_make_hit(label, field_index, start, end, fields),)
                else:
                    evidence = _to_hits([(label, *each) for each in found], fields, cache)
            else:
                if len(group) == 1 and entry.node is None:
                    # One exact clause that holds: every hit of its positive terms.
                    spans: list[Span] | None = [(label, f, s, e) for key_id, label in entry.terms for f, s, e in hits.get(key_id, ())]
                else:
                    spans = self._clause_spans(group, hits, context)
                    if spans is None:
                        continue
                evidence = _to_hits(spans, fields, cache)  # type: ignore[arg-type]
            # Match(...) without the frozen dataclass __init__ (see _make_hit).
            match = _new(Match)
            _set_rule(match, entry.rule)
            _set_hits(match, evidence)
            matches.append(match)
        return matches

    def _clause_spans(self, group: list[_Entry], hits: dict[int, TermHits], context: _Context) -> list[Span] | None:
        """The evidence of the clauses of one rule that hold, or None if none does."""
        spans: list[Span] | None = None
        for entry in group:
            if entry.node is None:
                result = [(label, f, s, e) for key_id, label in entry.terms for f, s, e in hits.get(key_id, ())]
            else:
                evaluator = entry.evaluator
                if evaluator is None:
                    evaluator = entry.evaluator = _compile_node(entry.node, self._key_ids)
                result = evaluator(context)
                if result is None:
                    continue
            if spans is None:
                spans = result
            else:
                spans.extend(result)
        return spans


class _Entry:
    """What matching needs about one clause of one rule, in one object: the rule's index
    (rule order) and the rule, the predicate to check on the keys present (None when a
    pair of the clause being present proves it holds), the positive (key id, label) terms
    of an exact clause, the key ids whose hits the clause needs, and for a clause whose
    predicate is only a necessary condition its query (else None) and evaluator (built on
    first use: most clauses are never candidates, and this halves the time to load)."""

    __slots__ = ("index", "rule", "check", "terms", "keys", "node", "evaluator", "single")

    def __init__(self, index: int, rule: Rule, check: Any, terms: Any, keys: frozenset[int], node: Node | None) -> None:
        self.index = index
        self.rule = rule
        self.check = check
        self.terms = terms
        self.keys = keys
        self.node = node
        self.evaluator: _Evaluator | None = None
        #: The (key id, label) of an exact clause with one positive term (whose hits are
        #: its evidence), else None.
        self.single: tuple[int, str] | None = terms[0] if node is None and len(terms) == 1 else None


def _cover(pairs: set[tuple[int, int]]) -> set[int]:
    """Keys such that every pair has one (greedy vertex cover: the key in most pairs not
    yet covered first, ties by smaller key id for determinism)."""
    heads = {a for a, b in pairs if a == b}
    edges: dict[int, set[int]] = {}
    for a, b in pairs:
        if a != b and a not in heads and b not in heads:
            edges.setdefault(a, set()).add(b)
            edges.setdefault(b, set()).add(a)
    heap = [(-len(partners), key) for key, partners in edges.items()]
    heapq.heapify(heap)
    while heap:
        degree, key = heapq.heappop(heap)
        partners = edges[key]
        if not partners:
            continue
        if -degree != len(partners):
            heapq.heappush(heap, (-len(partners), key))
            continue
        heads.add(key)
        for other in partners:
            edges[other].discard(key)
        partners.clear()
    return heads




#: How one clause (top-level OR alternative) of a rule is checked and what it proves:
#: (predicate on the keys present, positive (key id, label) terms, key ids whose hits it
#: needs, None when the predicate is exact else the clause's query for the evaluator,
#: the clause's index in the rule).
_Plan = tuple[Callable[[set[int]], bool], tuple[tuple[int, str], ...], frozenset[int], "Node | None", int]


def _plan(
    node: Node, clause: _Clause, predicate: Callable[[set[int]], bool], key_ids: dict[TermKey, int], index: int
) -> _Plan:
    """The plan of one clause. An exact clause (pure boolean over unscoped terms) that holds
    has as evidence every hit of every term not under a NOT, which is what the reference
    evaluator returns for it (AND, OR and K OF keep the evidence of every true child)."""
    if clause.exact:
        terms = tuple(dict.fromkeys((key_ids[term.key], term.label) for term in _positive_terms(node)))
        return predicate, terms, frozenset(key_id for key_id, _label in terms), None, index
    return predicate, (), frozenset(key_ids[term.key] for term in iter_terms(node)), node, index


def _positive_terms(node: Node) -> list[Term]:
    """The terms of ``node`` not under a NOT, in query order."""
    if isinstance(node, Term):
        return [node]
    if isinstance(node, Not):
        return []
    if isinstance(node, Near):
        return _positive_terms(node.left) + _positive_terms(node.right)
    return [term for child in node.children for term in _positive_terms(child)]


#: Most index pairs per clause (beyond this a rule is indexed under single keys).
_MAX_PAIRS = 64


def fold_fields(article: Article) -> list[FoldedText]:
    """Every field of an article folded (:data:`monitor.model.FIELDS` order)."""
    return [fold(article.field_text(name)) for name in FIELDS]


def _or_children(node: Node) -> list[Node]:
    """The alternatives of a query: the children of a top-level OR, flattened."""
    if isinstance(node, Or):
        return [leaf for child in node.children for leaf in _or_children(child)]
    return [node]


class _Clause:
    """Conditions on the keys present: all ``singles``, one of each of ``groups``, at
    least k of each ``kofs`` groups, none of ``negatives``."""

    __slots__ = ("singles", "groups", "kofs", "negatives", "exact")

    def __init__(self) -> None:
        #: True when the conditions are equivalent to the clause (else only necessary).
        self.exact = False
        self.singles: set[int] = set()
        self.groups: list[frozenset[int]] = []
        self.kofs: list[tuple[int, tuple[frozenset[int], ...]]] = []
        self.negatives: set[int] = set()

    def add_group(self, group: frozenset[int]) -> None:
        if len(group) == 1:
            self.singles.update(group)
        else:
            self.groups.append(group)

    def add_kof(self, k: int, groups: tuple[frozenset[int], ...]) -> None:
        if k == 1:
            self.add_group(frozenset().union(*groups))
        elif k == len(groups):
            for group in groups:
                self.add_group(group)
        else:
            self.kofs.append((k, groups))

    def index_pairs(self, lengths: list[int]) -> tuple[set[tuple[int, int]], bool]:
        """Pairs of keys such that, whenever the clause holds, both keys of one pair occur:
        a key from each of the two most selective conditions (few keys, long patterns)
        when there are two, else each key of the only condition with itself. Also whether
        both keys of any one pair occurring proves that the clause holds (an exact clause
        without NOT whose conditions are just the one or two the pairs are made from, or
        only "2 OF" groups)."""
        options: list[tuple[int, int, frozenset[int]]] = [(1, -lengths[key], frozenset((key,))) for key in self.singles]
        options.extend((len(group), 0, group) for group in self.groups)
        for k, groups in self.kofs:
            # If k of n groups occur, one of any n - k + 1 of them does.
            union = frozenset().union(*sorted(groups, key=len)[: len(groups) - k + 1])
            options.append((len(union), 0, union))
        options.sort(key=lambda option: option[:2])
        simple = self.exact and not self.negatives
        best = options[0][2]
        if len(options) >= 2 and len(best) * len(options[1][2]) <= _MAX_PAIRS:
            return {(a, b) for a in best for b in options[1][2]}, simple and len(options) == 2 and not self.kofs
        if len(options) == 1 and self.kofs:
            # The only condition is k >= 2 of n groups: two groups occur.
            k, groups = self.kofs[0]
            pairs = {(a, b) for i, first in enumerate(groups) for second in groups[i + 1 :] for a in first for b in second}
            if len(pairs) <= _MAX_PAIRS:
                return pairs, simple and k == 2
        return {(key, key) for key in best}, simple and len(options) == 1 and not self.kofs

    def predicate(self) -> Callable[[set[int]], bool]:
        singles = frozenset(self.singles)
        groups = tuple(self.groups)
        kofs = tuple(self.kofs)
        negatives = frozenset(self.negatives)
        if not groups and not kofs and not negatives:
            return singles.issubset
        if not singles and len(groups) == 1 and not kofs and not negatives:
            group = groups[0]
            return lambda present: not group.isdisjoint(present)
        if len(groups) == 1 and not kofs and not negatives:
            group = groups[0]
            return lambda present: singles.issubset(present) and not group.isdisjoint(present)
        if not groups and not kofs:
            return lambda present: singles.issubset(present) and negatives.isdisjoint(present)
        if not singles and not groups and not negatives and len(kofs) == 1:
            k, kof_groups = kofs[0]
            if all(len(group) == 1 for group in kof_groups) and len(set(kof_groups)) == len(kof_groups):
                keys = frozenset().union(*kof_groups)
                return lambda present: len(keys.intersection(present)) >= k

        def general(present: set[int]) -> bool:
            if not singles.issubset(present) or not negatives.isdisjoint(present):
                return False
            for group in groups:
                if group.isdisjoint(present):
                    return False
            for k, kof_groups in kofs:
                if sum(not group.isdisjoint(present) for group in kof_groups) < k:
                    return False
            return True

        return general


def _clause(node: Node, key_ids: dict[TermKey, int]) -> _Clause | None:
    """The exact conditions of a pure boolean query, else necessary ones (None: none)."""
    clause = _Clause()
    if _exact(node, key_ids, clause):
        clause.exact = True
    else:
        clause = _Clause()
        for k, groups in required_groups(node):
            clause.add_kof(k, tuple(frozenset(key_ids[key] for key in group) for group in groups))
    if not clause.singles and not clause.groups and not clause.kofs:
        return None
    return clause


def _exact(node: Node, key_ids: dict[TermKey, int], clause: _Clause) -> bool:
    """Add the conditions equivalent to ``node`` to ``clause``; False if there are none
    (NEAR, field scopes, NOT or K OF over anything but terms and OR-groups of terms)."""
    if isinstance(node, And):
        return all(_exact(child, key_ids, clause) for child in node.children)
    if isinstance(node, Not):
        group = _term_group(node.child, key_ids)
        if group is None:
            return False
        clause.negatives.update(group)
        return True
    if isinstance(node, AtLeast):
        groups = tuple(_term_group(child, key_ids) for child in node.children)
        if any(group is None for group in groups):
            return False
        clause.add_kof(node.k, groups)  # type: ignore[arg-type]
        return True
    group = _term_group(node, key_ids)
    if group is None:
        return False
    clause.add_group(group)
    return True


def _term_group(node: Node, key_ids: dict[TermKey, int]) -> frozenset[int] | None:
    """The keys of an unscoped term or an OR of such terms (true iff one occurs)."""
    if isinstance(node, Term):
        return frozenset((key_ids[node.key],)) if len(node.fields) == len(FIELDS) else None
    if isinstance(node, Or):
        keys: set[int] = set()
        for child in node.children:
            group = _term_group(child, key_ids)
            if group is None:
                return None
            keys.update(group)
        return frozenset(keys)
    return None


_SPAN_ORDER = itemgetter(1, 2, 3, 0)


def _to_hits(spans: list[Span], fields: Sequence[FoldedText], cache: dict[Span, Hit]) -> tuple[Hit, ...]:
    """Evidence in folded offsets -> unique Hits in original offsets, in text order.

    ``cache`` holds the Hits already built for this article (rules share terms; a Hit is
    immutable, so matches may share one)."""
    if len(spans) == 1:
        span = spans[0]
        hit = cache.get(span)
        if hit is None:
            hit = cache[span] = _hit(span, fields)
        return (hit,)
    hits = []
    for span in sorted(set(spans), key=_SPAN_ORDER):
        hit = cache.get(span)
        if hit is None:
            hit = cache[span] = _hit(span, fields)
        hits.append(hit)
    return tuple(hits)


def _hit(span: Span, fields: Sequence[FoldedText]) -> Hit:
    """The Hit of one piece of evidence, in original offsets."""
    return _make_hit(*span, fields)


def _make_hit(label: str, field_index: int, start: int, end: int, fields: Sequence[FoldedText]) -> Hit:
    text = fields[field_index]
    if text.maps:
        start, end = text.original_span(start, end)
    # Hit(...) without the frozen dataclass __init__ (five object.__setattr__ calls by
    # name): the slots are set through their descriptors. Same object, half the time.
    hit = _new(Hit)
    _set_term(hit, label)
    _set_field(hit, FIELDS[field_index])
    _set_start(hit, start)
    _set_end(hit, end)
    _set_text(hit, text.original[start:end])
    return hit


_new = object.__new__
_set_term = Hit.term.__set__  # type: ignore[attr-defined]
_set_field = Hit.field.__set__  # type: ignore[attr-defined]
_set_start = Hit.start.__set__  # type: ignore[attr-defined]
_set_end = Hit.end.__set__  # type: ignore[attr-defined]
_set_text = Hit.text.__set__  # type: ignore[attr-defined]
_set_rule = Match.rule.__set__  # type: ignore[attr-defined]
_set_hits = Match.hits.__set__  # type: ignore[attr-defined]
