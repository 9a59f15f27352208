"""The rule query language: lexer and parser producing a small AST.

Grammar (operators are upper-case; lower-case ``and``/``or``/``not``/``near`` are words)::

    query    := or
    or       := and ("OR" and)*
    and      := near (["AND"] near)*          # juxtaposition means AND
    near     := unary ("NEAR/" N unary)*      # operands: terms, phrases, @lists, OR-groups,
                                              # K OF such items (K of them near the other side)
    unary    := "NOT" unary | primary
    primary  := "lang:" CODE | "lang:(" CODE ("OR" CODE)* ")"   # the article's language
              | FIELD ":" primary
              | "(" or ")"
              | K "OF" "(" or ("," or)* ")"  # at least K of the items are true
              | K "OF" @list                  # at least K distinct entries of the list
              | term

    term     := ["="] (WORD | WORD* | '"' words '"' | '"' words* '"') | @list

Precedence, tightest first: NOT, NEAR/N, AND (explicit or implicit), OR. ``=`` marks a
term case-sensitive; a trailing ``*`` makes it a prefix wildcard. See docs/rules.md.

The full-width forms of ASCII (U+FF01-U+FF5E, what a CJK input method types: ``ＯＲ``,
``（``, ``，``, ``ＮＥＡＲ／３``) are read as the ASCII characters they stand for, as NFKC
reads them, in operators, numbers, list and field names and a term's ``=``, ``*`` and
quotes (:data:`_FULL_WIDTH`); a term keeps them as written in its label.

Parsing happens once per rule at load time; errors are :class:`QueryError` carrying the
offset in the query string, which the loader turns into a file:line:col location.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from monitor.engine.languages import arabic_variants, is_arabic, stem_prefix
from monitor.engine.text import fold, is_word_char, scan_text
from monitor.language.codes import ISO_639_1
from monitor.model import FIELDS, Rule

__all__ = [
    "And",
    "AtLeast",
    "CompiledRule",
    "Lang",
    "Near",
    "Node",
    "Not",
    "Or",
    "QueryError",
    "Term",
    "TermKey",
    "TermSpec",
    "can_match_without_terms",
    "iter_terms",
    "parse_query",
    "parse_term",
    "required_groups",
]

#: Largest NEAR distance accepted; beyond this "NEAR" means "anywhere", so use AND.
MAX_NEAR = 100
#: Shortest prefix a wildcard may have; shorter ones match half the dictionary.
MIN_WILDCARD_PREFIX = 3


#: How deeply parentheses (and K OF groups) and NOT may nest in one query. Real rules
#: nest a few levels; the limit keeps a pathological query (thousands of '(') a
#: located error instead of a RecursionError.
MAX_NESTING = 50


class QueryError(ValueError):
    """A query (or list entry) that does not parse; ``offset`` is a 0-based index into it;
    ``unknown_list``: the list name, when the problem is that no such list is defined."""

    def __init__(self, message: str, offset: int, hint: str | None = None, *, unknown_list: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.offset = offset
        self.hint = hint
        self.unknown_list = unknown_list


@dataclass(frozen=True, slots=True)
class TermKey:
    """What the matcher searches for; identical keys share work across all rules."""

    #: Folded, lower-cased text searched for in the article (a phrase may contain spaces).
    pattern: str
    #: True for ``word*``: the last word may continue with more letters.
    wildcard: bool = False
    #: For case-sensitive terms, the folded text with its case, checked after a hit.
    cased: str | None = None
    #: For an entry of a list's language section, that language (ISO 639-1): the key
    #: counts only in articles of that language (not in one whose language is unknown).
    lang: str | None = None
    #: True for a term in Arabic script: its first word may carry attached prefixes.
    clitics: bool = False

    @property
    def scan_pattern(self) -> str:
        """The string the automaton searches in padded scan text (see ``scan_text``):
        spaces around the term make it match whole words only; a wildcard has no
        trailing space, so the last word may continue."""
        return " " + scan_text(self.pattern) + ("" if self.wildcard else " ")

    @property
    def scan_patterns(self) -> tuple[str, ...]:
        """Every string the automaton searches for this key: :attr:`scan_pattern`, and
        for an Arabic term each of its prefixed forms (:func:`arabic_variants`)."""
        if not self.clitics:
            return (self.scan_pattern,)
        tail = "" if self.wildcard else " "
        return tuple(" " + scan_text(variant) + tail for variant in arabic_variants(self.pattern))


@dataclass(frozen=True, slots=True)
class TermSpec:
    """A parsed term before it is placed in a query: its key and how to display it."""

    key: TermKey
    label: str
    #: For an entry of a list with language sections: the number of the entry it is part
    #: of. An ``all:`` entry and the entries of a language's section that are the same
    #: term in that language share one, and ``K OF`` counts them as one item (in an
    #: article of that language both match one mention). None elsewhere.
    entry: int | None = None


@dataclass(frozen=True, slots=True)
class Term:
    """A leaf: a word, phrase or wildcard, limited to some article fields."""

    key: TermKey
    label: str
    fields: tuple[str, ...] = FIELDS
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Lang:
    """``lang:xx``: true when the article's language is one of ``codes``."""

    codes: frozenset[str]
    offset: int = 0


@dataclass(frozen=True, slots=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    child: Node


@dataclass(frozen=True, slots=True)
class Near:
    """Both sides occur in the same field with at most ``distance`` words between them.

    A side that is ``K OF`` items (``2 OF @leaders NEAR/15 @meet_words``) holds only if
    at least K of its items each occur that near the other side."""

    left: Node
    right: Node
    distance: int


@dataclass(frozen=True, slots=True)
class AtLeast:
    """At least ``k`` of ``children`` are true."""

    k: int
    children: tuple[Node, ...]


Node = Term | And | Or | Not | Near | AtLeast | Lang


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule with its parsed query."""

    rule: Rule
    query: Node

_QUOTES = '"\u201c\u201d\u201e'
#: Full-width ASCII (U+FF01-U+FF5E) to ASCII, one for one (so offsets stay those of the
#: query): NFKC maps each to its ASCII character, and folding does the same to a term.
_FULL_WIDTH = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)}
_WORD_STOP = set(" \t\r\n(),") | set(_QUOTES)
_WORD_END = re.compile(r"[\s" + re.escape("".join(sorted(_WORD_STOP))) + "]")
_QUOTE = re.compile("[" + re.escape(_QUOTES) + "]")
_LIST_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_FIELD_NAME = re.compile(r"[A-Za-z_]+")


def parse_term(raw: str, offset: int = 0, *, case_sensitive: bool = False, lang: str | None = None) -> TermSpec:
    """Parse one term: a word or phrase (spaces allowed), ``=`` prefix, ``*`` suffix.

    Used for query terms and for entries of named lists; ``offset`` is where the term
    starts in its query, for errors. ``lang`` is the language section of a list entry:
    the key counts in that language only, and its last word becomes its stem as a
    prefix where the language has a stemmer (:func:`monitor.engine.languages.stem_prefix`;
    not for a wildcard, a case-sensitive or a quoted entry).
    """
    try:
        return _parse_term(raw, case_sensitive, lang)
    except QueryError as exc:
        raise QueryError(exc.message, offset + exc.offset, exc.hint) from None


@lru_cache(maxsize=1 << 16)
def _parse_term(raw: str, case_sensitive: bool, lang: str | None = None) -> TermSpec:
    # Cached: large rule sets repeat the same entities in many rules.
    offset = 0
    text = raw.strip()
    label = text
    if not text.isascii():
        text = text.translate(_FULL_WIDTH)  # folding would make the same letters of them
    if text.startswith("="):
        case_sensitive = True
        text = text[1:].strip()
    quoted = len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES
    if quoted:
        text = text[1:-1].strip()
    wildcard = text.endswith("*")
    if wildcard:
        text = text[:-1]
    if "*" in text:
        raise QueryError(
            f"wildcard '*' in the middle of {label!r}",
            offset,
            "only a trailing '*' is supported, as in sanction*",
        )
    folded = fold(text)
    # Terms start and end at a letter or digit: surrounding punctuation ("U.S." -> "u.s")
    # is a word separator like any other, and boundaries are checked at the letters.
    start, end = 0, len(folded.lower)
    while start < end and not is_word_char(folded.lower[start]):
        start += 1
    while end > start and not is_word_char(folded.lower[end - 1]):
        end -= 1
    if start == end:
        raise QueryError(f"term {label!r} has no letters or digits", offset, "quote a real word or phrase")
    pattern = folded.lower[start:end]
    if wildcard and (len(pattern) < MIN_WILDCARD_PREFIX or not is_word_char(text.rstrip()[-1:] or " ")):
        raise QueryError(
            f"wildcard {label!r} needs at least {MIN_WILDCARD_PREFIX} letters before '*'",
            offset,
            "write a longer prefix, as in sanction*",
        )
    cased = folded.cased[start:end] if case_sensitive else None
    if lang is not None and not (wildcard or case_sensitive or quoted):
        head, _space, last = pattern.rpartition(" ")
        prefix = stem_prefix(lang, last)
        if prefix is not None:
            pattern, wildcard = (head + " " + prefix if head else prefix), True
    key = TermKey(pattern, wildcard, cased, lang, is_arabic(pattern) and not case_sensitive)
    return TermSpec(key, f"{lang}:{label}" if lang is not None else label)


@dataclass(slots=True)
class _Token:  # not frozen: a frozen dataclass's __init__ is several times slower
    kind: str  # TERM LIST LPAREN RPAREN COMMA AND OR NOT NEAR ATLEAST FIELD END
    offset: int
    text: str = ""
    number: int = 0
    case_sensitive: bool = False


_PUNCTUATION = {"(": "LPAREN", ")": "RPAREN", ",": "COMMA"}


def _case_error(offset: int) -> QueryError:
    return QueryError("'=' must be followed directly by a term", offset, "write =NATO or =\"New START\"")


def _lex(query: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    n = len(query)
    case_next: int | None = None  # offset of a pending "=" prefix
    # The syntax is read in ASCII; a term's text is taken from the query as written.
    syntax = query if query.isascii() else query.translate(_FULL_WIDTH)
    while pos < n:
        char = syntax[pos]
        if char.isspace() or char in _PUNCTUATION:
            if case_next is not None:
                raise _case_error(case_next)
            if not char.isspace():
                tokens.append(_Token(_PUNCTUATION[char], pos, query[pos]))
            pos += 1
        elif char == "=":
            case_next = pos
            pos += 1
        elif char in _QUOTES:
            pos = _lex_phrase(query, syntax, pos, case_next, tokens)
            case_next = None
        else:
            pos = _lex_word(query, syntax, pos, case_next, tokens)
            case_next = None
    if case_next is not None:
        raise _case_error(case_next)
    tokens.append(_Token("END", n))
    return tokens


def _lex_phrase(query: str, syntax: str, pos: int, case_next: int | None, tokens: list[_Token]) -> int:
    """A quoted phrase starting at ``pos``; returns where the next token starts."""
    closing = _QUOTE.search(syntax, pos + 1)
    end = closing.start() if closing else len(query)
    if end >= len(query):
        raise QueryError("unterminated quoted phrase", pos, 'close the phrase with a matching "')
    start = pos if case_next is None else case_next
    tokens.append(_Token("TERM", start, query[pos : end + 1], case_sensitive=case_next is not None))
    return end + 1


def _lex_word(query: str, syntax: str, pos: int, case_next: int | None, tokens: list[_Token]) -> int:
    """A list reference, a field scope, an operator or a term starting at ``pos``; returns
    where the next token starts."""
    stop = _WORD_END.search(syntax, pos)
    end = stop.start() if stop else len(query)
    word = syntax[pos:end]
    written = query[pos:end]
    if word.startswith("@"):
        if _LIST_NAME.fullmatch(word[1:]) is None or case_next is not None:
            raise QueryError(f"bad list reference {written!r}", pos, "write @name, where name is defined under lists:")
        tokens.append(_Token("LIST", pos, word[1:]))
        return end
    field, colon, _rest = word.partition(":")
    if colon and case_next is None and _FIELD_NAME.fullmatch(field):
        tokens.append(_Token("FIELD", pos, field))
        return pos + len(field) + 1
    if case_next is None and word in ("AND", "OR", "NOT"):
        tokens.append(_Token(word, pos, written))
    elif case_next is None and (word == "NEAR" or word.startswith("NEAR/")):
        tokens.append(_near_token(word, written, pos))
    elif case_next is None and word == "OF":
        number = tokens[-1] if tokens and tokens[-1].kind == "TERM" else None
        if number is None or not _is_number(number.text.translate(_FULL_WIDTH)):
            raise QueryError("OF needs a number before it", pos, "write K OF (a, b, c), as in 2 OF (Putin, Trump, Xi)")
        tokens.pop()
        k = int(number.text.translate(_FULL_WIDTH))
        tokens.append(_Token("ATLEAST", number.offset, f"{number.text} {written}", number=k))
    else:
        start = pos if case_next is None else case_next
        tokens.append(_Token("TERM", start, query[start:end], case_sensitive=case_next is not None))
    return end


def _is_number(text: str) -> bool:
    # ASCII digits only (the full-width ones are read as ASCII before): str.isdigit() also
    # holds for "²" and "٣", which int() refuses or reads as a number the operator did not see.
    return text.isascii() and text.isdigit()


def _near_token(word: str, written: str, pos: int) -> _Token:
    digits = word[5:]
    if not _is_number(digits) or int(digits) > MAX_NEAR:
        raise QueryError(
            f"bad proximity operator {written!r}",
            pos,
            f"write NEAR/N with N a whole number of words from 0 to {MAX_NEAR}, as in Putin NEAR/5 Trump",
        )
    return _Token("NEAR", pos, written, number=int(digits))


_STARTS_OPERAND = {"TERM", "LIST", "LPAREN", "NOT", "FIELD", "ATLEAST"}


class _Parser:
    def __init__(self, query: str, lists: Mapping[str, tuple[TermSpec, ...]]) -> None:
        self.query = query
        self.lists = lists
        self.tokens = _lex(query)
        self.index = 0
        self.fields: tuple[str, ...] = FIELDS
        self.scoped = False
        self.depth = 0
        self.open_parens = 0  # '(' not yet closed, of groups and K OF lists

    @property
    def peek(self) -> _Token:
        return self.tokens[self.index]

    def take(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def parse(self) -> Node:
        if self.peek.kind == "END":
            raise QueryError("empty query", 0, 'write at least one term, as in summit or "arms control"')
        node = self.parse_or()
        token = self.peek
        if token.kind == "RPAREN":
            raise QueryError("unbalanced ')'", token.offset, "remove it or add the matching '(' before it")
        if token.kind != "END":
            raise QueryError(f"unexpected {token.text!r}", token.offset, "check the operators around it")
        return node

    def parse_or(self) -> Node:
        children = [self.parse_and()]
        while self.peek.kind == "OR":
            self.take()
            children.append(self.parse_and())
        return children[0] if len(children) == 1 else Or(tuple(children))

    def parse_and(self) -> Node:
        children = [self.parse_near()]
        while self.peek.kind == "AND" or self.peek.kind in _STARTS_OPERAND:
            if self.peek.kind == "AND":
                self.take()
            children.append(self.parse_near())
        return children[0] if len(children) == 1 else And(tuple(children))

    def parse_near(self) -> Node:
        left_offset = self.peek.offset
        left = self.parse_unary()
        while self.peek.kind == "NEAR":
            operator = self.take()
            right_offset = self.peek.offset
            right = self.parse_unary()
            for side, offset in ((left, left_offset), (right, right_offset)):
                if not _positional(side):
                    raise QueryError(
                        f"{operator.text} needs a term, phrase, @list, (a OR b) group or K OF such items on each side",
                        offset,
                        "write (a NEAR/5 b) AND (b NEAR/5 c) instead of chaining, and move NOT/AND outside",
                    )
            left = Near(left, right, operator.number)
        return left

    def enter(self, token: _Token) -> None:
        """One more level of parentheses or NOT, refused past :data:`MAX_NESTING`: the
        parser and every pass over the query recurse once per level."""
        self.depth += 1
        if self.depth > MAX_NESTING:
            raise QueryError(
                f"query nests more than {MAX_NESTING} levels of parentheses and NOT",
                token.offset,
                "flatten it: (a OR (b OR c)) is a OR b OR c, and NOT NOT a is a; "
                "put long alternatives in a named list",
            )

    def parse_unary(self) -> Node:
        if self.peek.kind == "NOT":
            self.enter(self.take())
            node = Not(self.parse_unary())
            self.depth -= 1
            return node
        return self.parse_primary()

    def parse_primary(self) -> Node:
        token = self.take()
        if token.kind == "FIELD" and token.text == "lang":
            return self.parse_lang(token)
        if token.kind == "FIELD":
            if token.text not in FIELDS:
                close = difflib.get_close_matches(token.text, FIELDS, n=1)
                hint = f"did you mean {close[0]}:?" if close else None
                fields = ", ".join(f"{f}:" for f in (*FIELDS, "lang"))
                raise QueryError(
                    f"unknown field {token.text!r}",
                    token.offset,
                    (hint + " " if hint else "") + f"fields are {fields}; quote the term if ':' is part of it",
                )
            if self.scoped:
                raise QueryError("field scopes cannot be nested", token.offset, "put the field on the outer group only")
            if self.peek.kind in ("END", "RPAREN", "OR", "AND", "NEAR", "COMMA"):
                raise QueryError(f"nothing after {token.text}:", token.offset, f'write {token.text}:word or {token.text}:(a OR b)')
            self.fields, self.scoped = (token.text,), True
            try:
                return self.parse_primary()
            finally:
                self.fields, self.scoped = FIELDS, False
        if token.kind == "LPAREN":
            if self.peek.kind == "RPAREN":
                raise QueryError("empty parentheses", token.offset, "put a term inside or remove them")
            self.enter(token)
            self.open_parens += 1
            node = self.parse_or()
            self.expect_close(token)
            self.open_parens -= 1
            self.depth -= 1
            return node
        if token.kind == "ATLEAST":
            return self.parse_at_least(token)
        if token.kind == "TERM":
            spec = parse_term(token.text, token.offset, case_sensitive=token.case_sensitive)
            return Term(spec.key, spec.label, self.fields, token.offset)
        if token.kind == "LIST":
            return self.list_node(token)
        if token.kind == "END":
            raise QueryError("query ends where a term was expected", token.offset, "add a term or remove the trailing operator")
        if token.kind == "RPAREN" and self.open_parens:
            # "(a OR)", "2 OF (a,)": the ')' closes a '(', a term is missing before it.
            raise QueryError("a term was expected before ')'", token.offset, "add a term, or remove the operator or comma before it")
        if token.kind == "RPAREN":
            raise QueryError("unbalanced ')'", token.offset, "remove it or add the matching '(' before it")
        raise QueryError(f"{token.text!r} needs a term before it", token.offset, f"put a term on both sides of {token.text}")

    def parse_lang(self, token: _Token) -> Lang:
        """``lang:xx`` or ``lang:(xx OR yy)``: ISO 639-1 codes, lower case."""
        hint = "write lang:fr or lang:(fr OR de), with ISO 639-1 codes (two lower-case letters)"
        codes: set[str] = set()
        opening = self.take() if self.peek.kind == "LPAREN" else None
        while True:
            code = self.take()
            if code.kind != "TERM":
                raise QueryError("lang: needs a language code", code.offset, hint)
            name = code.text.translate(_FULL_WIDTH)
            if name not in ISO_639_1:
                close = difflib.get_close_matches(name.lower(), sorted(ISO_639_1), n=1)
                did = f"did you mean {close[0]}? " if close else ""
                raise QueryError(f"unknown language code {code.text!r}", code.offset, did + hint)
            codes.add(name)
            if opening is None or self.peek.kind != "OR":
                break
            self.take()
        if opening is not None:
            self.expect_close(opening)
        return Lang(frozenset(codes), token.offset)

    def expect_close(self, opening: _Token) -> None:
        if self.peek.kind != "RPAREN":
            raise QueryError(
                "unbalanced '(': missing ')'",
                opening.offset,
                f"add ')' to close the '(' at column {opening.offset + 1} of the query",
            )
        self.take()

    def list_entries(self, token: _Token) -> tuple[TermSpec, ...]:
        entries = self.lists.get(token.text)
        if entries is None:
            close = difflib.get_close_matches(token.text, list(self.lists), n=1)
            hint = f"did you mean @{close[0]}?" if close else "define it under a top-level lists: key"
            raise QueryError(f"unknown list @{token.text}", token.offset, hint, unknown_list=token.text)
        return entries

    def list_terms(self, token: _Token) -> list[Node]:
        return [
            Term(spec.key, f"@{token.text}:{spec.label}", self.fields, token.offset)
            for spec in self.list_entries(token)
        ]

    def list_node(self, token: _Token) -> Node:
        terms = self.list_terms(token)
        return terms[0] if len(terms) == 1 else Or(tuple(terms))

    def list_items(self, token: _Token) -> list[Node]:
        """A list's ``K OF`` items: one per entry, the specs of one entry (``TermSpec.entry``:
        the same term under ``all:`` and a language's section) as one OR of them."""
        entries: dict[int, list[Term]] = {}
        for index, spec in enumerate(self.list_entries(token)):
            term = Term(spec.key, f"@{token.text}:{spec.label}", self.fields, token.offset)
            entries.setdefault(-1 - index if spec.entry is None else spec.entry, []).append(term)
        return [terms[0] if len(terms) == 1 else Or(tuple(terms)) for terms in entries.values()]

    def parse_at_least(self, token: _Token) -> Node:
        k = token.number
        # Each item, and whether it is a term or a list entry (an OR of its terms), which
        # merges with an earlier item holding one of its terms.
        items: list[tuple[Node, bool]] = []
        if self.peek.kind == "LIST":
            items = [(item, True) for item in self.list_items(self.take())]
        elif self.peek.kind == "LPAREN":
            opening = self.take()
            self.enter(opening)
            self.open_parens += 1
            if self.peek.kind == "RPAREN":
                raise QueryError("empty parentheses", opening.offset, "put the items inside, as in 2 OF (Putin, Trump, Xi)")
            while True:
                # A bare @list item contributes its entries, so "2 OF (@leaders)" counts names.
                if self.peek.kind == "LIST" and self.tokens[self.index + 1].kind in ("COMMA", "RPAREN"):
                    items.extend((item, True) for item in self.list_items(self.take()))
                else:
                    item = self.parse_or()
                    items.append((item, isinstance(item, Term)))
                if self.peek.kind != "COMMA":
                    break
                self.take()
            self.expect_close(opening)
            self.open_parens -= 1
            self.depth -= 1
        else:
            raise QueryError(
                f"{token.text} needs a list of items",
                token.offset,
                "write K OF (a, b, c) or K OF @list",
            )
        written = sum(len(item.children) if merges and isinstance(item, Or) else 1 for item, merges in items)
        distinct = _distinct_terms(items)
        if not 1 <= k <= len(distinct):
            repeated = f" ({written - len(distinct)} repeating an earlier one counted once)" if written > len(distinct) else ""
            raise QueryError(
                f"{token.text} with {len(distinct)} item(s){repeated}: K must be between 1 and {len(distinct)}",
                token.offset,
                "separate items with commas, as in 2 OF (Putin, Trump, Xi)",
            )
        return AtLeast(k, tuple(distinct))


def _distinct_terms(items: list[tuple[Node, bool]]) -> list[Node]:
    """``K OF`` items without the terms that repeat an earlier item (the same folded term
    in the same fields: ``2 OF (@leaders, Putin)`` with Putin in @leaders), which would
    let one mention count twice. ``items``: each item, and whether it is a term or a list
    entry (an OR of the terms of one entry, see :meth:`_Parser.list_items`): those are
    merged with the earlier item that has one of their terms, the new terms joining it."""
    kept: list[Node | None] = []  # None: the place of a merged item, in ``merged``
    merged: dict[int, list[Term]] = {}
    owner: dict[tuple[TermKey, tuple[str, ...]], int] = {}
    for item, merges in items:
        if not merges:
            kept.append(item)
            continue
        terms = [item] if isinstance(item, Term) else iter_terms(item)
        index = next((owner[(term.key, term.fields)] for term in terms if (term.key, term.fields) in owner), len(kept))
        if index == len(kept):
            kept.append(None)
        group = merged.setdefault(index, [])
        for term in terms:
            if (term.key, term.fields) not in owner:
                owner[(term.key, term.fields)] = index
                group.append(term)
    return [
        item if item is not None else merged[index][0] if len(merged[index]) == 1 else Or(tuple(merged[index]))
        for index, item in enumerate(kept)
    ]


def _positional(node: Node, operand: bool = True) -> bool:
    """Whether a node has positions in the text (so NEAR can measure distances): a term,
    an OR of such, or, as a whole NEAR operand only, ``K OF`` such items."""
    if isinstance(node, Term):
        return True
    if isinstance(node, Or):
        return all(_positional(child, False) for child in node.children)
    if isinstance(node, AtLeast) and operand:
        return all(_positional(child, False) for child in node.children)
    return False


def parse_query(query: str, lists: Mapping[str, tuple[TermSpec, ...]] | None = None) -> Node:
    """Parse a query string into an AST; raise :class:`QueryError` if it is invalid."""
    return _Parser(query, lists or {}).parse()


def iter_terms(node: Node) -> list[Term]:
    """Every term leaf of ``node``, in query order (negated ones included)."""
    if isinstance(node, Term):
        return [node]
    if isinstance(node, Lang):
        return []
    if isinstance(node, Not):
        return iter_terms(node.child)
    if isinstance(node, Near):
        return iter_terms(node.left) + iter_terms(node.right)
    terms: list[Term] = []
    for child in node.children:
        terms.extend(iter_terms(child))
    return terms


def can_match_without_terms(node: Node) -> bool:
    """True if ``node`` can be true for an article in which none of its terms occur.

    The presearcher only evaluates rules one of whose terms was found, so such queries
    (``NOT sport``, ``a OR NOT b``) are rejected at load time.
    """
    if isinstance(node, (Term, Near)):
        return False
    if isinstance(node, (Not, Lang)):
        return True
    if isinstance(node, And):
        return all(can_match_without_terms(child) for child in node.children)
    if isinstance(node, Or):
        return any(can_match_without_terms(child) for child in node.children)
    return sum(can_match_without_terms(child) for child in node.children) >= node.k


def required_groups(node: Node) -> list[tuple[int, tuple[frozenset[TermKey], ...]]]:
    """Necessary conditions on which terms occur, for cheap filtering before evaluation.

    Each condition ``(k, groups)`` means: ``node`` can only be true if at least ``k`` of
    ``groups`` each have one of their keys in the article. An empty list: no term is
    required (the loader rejects such queries).
    """
    if isinstance(node, Term):
        return [(1, (frozenset((node.key,)),))]
    if isinstance(node, (Not, Lang)):
        return []
    if isinstance(node, And):
        return [cond for child in node.children for cond in required_groups(child)]
    if isinstance(node, Near):
        return required_groups(node.left) + required_groups(node.right)
    if isinstance(node, Or):
        union: set[TermKey] = set()
        for child in node.children:
            conditions = required_groups(child)
            if not conditions:
                return []
            union.update(_any_group(conditions[0]))
        return [(1, (frozenset(union),))]
    # AtLeast: if f items can be true without terms, k - f of the others must be true.
    needing = [child for child in node.children if not can_match_without_terms(child)]
    free = len(node.children) - len(needing)
    if free >= node.k:
        return []
    groups = tuple(frozenset(_any_group(required_groups(child)[0])) for child in needing)
    return [(node.k - free, groups)]


def _any_group(condition: tuple[int, tuple[frozenset[TermKey], ...]]) -> set[TermKey]:
    """Keys of which at least one must occur when ``condition`` holds."""
    keys: set[TermKey] = set()
    for group in condition[1]:
        keys.update(group)
    return keys
