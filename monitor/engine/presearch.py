"""The presearcher: one scan of an article finds the few rules worth evaluating.

How an article is matched:

1. each field is folded (:func:`monitor.engine.text.fold`);
2. one Aho-Corasick automaton holding the folded pattern of every distinct term of every
   enabled rule scans each field once; raw hits are checked for whole-word boundaries,
   wildcard extension and, for case-sensitive terms, the original case;
3. only rules owning at least one term that hit are evaluated (their boolean query runs
   against the term hits, :mod:`monitor.engine.evaluate`); the loader rejects queries
   that could be true with none of their terms present, so skipping the other rules
   never loses a match.

The cost per article is the scan (linear in the text, nearly flat in the number of
patterns) plus the evaluation of the few rules that have candidate terms.
"""

from __future__ import annotations

import heapq
from bisect import bisect_right
from collections.abc import Callable, Sequence
from itertools import chain, compress, filterfalse
from operator import itemgetter
from typing import Any

import ahocorasick_rs

from monitor.engine.evaluate import (
    Context,
    Evaluator,
    Span,
    TermHits,
    compile_node,
    fold_fields,
    make_hit,
    to_hits,
)
from monitor.engine.query import And, AtLeast, CompiledRule, Lang, Near, Node, Not, Or, Term, TermKey, iter_terms, required_groups
from monitor.engine.text import FoldedText, scan_text
from monitor.model import FIELDS, Article, Hit, Match, Rule

__all__ = ["Matcher"]

_PATTERN_ID = itemgetter(0)
_new = object.__new__
_set_rule = vars(Match)["rule"].__set__
_set_hits = vars(Match)["hits"].__set__


class Matcher:
    """All enabled rules compiled for matching (see the module docstring)."""

    def __init__(self, compiled: Sequence[CompiledRule]) -> None:
        self.rules = tuple(item.rule for item in compiled)
        self._queries = tuple(item.query for item in compiled)
        ids = _KeyIds([iter_terms(query) for query in self._queries])
        self._key_ids = ids.key_ids
        self.keys: tuple[TermKey, ...] = ids.by_id()
        self._special = {pattern_id: tuple(entries) for pattern_id, entries in ids.special.items()}
        self._special_patterns = frozenset(ids.special)
        #: The special table of each article language met (see :meth:`_special_for`).
        self._special_by_lang: dict[str | None, tuple[dict[int, tuple[tuple[int, bool, str | None, str | None], ...]], frozenset[int]]] = {}
        self._automaton = (
            ahocorasick_rs.AhoCorasick(list(ids.patterns), matchkind=ahocorasick_rs.MatchKind.Standard)
            if ids.patterns
            else None
        )
        index = _PairIndex(ids.count)
        for entry, pairs in self._clause_entries(ids):
            index.add(entry, pairs)
        self._own_entries, self._partner_keys, self._pairs_of = index.build()

    def _clause_entries(self, ids: _KeyIds) -> list[tuple[_Entry, set[tuple[int, int]]]]:
        """Each clause (top-level OR alternative) of each rule, with the key pairs it is
        listed under.

        A clause gets a predicate on the set of key ids present in an article: exact for
        pure boolean clauses (terms, AND, OR, NOT, K OF over unscoped terms), else a
        necessary condition; clauses passing a necessary one are evaluated in full (the
        evaluator is the reference, and produces the evidence). A rule fires when one of
        its clauses holds; its evidence is that of every clause that holds.
        """
        lengths = ids.lengths()
        entries: list[tuple[_Entry, set[tuple[int, int]]]] = []
        for rule_index, query in enumerate(self._queries):
            rule = self.rules[rule_index]
            nodes = _or_children(query)
            clauses = [_clause(node, ids.key_ids) for node in nodes]
            for clause_index, (node, clause) in enumerate(zip(nodes, clauses)):
                if clause is None:
                    raise ValueError(f"rule {rule.id!r} can match without any of its terms")
                pairs, implied = clause.index_pairs(lengths)
                predicate = clause.predicate()
                _check, terms, keys, evaluated, _index = _plan(node, clause, predicate, ids.key_ids, clause_index)
                entries.append((_Entry(rule_index, rule, None if implied else predicate, terms, keys, evaluated), pairs))
        return entries

    def pairs_headed_by(self, key_id: int) -> dict[int, tuple[_Entry, ...]]:
        """The clause entries listed under each pair (key_id, partner) (for tests)."""
        return self._pairs_of.get(id(self._partner_keys[key_id]), {})

    def scan(self, fields: Sequence[FoldedText], lang: str | None = None) -> tuple[set[int], Context]:
        """Scan every field once: the key ids present, and the context to evaluate with
        (``lang``: the article's language, which keys of a language section need).

        The fields' padded scan texts are joined with NUL (which no scan text or pattern
        contains, so no match spans two fields) and searched in one call: the automaton
        releases the GIL for every search, and each time it must be won back from the
        daemon's other threads, which can hold the event loop up.
        """
        automaton = self._automaton
        if automaton is None:  # no enabled rule has a term: nothing to scan for
            return set(), Context(fields, "", [], [], [], [], lang)
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
        context = Context(fields, haystack, found, pattern_ids, bases, owners, lang)
        special, special_patterns = self._special_for(lang)
        if special_patterns and not present.isdisjoint(special_patterns):
            present.update(self._check_special(context, special, special_patterns))
        return present, context

    def _special_for(
        self, lang: str | None
    ) -> tuple[dict[int, tuple[tuple[int, bool, str | None, str | None], ...]], frozenset[int]]:
        """The special table without the keys of other languages' sections, built once per
        article language met: the hits of a pattern only other languages' entries have
        (the same words in nine sections) are never looked at."""
        found = self._special_by_lang.get(lang)
        if found is None:
            table = {
                pattern_id: kept
                for pattern_id, entries in self._special.items()
                if (kept := tuple(entry for entry in entries if entry[3] is None or entry[3] == lang))
            }
            found = self._special_by_lang[lang] = (table, frozenset(table))
        return found

    def _check_special(
        self,
        context: Context,
        special: dict[int, tuple[tuple[int, bool, str | None, str | None], ...]],
        special_patterns: frozenset[int],
    ) -> dict[int, TermHits]:
        """Hits of the keys that need a check (wildcards, case, shared patterns), of the
        article's language (``special``: see :meth:`_special_for`)."""
        hits: dict[int, TermHits] = {}
        haystack = context.haystack
        bases = context.bases
        checked = compress(context.found, map(special_patterns.__contains__, context.pattern_ids))
        for pattern_id, start, end in checked:
            slot = bisect_right(bases, start) - 1
            base = bases[slot]
            field_index = context.owners[slot]
            cased_text = context.fields[field_index].cased
            start -= base
            for key_id, wildcard, cased, _lang in special[pattern_id]:
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
        present, context = self.scan(fields, article.lang)
        if not present:
            return []
        fired, needed = _holding(self._candidates(present), present)
        if not fired:
            return []
        hits = context.load_keys(needed)
        matches: list[Match] = []
        cache: dict[Span, Hit] = {}
        for rule_index in sorted(fired) if len(fired) > 1 else fired:
            group = fired[rule_index]
            single = group[0].single
            if single is not None and len(group) == 1:
                # The usual case: one exact clause that holds, with one positive term, whose
                # hits are its evidence. Its Hits are not shared through ``cache``: other rules
                # rarely cite the same hit, and the lookup costs more than the odd duplicate Hit.
                key_id, label = single
                found = hits[key_id]
                if len(found) == 1:
                    field_index, start, end = found[0]
                    evidence: tuple[Hit, ...] | None = (make_hit(label, field_index, start, end, fields),)
                else:
                    evidence = to_hits([(label, *each) for each in found], fields, cache)
            else:
                evidence = self._evidence(group, hits, context, fields, cache)
                if evidence is None:
                    continue
            # Match(...) without the frozen dataclass __init__ (see evaluate.make_hit).
            match = _new(Match)
            _set_rule(match, group[0].rule)
            _set_hits(match, evidence)
            matches.append(match)
        return matches

    def _candidates(self, present: set[int]) -> set[_Entry]:
        """The clauses listed under a key present, and under a pair present.

        Entries hash by identity: deduplicating them reads no int objects. Lookups are in
        C: itemgetter(*keys) looks every key up without a call, and a key listing no
        clause of its own, or heading no pair, maps to an empty (false) tuple or partner
        set, which ``filter`` drops before anything iterates it.
        """
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
        return candidates

    def _evidence(
        self, group: list[_Entry], hits: dict[int, TermHits], context: Context, fields: list[FoldedText], cache: dict[Span, Hit]
    ) -> tuple[Hit, ...] | None:
        """The evidence of one rule whose clauses ``group`` hold or may hold (but for one
        exact clause of one term, see :meth:`match`); None if none does."""
        entry = group[0]
        if len(group) == 1 and entry.node is None:
            # One exact clause that holds: every hit of its positive terms.
            spans: list[Span] | None = [(label, f, s, e) for key_id, label in entry.terms for f, s, e in hits.get(key_id, ())]
        else:
            spans = self._clause_spans(group, hits, context)
        return None if spans is None else to_hits(spans, fields, cache)

    def _clause_spans(self, group: list[_Entry], hits: dict[int, TermHits], context: Context) -> list[Span] | None:
        """The evidence of the clauses of one rule that hold, or None if none does."""
        spans: list[Span] | None = None
        for entry in group:
            result: list[Span] | None
            if entry.node is None:
                result = [(label, f, s, e) for key_id, label in entry.terms for f, s, e in hits.get(key_id, ())]
            else:
                evaluator = entry.evaluator
                if evaluator is None:
                    evaluator = entry.evaluator = compile_node(entry.node, self._key_ids)
                result = evaluator(context)
                if result is None:
                    continue
            if spans is None:
                spans = result
            else:
                spans.extend(result)
        return spans


def _holding(candidates: set[_Entry], present: set[int]) -> tuple[dict[int, list[_Entry]], set[int]]:
    """Clauses that hold (exact) or may hold (necessary predicate, evaluated later), by
    rule index, and the keys whose hits that takes."""
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
    return fired, needed


class _KeyIds:
    """Ids for every distinct term key of the rules.

    The plain key (no wildcard, no case, no language, one pattern) of scan pattern ``p``
    has id ``p``, so the automaton's pattern ids are key ids and the set of keys present
    in an article is computed in C. Other keys (wildcards, case-sensitive terms, entries
    of a language section, Arabic terms with their prefixed forms, a second spelling with
    the same scan pattern such as "U.S." and "u s") get ids after the patterns and are
    checked hit by hit. A pattern id with no plain key behind it is referenced by no rule, so
    finding it in an article is harmless.
    """

    def __init__(self, rule_terms: list[list[Term]]) -> None:
        distinct = dict.fromkeys(term.key for terms in rule_terms for term in terms)
        #: Scan pattern -> pattern id (the automaton's order).
        self.patterns: dict[str, int] = {}
        pattern_of: dict[TermKey, tuple[int, ...]] = {}
        plain: dict[int, TermKey] = {}
        for key in distinct:
            pattern_ids = pattern_of[key] = tuple(
                self.patterns.setdefault(pattern, len(self.patterns)) for pattern in key.scan_patterns
            )
            if not key.wildcard and key.cased is None and key.lang is None and not key.clitics and pattern_ids[0] not in plain:
                plain[pattern_ids[0]] = key
        self.key_ids: dict[TermKey, int] = {}
        #: Pattern id -> the (key id, wildcard, cased, language) of the keys checked hit by hit.
        self.special: dict[int, list[tuple[int, bool, str | None, str | None]]] = {}
        next_id = len(self.patterns)
        for key, pattern_ids in pattern_of.items():
            if plain.get(pattern_ids[0]) == key:
                self.key_ids[key] = pattern_ids[0]
            else:
                self.key_ids[key] = next_id
                for pattern_id in pattern_ids:
                    self.special.setdefault(pattern_id, []).append((next_id, key.wildcard, key.cased, key.lang))
                next_id += 1
        #: Key ids are 0..count-1.
        self.count = next_id

    def by_id(self) -> tuple[TermKey, ...]:
        """Every key, at its id. Placed, not sorted: a sort with a C key function holds the
        interpreter for its whole run, while a reload's thread must let the event loop in."""
        by_id: list[Any] = [None] * self.count
        for key, key_id in self.key_ids.items():
            by_id[key_id] = key
        return tuple(by_id)

    def lengths(self) -> list[int]:
        """The pattern length of each key id (longer patterns are more selective)."""
        lengths = [0] * self.count
        for key, key_id in self.key_ids.items():
            lengths[key_id] = len(key.pattern)
        return lengths


class _PairIndex:
    """The two-level candidate index: each clause is listed under pairs of keys (a, b)
    such that whenever it holds both keys of one of its pairs occur, usually one key from
    each of two conditions it needs (a with itself when it has only one). A clause is
    only looked at when the article has one of its own pairs; for most exact clauses
    (one or two conditions, no NOT) that alone proves the clause holds, so no predicate
    runs for them."""

    def __init__(self, count: int) -> None:
        self._count = count
        self._clauses: list[tuple[_Entry, set[tuple[int, int]]]] = []

    def add(self, entry: _Entry, pairs: set[tuple[int, int]]) -> None:
        self._clauses.append((entry, pairs))

    def build(self) -> tuple[list[tuple[_Entry, ...]], list[frozenset[int]], dict[int, dict[int, tuple[_Entry, ...]]]]:
        """(clauses listed under each key alone, each key's partner set, the clauses of
        each pair by the identity of its head's partner set)."""
        # Which key of a pair (a, b) it is listed under is free (both must occur): each key
        # present that heads a pair costs a lookup, so the pairs are oriented to make few
        # keys heads (a greedy vertex cover of the pair graph; static, no article data).
        heads = _cover({pair for _entry, pairs in self._clauses for pair in pairs})
        pair_index: dict[int, dict[int, list[_Entry]]] = {}
        for entry, pairs in self._clauses:
            for a, b in pairs:
                if a not in heads:
                    a, b = b, a
                pair_index.setdefault(a, {}).setdefault(b, []).append(entry)
        # A clause listed under a pair (a, a) is a candidate whenever a occurs, so those
        # are listed per key id (most clauses that fire are such). For pairs of two keys, a
        # key's partners are a frozenset, so a key present costs one list lookup and one
        # ``isdisjoint``, in C; only keys with a partner present go further. Those find the
        # clauses of each pair by the identity of their partner set (each head has its own
        # set object, kept alive by the list).
        own_entries: list[tuple[_Entry, ...]] = [()] * self._count
        no_partners: frozenset[int] = frozenset()
        partner_keys: list[frozenset[int]] = [no_partners] * self._count
        pairs_of: dict[int, dict[int, tuple[_Entry, ...]]] = {}
        for a, inner in pair_index.items():
            # Deduplicated (a clause can list one pair twice only via duplicate keys).
            own = inner.pop(a, None)
            if own:
                own_entries[a] = tuple(dict.fromkeys(own))
            if inner:
                partners = partner_keys[a] = frozenset(inner)
                pairs_of[id(partners)] = {b: tuple(dict.fromkeys(entries)) for b, entries in inner.items()}
        return own_entries, partner_keys, pairs_of


class _Entry:
    """What matching needs about one clause of one rule, in one object: the rule's index
    (rule order) and the rule, the predicate to check on the keys present (None when a
    pair of the clause being present proves it holds), the positive (key id, label) terms
    of an exact clause, the key ids whose hits the clause needs, and for a clause whose
    predicate is only a necessary condition its query (else None) and evaluator (built on
    first use: most clauses are never candidates, and this halves the time to load)."""

    __slots__ = ("check", "evaluator", "index", "keys", "node", "rule", "single", "terms")

    def __init__(self, index: int, rule: Rule, check: Any, terms: Any, keys: frozenset[int], node: Node | None) -> None:
        self.index = index
        self.rule = rule
        self.check = check
        self.terms = terms
        self.keys = keys
        self.node = node
        self.evaluator: Evaluator | None = None
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
    if isinstance(node, (Not, Lang)):
        return []
    if isinstance(node, Near):
        return _positive_terms(node.left) + _positive_terms(node.right)
    return [term for child in node.children for term in _positive_terms(child)]


#: Most index pairs per clause (beyond this a rule is indexed under single keys).
_MAX_PAIRS = 64


def _or_children(node: Node) -> list[Node]:
    """The alternatives of a query: the children of a top-level OR, flattened."""
    if isinstance(node, Or):
        return [leaf for child in node.children for leaf in _or_children(child)]
    return [node]


class _Clause:
    """Conditions on the keys present: all ``singles``, one of each of ``groups``, at
    least k of each ``kofs`` groups, none of ``negatives``."""

    __slots__ = ("exact", "groups", "kofs", "negatives", "singles")

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
            return all(sum(not group.isdisjoint(present) for group in kof_groups) >= k for k, kof_groups in kofs)

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

