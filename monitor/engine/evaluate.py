"""Evaluating a rule's query on one article: the reference semantics, and its evidence.

The presearcher (:mod:`monitor.engine.presearch`) finds the candidate clauses of an
article; those whose keys alone do not prove them are evaluated here. A query compiles
to nested closures (:func:`compile_node`), each returning the evidence it found
(:data:`Span` s) or None when false; they read the article's term hits from a
:class:`Context`. ``NEAR`` is linear in the occurrences (:func:`_near_evidence`).
Evidence becomes :class:`~monitor.model.Hit` s in original offsets (:func:`to_hits`).
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from functools import cache
from itertools import compress, islice
from operator import itemgetter
from typing import Any

from monitor.engine.languages import arabic_variants
from monitor.engine.query import And, AtLeast, Lang, Near, Node, Not, Or, Term, TermKey
from monitor.engine.text import WORD_START, FoldedText, fold, is_word_char, mark_class
from monitor.model import FIELDS, Article, Hit

__all__ = [
    "MAX_HITS_PER_TERM",
    "Context",
    "Evaluator",
    "Span",
    "TermHits",
    "compile_node",
    "find_term_hits",
    "fold_fields",
    "make_hit",
    "to_hits",
]

#: The first hits of each term in each field that matching considers, in text order;
#: later ones are ignored (by NEAR, field scopes and as evidence), so one article cannot
#: cost more than this many hits a term. Whether a term occurs at all is not limited.
MAX_HITS_PER_TERM = 1000

#: One piece of evidence: (term label, field index, folded start, folded end).
Span = tuple[str, int, int, int]
#: Positions of a term in an article: (field index, folded start, folded end).
TermHits = list[tuple[int, int, int]]

# Where a word for NEAR distances starts (a word's marks and an apostrophe inside it
# do not start another: "Putin's summit" is two words, and so is "भारतीय संसद").
_WORD = WORD_START


class Context:
    """Per-article state shared by the evaluators of all candidate rules."""

    __slots__ = ("bases", "fields", "found", "haystack", "hits", "lang", "owners", "pattern_ids", "special", "words")

    def __init__(
        self,
        fields: Sequence[FoldedText],
        haystack: str,
        found: list[tuple[int, int, int]],
        pattern_ids: list[int],
        bases: list[int],
        owners: list[int],
        lang: str | None = None,
    ) -> None:
        self.fields = fields
        #: The article's language (ISO 639-1), None when unknown.
        self.lang = lang
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


#: An evaluator returns None when false, else the evidence (empty for a true NOT).
Evaluator = Callable[[Context], "list[Span] | None"]


@cache
def _field_indexes(fields: tuple[str, ...]) -> frozenset[int]:
    return frozenset(FIELDS.index(name) for name in fields)


def compile_node(node: Node, key_ids: dict[TermKey, int]) -> Evaluator:
    """Turn a query into nested closures (faster than walking the query per article)."""
    compiler = _COMPILERS.get(type(node))
    if compiler is None:
        raise TypeError(f"unknown query node {node!r}")
    return compiler(node, key_ids)


def _compile_term(node: Term, key_ids: dict[TermKey, int]) -> Evaluator:
    key_id = key_ids[node.key]
    label = node.label
    allowed = _field_indexes(node.fields)
    every_field = len(allowed) == len(FIELDS)

    def term(ctx: Context) -> list[Span] | None:
        found = ctx.hits.get(key_id)
        if not found:
            return None
        spans = [(label, f, s, e) for f, s, e in found if every_field or f in allowed]
        return spans or None

    return term


def _compile_lang(node: Lang, _key_ids: dict[TermKey, int]) -> Evaluator:
    codes = node.codes
    return lambda ctx: [] if ctx.lang in codes else None


def _compile_not(node: Not, key_ids: dict[TermKey, int]) -> Evaluator:
    inner = compile_node(node.child, key_ids)
    return lambda ctx: [] if inner(ctx) is None else None


def _compile_and(node: And, key_ids: dict[TermKey, int]) -> Evaluator:
    parts = [compile_node(child, key_ids) for child in node.children]

    def conjunction(ctx: Context) -> list[Span] | None:
        spans: list[Span] = []
        for part in parts:
            result = part(ctx)
            if result is None:
                return None
            spans.extend(result)
        return spans

    return conjunction


def _compile_or(node: Or, key_ids: dict[TermKey, int]) -> Evaluator:
    # The terms of a named list (hundreds, over ten languages) are one part, which looks
    # only at the keys the article has: a part per term would run every one of them.
    terms = [child for child in node.children if isinstance(child, Term)]
    parts = [compile_node(child, key_ids) for child in node.children if not isinstance(child, Term)]
    if len(terms) > 1:
        parts.insert(0, _terms_part(terms, key_ids))
    elif terms:
        parts.insert(0, compile_node(terms[0], key_ids))

    def disjunction(ctx: Context) -> list[Span] | None:
        spans: list[Span] | None = None
        for part in parts:  # no short-circuit: every true branch is evidence
            result = part(ctx)
            if result is not None:
                # Every evaluator returns a list of its own, so the first one is extended
                # in place (``spans + result`` would copy the evidence once per branch).
                if spans is None:
                    spans = result
                else:
                    spans.extend(result)
        return spans

    return disjunction


def _terms_part(terms: list[Term], key_ids: dict[TermKey, int]) -> Evaluator:
    """The evidence of any of ``terms`` (an OR of them): the hits of those of their keys
    the article has, each under the label of every term with that key, in its fields."""
    by_key: dict[int, list[tuple[str, frozenset[int] | None]]] = {}
    for term in terms:
        allowed = _field_indexes(term.fields)
        by_key.setdefault(key_ids[term.key], []).append((term.label, None if len(allowed) == len(FIELDS) else allowed))
    keys = frozenset(by_key)

    def any_term(ctx: Context) -> list[Span] | None:
        hits = ctx.hits
        spans: list[Span] = []
        for key_id in keys.intersection(hits) if len(hits) < len(keys) else [k for k in hits if k in keys]:
            found = hits[key_id]
            for label, allowed in by_key[key_id]:
                spans.extend([(label, f, s, e) for f, s, e in found if allowed is None or f in allowed])
        return spans or None

    return any_term


def _compile_at_least(node: AtLeast, key_ids: dict[TermKey, int]) -> Evaluator:
    parts = [compile_node(child, key_ids) for child in node.children]
    k = node.k

    def at_least(ctx: Context) -> list[Span] | None:
        spans: list[Span] = []
        count = 0
        for part in parts:
            result = part(ctx)
            if result is not None:
                count += 1
                spans.extend(result)
        return spans if count >= k else None

    return at_least


def _compile_near(node: Near, key_ids: dict[TermKey, int]) -> Evaluator:
    if isinstance(node.left, AtLeast) or isinstance(node.right, AtLeast):
        return _near_at_least(node, key_ids)
    distance = node.distance
    left = compile_node(node.left, key_ids)
    right = compile_node(node.right, key_ids)

    def near(ctx: Context) -> list[Span] | None:
        left_spans = left(ctx)
        if left_spans is None:
            return None
        right_spans = right(ctx)
        if right_spans is None:
            return None
        return _near_evidence(ctx, left_spans, right_spans, distance)

    return near


def _near_at_least(node: Near, key_ids: dict[TermKey, int]) -> Evaluator:
    """NEAR with a ``K OF`` side: the near evidence of all its items together, true only
    if at least K of the items have a span in it (each occurs near the other side)."""
    sides = []
    for operand in (node.left, node.right):
        if isinstance(operand, AtLeast):
            sides.append((operand.k, [compile_node(child, key_ids) for child in operand.children]))
        else:
            sides.append((0, [compile_node(operand, key_ids)]))
    distance = node.distance

    def near(ctx: Context) -> list[Span] | None:
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


_COMPILERS: dict[type, Callable[[Any, dict[TermKey, int]], Evaluator]] = {
    Term: _compile_term,
    Lang: _compile_lang,
    Not: _compile_not,
    And: _compile_and,
    Or: _compile_or,
    AtLeast: _compile_at_least,
    Near: _compile_near,
}


#: Up to this many (left, right) pairs, NEAR checks every pair; beyond it, each span
#: only its nearest partner on either side (see :func:`_near_evidence`).
_PAIRWISE = 16
#: From this many spans in one field, NEAR counts words with the field's word index
#: (:meth:`Context.word_starts`) rather than by scanning each gap.
_INDEXED_SPANS = 16


def _near_evidence(ctx: Context, left_spans: list[Span], right_spans: list[Span], distance: int) -> list[Span] | None:
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


def _within(ctx: Context, a: Span, b: Span, distance: int) -> bool:
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
    ctx: Context, field_index: int, text: str, starts: list[int] | None, gap_start: int, gap_end: int, distance: int
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


def find_term_hits(key: TermKey, text: FoldedText, field_index: int = 0, lang: str | None = None) -> TermHits:
    """Every hit of one term in one folded field, found with a regex instead of the automaton.

    The reference semantics of a term (whole words, punctuation counts as a space, a
    wildcard's last word may continue, a case-sensitive term must match ``text.cased``,
    an Arabic term's first word may carry attached prefixes, an entry of a language
    section counts only in an article of that language: ``lang``);
    tests check that the matcher agrees.
    """
    hits: TermHits = []
    if key.lang is not None and key.lang != lang:
        return hits
    # Any punctuation in the pattern matches any character of the text that is not part of
    # a word (a letter, a digit or a mark: :func:`monitor.engine.text.is_word_char`).
    marks = mark_class()
    word, other = f"(?:[^\\W_]|[{marks}])", f"(?:[^\\w{marks}]|_)"
    forms = []
    for form in arabic_variants(key.pattern) if key.clitics else (key.pattern,):
        forms.append("".join(re.escape(char) if is_word_char(char) else other for char in form))
    tail = f"{word}*" if key.wildcard else f"(?!{word})"
    regex = re.compile(f"(?<![^\\W_])(?<![{marks}])(?=((?:" + "|".join(forms) + ")" + tail + "))")
    for found in regex.finditer(text.lower):
        start, end = found.start(1), found.end(1)
        if key.cased is not None and text.cased[start : start + len(key.cased)] != key.cased:
            continue
        hits.append((field_index, start, end))
    return hits


def fold_fields(article: Article) -> list[FoldedText]:
    """Every field of an article folded (:data:`monitor.model.FIELDS` order)."""
    return [fold(article.field_text(name)) for name in FIELDS]


_SPAN_ORDER = itemgetter(1, 2, 3, 0)


def to_hits(spans: list[Span], fields: Sequence[FoldedText], cache: dict[Span, Hit]) -> tuple[Hit, ...]:
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
    return make_hit(*span, fields)


def make_hit(label: str, field_index: int, start: int, end: int, fields: Sequence[FoldedText]) -> Hit:
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
_set_term = vars(Hit)["term"].__set__
_set_field = vars(Hit)["field"].__set__
_set_start = vars(Hit)["start"].__set__
_set_end = vars(Hit)["end"].__set__
_set_text = vars(Hit)["text"].__set__
