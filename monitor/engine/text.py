"""Text folding for matching, with a map back to the original offsets.

Rules and articles are compared in a *folded* form so that operators do not have to
spell out every variant of a word:

* Unicode compatibility decomposition (NFKD) with combining marks removed, so
  ``Kyïv`` folds to ``Kyiv`` and ``Sánchez`` to ``Sanchez``; beyond NFKD, the Latin
  letters Unicode does not decompose (``ø`` -> ``o``, ``ł`` -> ``l``, ``đ`` -> ``d``,
  ``æ`` -> ``ae``...: :data:`_UNDECOMPOSED_LATIN`), letters whose lower case is not their
  case folding (``ß`` -> ``ss``), and whatever a character decomposes to is folded again
  (``ǿ`` -> ``ø`` -> ``o``); Hangul syllables and kana are kept whole; Arabic ta marbuta, alef
  maksura and alef wasla fold to ha, ya and alef, and the tatweel to nothing
  (:data:`_ARABIC`; :func:`folding_table` and docs/rules.md list it all);
* the hyphen/dash family and ASCII ``-`` become a space, so ``arms-control`` and
  ``arms–control`` fold to the phrase ``arms control``;
* curly quotes and apostrophes become ``"`` and ``'``; the apostrophe is not a word
  character, which is why ``summit`` matches ``summit's``;
* control whitespace becomes a space and runs of spaces collapse to one; invisible
  format characters (soft hyphen, zero-width space and joiners, bidi marks: :data:`_INVISIBLE`)
  are removed, so they never split a word;
* a combining mark that folding keeps (one without a canonical combining class: the
  vowel signs of Devanagari, Bengali, Tamil, Thai, Khmer...) is part of the word of the
  letter or digit before it (:func:`is_word_char`),
  so ``भारत`` is not a word of ``भारतीय``; a mark that follows no letter, digit or such
  mark (after a space or punctuation) becomes a space, so that every mark left in folded
  text continues a word;
* finally the text is lower-cased (``folded.lower``); case-sensitive terms are checked
  against the same text before lower-casing (``folded.cased``), which has exactly the
  same length, so one set of offsets serves both.

Hits are found in folded text, but a :class:`~monitor.model.Hit` must point into the
original field text. Most news text is ASCII apart from a few quotes and accented
letters that fold one-to-one, so the map is usually the identity; only characters whose
folded length differs (``ß`` -> ``ss``, a lone combining mark -> nothing, ``…`` -> ``...``)
and collapsed whitespace runs are recorded, as breakpoints searched with ``bisect``.
"""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from dataclasses import dataclass
from functools import lru_cache
from itertools import filterfalse

__all__ = [
    "WORD_START",
    "FoldedText",
    "OffsetMap",
    "fold",
    "fold_char",
    "folding_table",
    "is_word_char",
    "mark_class",
    "scan_text",
    "words",
]

#: Characters that fold to a space (word separators that would otherwise break phrases).
_DASHES = "-\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u2e3a\u2e3b\ufe58\ufe63\uff0d"
_SINGLE_QUOTES = "\u2018\u2019\u201a\u201b\u2032\u02bc\u02bb\u2035\uff07`\u00b4"
_DOUBLE_QUOTES = "\u201c\u201d\u201e\u201f\u2033\u00ab\u00bb\u2036\uff02"
#: Invisible format characters, removed as Unicode's NFKC_Casefold (search folding) does
#: with default-ignorable code points: a soft hyphen (HTML &shy;, common in German
#: headlines), a zero-width space or joiner, or a bidi mark inside a word is not seen by
#: the reader, so it must not split the word for matching.
_INVISIBLE = (
    "\u00ad\u034f\u061c\u180e\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
    "\u2060\u2061\u2062\u2063\u2064\u2066\u2067\u2068\u2069\u206a\u206b\u206c\u206d\u206e\u206f"
    "\ufe00\ufe01\ufe02\ufe03\ufe04\ufe05\ufe06\ufe07\ufe08\ufe09\ufe0a\ufe0b\ufe0c\ufe0d\ufe0e\ufe0f\ufeff"
)
_SPACES = "\t\n\r\x0b\x0c\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u202f\u205f\u3000\u2028\u2029\u0085"

#: One-to-one replacements applied to ASCII text (fast path of ``str.translate``).
_ASCII_TABLE = {ord("-"): " ", ord("`"): "'", **{ord(c): " " for c in "\t\n\r\x0b\x0c"}}

_ASCII_REPLACEMENTS = tuple((chr(code), replacement) for code, replacement in _ASCII_TABLE.items())
_ASCII_SCAN_TABLE = str.maketrans({chr(c): " " for c in range(128) if not chr(c).isalnum()})


def _mark_codes() -> list[int]:
    """Every combining mark (Unicode categories Mn, Mc, Me), ascending. The blocks of
    ideographs, syllables and private use, which hold none, are not looked at (half the
    time this costs at import)."""
    codes = [
        *range(0x300, 0x3400), *range(0xA000, 0xAC00), *range(0xF900, 0x12000), *range(0x12550, 0x17000),
        *range(0x18B00, _LAST_MARK + 1), *range(0xE0100, 0xE01F0),
    ]  # fmt: skip
    return [code for code, category in zip(codes, map(unicodedata.category, map(chr, codes))) if category[0] == "M"]


def _mark_classes(marks: list[int]) -> tuple[str, str]:
    """Regex class bodies of the combining marks ``marks``: those of the Basic Multilingual
    Plane, and those beyond it. A class with many ranges beyond the BMP is checked range
    by range for every character it does not hold (``re`` makes a bitmap of the BMP part
    only), so the hot regexes test the astral planes as one range and these marks only
    where an astral character stands."""
    ranges: list[list[int]] = []
    for code in marks:
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    bmp = "".join(f"{chr(low)}-{chr(high)}" for low, high in ranges if high <= 0xFFFF)
    astral = "".join(f"{chr(low)}-{chr(high)}" for low, high in ranges if low > 0xFFFF)
    return bmp, astral


#: The last combining mark below the variation selectors supplement (U+E0100-U+E01EF), the
#: only marks past it; tests/engine/test_text.py checks that every mark is found.
_LAST_MARK = 0x1E94A
_MARK_CODES = _mark_codes()
_MARKS, _ASTRAL_MARKS = _mark_classes(_MARK_CODES)
#: The marks folding keeps (those without a canonical combining class, but the invisible
#: variation selectors): the only ones folded text may hold, beside those of the few
#: characters that fold to several (see :func:`_may_hold_marks`).
_KEPT_MARKS = frozenset(chr(code) for code in _MARK_CODES if not unicodedata.combining(chr(code))) - set(_INVISIBLE)
_KEPT_ASTRAL_MARKS = frozenset(char for char in _KEPT_MARKS if char > "\uffff")
_ASTRAL = "\U00010000-\U0010ffff"
#: What :func:`scan_text` turns into a space: anything but a letter, a digit, a space or a
#: mark (``_`` and astral characters other than letters and marks are done apart, see there).
_SEPARATOR = re.compile(f"[^\\w {_MARKS}{_ASTRAL}]")
_ASTRAL_CHAR = re.compile(f"[{_ASTRAL}]")
#: Where a word starts, for NEAR's word counts: a letter or digit after no letter, digit,
#: mark or apostrophe, so "Putin's summit" counts "Putin's" as one word and "भारतीय" (the
#: vowel signs are marks) as one. The character before it is tested against the astral
#: marks only when it is astral (see :func:`_mark_classes`).
WORD_START = re.compile(f"(?<![\\w'{_MARKS}])(?<!(?=[{_ASTRAL}])[{_ASTRAL_MARKS}])[^\\W_]+")
#: A run of BMP marks after no letter, digit or BMP mark (tested on its first mark, so
#: that the search looks at marks only), in text without astral marks.
_STRAY_MARKS = re.compile(f"[{_MARKS}](?<![^\\W_][{_MARKS}])(?<![{_MARKS}][{_MARKS}])[{_MARKS}]*")
_MARK_OR_ASTRAL = re.compile(f"[{_MARKS}{_ASTRAL}]")
_MARK = re.compile(f"[{_MARKS}]")
_SPACE_BEFORE_MARK = re.compile(f" (?=[{_MARKS}])")


@lru_cache(maxsize=65536)
def _is_mark(char: str) -> bool:
    return unicodedata.category(char)[0] == "M"


def is_word_char(char: str) -> bool:
    """True for characters of words: letters and digits in any script, and the combining
    marks folded text keeps after them (folding turns any other mark into a space)."""
    return char.isalnum() or _is_mark(char)


def mark_class() -> str:
    """A regex character class body holding every combining mark (for a reference search;
    slow where a character is not one, see :func:`_mark_classes`)."""
    return _MARKS + _ASTRAL_MARKS


def _has_astral(text: str) -> bool:
    """Whether ``text`` has a character beyond the BMP: its UTF-16 form is then longer than
    two bytes a character (one C pass, several times cheaper than a regex search)."""
    return len(text.encode("utf-16-le", "surrogatepass")) != 2 * len(text)


#: Latin letters that Unicode does not decompose into a base letter plus a mark, so NFKD
#: alone would leave "Støre" and "Łódź" unmatched by "Store" and "Lodz" (as typed on
#: most keyboards). The price: "Støre" also matches the word "store".
_UNDECOMPOSED_LATIN = {
    "ø": "o", "Ø": "O", "ł": "l", "Ł": "L", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D",
    "ħ": "h", "Ħ": "H", "ŧ": "t", "Ŧ": "T", "ı": "i", "þ": "th", "Þ": "Th",
    "æ": "ae", "Æ": "Ae", "œ": "oe", "Œ": "Oe",
}  # fmt: skip

#: Arabic orthographic normalisation beyond NFKD (which already strips the diacritics and
#: the hamza from أ إ آ ؤ ئ): ta marbuta as ha, alef maksura as ya, alef wasla as alef, and
#: the tatweel (a stretching stroke inside a word) removed, as search engines do for
#: Arabic, since writers and keyboards use either form.
_ARABIC = {"\u0629": "\u0647", "\u0649": "\u064a", "\u0671": "\u0627", "\u0640": ""}


def folding_table() -> list[tuple[str, str]]:
    """What folding does beyond NFKD by table, for docs/rules.md (a test checks the
    table there against this): each undecomposed Latin letter with what it folds to,
    then the dashes (to a space), single and double quotes, spaces, and invisible format
    characters (to nothing), each class as one row of its characters. ASCII members of a class (``-``, backtick, tab, newline...)
    are folded by :func:`fold`, the others by :func:`fold_char`."""
    rows = list(_UNDECOMPOSED_LATIN.items())
    rows.extend(_ARABIC.items())
    rows.extend([(_DASHES, " "), (_SINGLE_QUOTES, "'"), (_DOUBLE_QUOTES, '"'), (_SPACES, " "), (_INVISIBLE, "")])
    return rows


@lru_cache(maxsize=65536)
def fold_char(char: str) -> str:
    """Fold one non-ASCII character (case preserved); may return 0, 1 or more characters."""
    if char in _UNDECOMPOSED_LATIN:
        return _UNDECOMPOSED_LATIN[char]
    if char in _ARABIC:
        return _ARABIC[char]
    if char in _DASHES or char in _SPACES:
        return " "
    if char in _INVISIBLE:
        return ""
    if char in _SINGLE_QUOTES:
        return "'"
    if char in _DOUBLE_QUOTES:
        return '"'
    if "\uac00" <= char <= "\ud7a3":
        # A Hangul syllable: NFKD would spell it out in jamo (no marks to strip), making
        # every Korean word longer and its offsets a break each.
        return char
    if "\u3041" <= char <= "\u30ff" and char not in "\u3099\u309a":
        # Kana: the voiced marks are not accents but other syllables (ガ is ga, カ ka):
        # stripping them made ドイツ (Germany) match トイツ and バス (bus) ハス (lotus).
        return char
    decomposed = unicodedata.normalize("NFKD", char)
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    if stripped.lower() != stripped.casefold() or len(stripped.lower()) != len(stripped):
        # e.g. "ß": only the case-folded form ("ss") compares equal across spellings, and
        # lower() must not change lengths (the lower and cased texts share offsets).
        stripped = "".join(
            c for c in unicodedata.normalize("NFKD", stripped.casefold()) if not unicodedata.combining(c)
        )
    if stripped != char and not stripped.isascii():
        # What NFKD gives may fold further ("ǿ" -> "ø" -> "o", "ǽ" -> "æ" -> "ae", a
        # superscript minus -> "−" -> " "), so a character folds like what it stands for.
        stripped = "".join(c if c.isascii() or c == char else fold_char(c) for c in stripped)
    # Folding may itself produce ASCII needing the one-to-one table (e.g. full-width "-").
    return stripped.translate(_ASCII_TABLE)


@dataclass(frozen=True, slots=True)
class OffsetMap:
    """Maps offsets in a transformed string back to the string it was made from.

    ``breaks`` holds ``(new_start, new_len, old_start, old_len)`` for every segment whose
    length changed, sorted by ``new_start``; everything between segments is copied 1:1.
    """

    breaks: tuple[tuple[int, int, int, int], ...]
    starts: tuple[int, ...]

    def point(self, pos: int) -> int:
        """The original offset of the character at ``pos`` (or of the end, at ``len``)."""
        index = bisect_right(self.starts, pos) - 1
        if index < 0:
            return pos
        new_start, new_len, old_start, old_len = self.breaks[index]
        if pos < new_start + new_len:
            return old_start
        return old_start + old_len + (pos - new_start - new_len)


def _build_map(breaks: list[tuple[int, int, int, int]]) -> OffsetMap | None:
    if not breaks:
        return None
    return OffsetMap(tuple(breaks), tuple(b[0] for b in breaks))


@dataclass(frozen=True, slots=True)
class FoldedText:
    """A string folded for matching, plus what is needed to map offsets back."""

    original: str
    #: Accent-folded, punctuation-unified, whitespace-collapsed; case preserved.
    cased: str
    #: ``cased`` lower-cased; the same length, so offsets are shared.
    lower: str
    #: Maps applied last-to-first to get back to ``original`` (empty: identity).
    maps: tuple[OffsetMap, ...] = ()

    def original_span(self, start: int, end: int) -> tuple[int, int]:
        """Map a folded ``[start, end)`` span to the corresponding span of ``original``."""
        if not self.maps:
            return start, end
        if len(self.maps) == 1:
            # The common case (one map), inlined: OffsetMap.point for both ends.
            offset_map = self.maps[0]
            starts = offset_map.starts
            breaks = offset_map.breaks
            index = bisect_right(starts, start) - 1
            # Usually the span lies in one 1:1 stretch (before the next break), and its
            # end moves by as much as its start.
            if index < 0:
                orig_start = start
                if start < end <= starts[0]:
                    return start, end
            else:
                new_start, new_len, old_start, old_len = breaks[index]
                if start < new_start + new_len:
                    orig_start = old_start
                else:
                    orig_start = old_start + old_len + (start - new_start - new_len)
                    if start < end and (index + 1 == len(starts) or end <= starts[index + 1]):
                        return orig_start, orig_start + (end - start)
            if end <= start:
                return orig_start, orig_start
            last = end - 1
            index = bisect_right(starts, last, index if index > 0 else 0) - 1
            if index < 0:
                return orig_start, end
            new_start, new_len, old_start, old_len = breaks[index]
            last = old_start if last < new_start + new_len else old_start + old_len + (last - new_start - new_len)
            return orig_start, last + 1
        orig_start = start
        for offset_map in reversed(self.maps):
            orig_start = offset_map.point(orig_start)
        if end <= start:
            return orig_start, orig_start
        # The end is one past the original character holding the last folded character,
        # so an expanded character ("ß" -> "ss") is never cut in half.
        last = end - 1
        for offset_map in reversed(self.maps):
            last = offset_map.point(last)
        return orig_start, last + 1


_ASCII_BYTES = bytes(range(128))
#: Distinct characters folded with one ``str.replace`` (or located with one ``str.find``)
#: pass each; the rest are folded in one ``translate`` pass (located in one regex pass).
#: A replace pass is far cheaper than a translate pass on non-ASCII text, and news text
#: has a few dozen such characters at most; the limit keeps a text holding every accented
#: letter linear in its length, at no more than this many passes and one more.
_PASSES = 100


def _non_ascii(text: str) -> set[str]:
    """The distinct non-ASCII characters of ``text``, found in C."""
    return set(text.encode("utf-8", "surrogatepass").translate(None, _ASCII_BYTES).decode("utf-8", "surrogatepass"))


def _fold_non_ascii(text: str) -> tuple[str, OffsetMap | None, bool, tuple[bool, bool]]:
    """Fold every non-ASCII character of ``text``; record those whose length changed.

    A regex over the whole text is slow on non-ASCII strings (~12 ns a character), so
    the distinct non-ASCII characters are found in C (UTF-8 bytes minus the ASCII ones)
    and each one-to-one fold is a ``str.replace``; only characters that fold to another
    length are located one by one. Past :data:`_PASSES` characters, the rest are folded
    in one ``translate`` pass and located in one regex pass. Also says whether letters
    of a script written without spaces occur (see :func:`_split_unspaced`), and whether
    the folded text may hold a combining mark, and one beyond the BMP (see
    :func:`_detach_stray_marks`).
    """
    others = _non_ascii(text)
    if "\uff9e" in others or "\uff9f" in others:  # found in the set: free for other text
        text = _HALF_WIDTH_VOICED.sub(_compose_half_width, text)
        others = _non_ascii(text)
    text, expanding, unspaced = _fold_same_length(text, others)
    marks = _may_hold_marks(others, expanding)
    if not expanding:
        return text, None, unspaced, marks
    folded, offsets = _fold_expanding(text, expanding)
    return folded, offsets, unspaced, marks


def _may_hold_marks(chars: set[str], expanding: list[str]) -> tuple[bool, bool]:
    """Whether folding ``chars`` may give a combining mark, and one beyond the BMP: one of
    them is a mark folding keeps, or folds to several characters with one (Thai ำ is ํ
    and า; no other character folds to a mark, a test checks). Looked up for the distinct
    characters, not searched in the text: a search of every text for marks would cost
    English news a third of its folding, and Arabic text (whose harakat fold away) a tenth."""
    if _KEPT_MARKS.isdisjoint(chars) and not (
        expanding and not all(_KEPT_MARKS.isdisjoint(fold_char(char)) for char in expanding)
    ):
        return False, False
    astral = not _KEPT_ASTRAL_MARKS.isdisjoint(chars) or any(
        not _KEPT_ASTRAL_MARKS.isdisjoint(fold_char(char)) for char in expanding
    )
    return True, astral


def _fold_same_length(text: str, chars: set[str]) -> tuple[str, list[str], bool]:
    """``text`` with each of ``chars`` that folds to one character folded; the characters
    that fold to another length (left as they are), and whether an unspaced script occurs."""
    unspaced = False
    expanding: list[str] = []
    # A folded character is never folded again (fold_char is idempotent), so the order of
    # the replace passes does not matter, and one translate pass does what they do.
    passes = 0
    one_pass: dict[int, str] | None = None
    for char in chars:
        folded = fold_char(char)
        if folded == char:
            # Most letters of non-Latin scripts: with hundreds of distinct ones (a Chinese
            # article), a replace pass for each would cost milliseconds. Only these (and
            # the few that fold to them, below) can be letters of an unspaced script;
            # quotes, dashes and accented Latin letters, most of news text's non-ASCII
            # characters, fold to something else and skip the check.
            unspaced = unspaced or _is_unspaced(char)
            continue
        if len(folded) == 1:
            if passes < _PASSES:
                text = text.replace(char, folded)
                passes += 1
            elif one_pass is None:
                one_pass = {ord(char): folded}
            else:
                one_pass[ord(char)] = folded
            unspaced = unspaced or (folded >= "\u0e00" and _is_unspaced(folded))
        else:
            expanding.append(char)
            unspaced = unspaced or any(map(_is_unspaced, folded))  # "㍿" -> "株式会社"
    if one_pass is not None:
        text = text.translate(one_pass)
    return text, expanding, unspaced


def _fold_expanding(text: str, expanding: list[str]) -> tuple[str, OffsetMap | None]:
    """``text`` with every character of ``expanding`` folded (to another length), and the
    map from the new offsets to the old."""
    positions: list[int] = []
    if len(expanding) > _PASSES:
        positions.extend(found.start() for found in re.finditer(f"[{re.escape(''.join(expanding))}]", text))
    else:
        for char in expanding:
            index = text.find(char)
            while index != -1:
                positions.append(index)
                index = text.find(char, index + 1)
        positions.sort()
    pieces: list[str] = []
    breaks: list[tuple[int, int, int, int]] = []
    last = 0
    delta = 0  # new offset minus old offset so far
    for index in positions:
        folded = fold_char(text[index])
        pieces.append(text[last:index])
        pieces.append(folded)
        if not folded and last == index and breaks and not breaks[-1][1]:
            # A run of removed characters (a hostile body of zero-width joiners) is one
            # break, not one each.
            breaks[-1] = (index + delta, 0, breaks[-1][2], breaks[-1][3] + 1)
        else:
            breaks.append((index + delta, len(folded), index, 1))
        delta += len(folded) - 1
        last = index + 1
    pieces.append(text[last:])
    return "".join(pieces), _build_map(breaks)


#: Scripts written without spaces between words: Han (with its extensions and
#: compatibility ideographs), Hiragana, Katakana (half-width too, which folds to
#: full-width), Thai, Lao, Khmer, Myanmar. Hangul is left alone: Korean puts spaces
#: between words.
_UNSPACED_RANGES = (
    ("\u0e00", "\u0eff"), ("\u1000", "\u109f"), ("\u1780", "\u17ff"), ("\u3040", "\u30ff"),
    ("\u31f0", "\u31ff"), ("\u3400", "\u4dbf"), ("\u4e00", "\u9fff"), ("\uf900", "\ufaff"),
    ("\uff66", "\uff9f"), ("\U00020000", "\U0003ffff"),
)  # fmt: skip
_UNSPACED_CLASS = "".join(f"{low}-{high}" for low, high in _UNSPACED_RANGES)
_UNSPACED_RUN = re.compile(f"[{_UNSPACED_CLASS}]+")


@lru_cache(maxsize=65536)
def _is_unspaced(char: str) -> bool:
    return _UNSPACED_RUN.match(char) is not None


def _split_unspaced(text: str, marks: bool) -> tuple[str, OffsetMap | None]:
    """Make every letter of a script written without spaces a word of its own, as
    Lucene's standard tokenizer makes each ideograph a token: a space goes between it and
    any letter or digit beside it, so the term 北京 (folded to the phrase 北 京) matches
    inside 峰会在北京举行. The marks after a letter (Thai and Khmer vowel signs) stay with
    it: สามี is ส า มี. Each inserted space is recorded as the character after it
    growing by one (" 京"), so offsets map back with the other breaks. ``marks``: whether
    the text may hold a combining mark (else none is looked for)."""
    pieces: list[str] = []
    before: list[int] = []  # original positions that get a space before them
    last = 0
    for run in _UNSPACED_RUN.finditer(text):
        start, end = run.span()
        pieces.append(text[last:start])
        if start and (text[start - 1].isalnum() or (marks and _is_mark(text[start - 1]))):
            before.append(start)
            pieces.append(" ")
        pieces.append(" ".join(run.group()))
        before.extend(range(start + 1, end))
        if end < len(text) and text[end].isalnum():
            before.append(end)
            pieces.append(" ")
        last = end
    if not before:
        return text, None
    pieces.append(text[last:])
    spaced = "".join(pieces)
    if marks and (marks_at := {found.start() for found in _MARK.finditer(text)}):
        # Every mark continues a word (see fold), so a space before one was put there
        # above, between it and its letter: taken out, one pass for the whole text.
        before = list(filterfalse(marks_at.__contains__, before))
        spaced = _SPACE_BEFORE_MARK.sub("", spaced)
    breaks = [(position + shift, 2, position, 1) for shift, position in enumerate(before)]
    return spaced, _build_map(breaks)


_HALF_WIDTH_VOICED = re.compile("[\uff66-\uff9d][\uff9e\uff9f]")


def _compose_half_width(found: re.Match[str]) -> str:
    """Half-width katakana with its voiced mark (ﾊﾟ) as the full-width letter it stands
    for (パ, kept whole by folding), then the mark, which folds to nothing: the same length,
    so offsets stay put. A pair that is no syllable (ｱﾞ) is left alone."""
    composed = unicodedata.normalize("NFKC", found.group())
    return composed + found.group()[1] if len(composed) == 1 else found.group()


def _detach_stray_marks(text: str, astral: bool) -> str:
    """``text`` with every combining mark that does not continue a word (after a space,
    punctuation or nothing, and the marks right after such a mark) replaced by a space, one
    for one, so that :func:`scan_text` and :data:`WORD_START` may take any mark for part of
    a word. One regex pass over BMP marks; text holding a mark beyond the BMP (``astral``,
    Chakma, Adlam...) is checked a character at a time where a mark or astral character is."""
    if not astral:
        return _STRAY_MARKS.sub(_spaces, text)
    chars = list(text)
    for found in _MARK_OR_ASTRAL.finditer(text):
        index = found.start()
        if _is_mark(chars[index]) and not (index and is_word_char(chars[index - 1])):
            chars[index] = " "
    return "".join(chars)


def _spaces(found: re.Match[str]) -> str:
    return " " * (found.end() - found.start())


def _collapse_spaces(text: str) -> tuple[str, OffsetMap | None]:
    """Collapse runs of spaces to one space; record each run as a changed segment."""
    breaks: list[tuple[int, int, int, int]] = []
    pieces: list[str] = []
    delta = 0
    last = 0
    start = text.find("  ")
    while start != -1:
        end = start + 2
        while end < len(text) and text[end] == " ":
            end += 1
        pieces.append(text[last : start + 1])
        breaks.append((start + delta, 1, start, end - start))
        delta -= end - start - 1
        last = end
        start = text.find("  ", end)
    pieces.append(text[last:])
    return "".join(pieces), _build_map(breaks)


def fold(text: str) -> FoldedText:
    """Fold ``text`` for matching (see the module docstring for what folding does)."""
    if not text:
        return _EMPTY
    maps: list[OffsetMap] = []
    cased = text
    if not text.isascii():
        cased, offset_map, unspaced, marks = _fold_non_ascii(cased)
        if offset_map is not None:
            maps.append(offset_map)
        if marks[0]:
            cased = _detach_stray_marks(cased, marks[1])
        if unspaced:
            cased, offset_map = _split_unspaced(cased, marks[0])
            if offset_map is not None:
                maps.append(offset_map)
    for char, replacement in _ASCII_REPLACEMENTS:
        # str.replace is a C memchr loop; translate is slow on non-ASCII strings.
        if char in cased:
            cased = cased.replace(char, replacement)
    if "  " in cased:
        cased, offset_map = _collapse_spaces(cased)
        if offset_map is not None:
            maps.append(offset_map)
    lower = cased.lower()
    if len(lower) != len(cased):
        # Should not happen after fold_char; keep offsets valid if some script surprises us.
        lower = "".join(c.lower() if len(c.lower()) == 1 else c for c in cased)
    return FoldedText(text, cased, lower, tuple(maps))


def scan_text(lower: str) -> str:
    """Folded text with every character that is not part of a word (:func:`is_word_char`)
    replaced by a space, one for one.

    Searching ``" " + pattern + " "`` in ``" " + scan_text(text) + " "`` finds whole-word
    occurrences only, so the automaton itself enforces word boundaries; offsets are those
    of ``lower`` plus one (the leading pad). Every mark of folded text continues a word
    (:func:`fold`), so marks are kept without looking at what is before them.
    """
    if lower.isascii():
        return lower.translate(_ASCII_SCAN_TABLE)
    # One character class and a C replace are cheaper than one regex with "|_".
    scan = _SEPARATOR.sub(" ", lower)
    if "_" in scan:
        scan = scan.replace("_", " ")
    if _has_astral(scan):
        scan = _ASTRAL_CHAR.sub(_scan_astral, scan)
    return scan


def words(text: str) -> list[str]:
    """The words of ``text`` as matching compares them, in order: folded (:func:`fold`),
    lower case, split wherever :func:`scan_text` puts a space. A word is a run of letters,
    digits and the combining marks after them (``भारतीय`` is one word, not three
    fragments), and each letter of a script written without spaces (Chinese, Thai...) is
    a word of its own with its marks; ``Putin's`` is ``putin`` and ``s``, as for terms."""
    return scan_text(fold(text).lower).split()


def _scan_astral(found: re.Match[str]) -> str:
    char = found.group()
    return char if is_word_char(char) else " "


_EMPTY = FoldedText("", "", "")


#: Characters of context on each side of a hit in a snippet (an alert's), and the longest snippet.
SNIPPET_CONTEXT = 90
SNIPPET_LIMIT = 400


def snippet(
    text: str, start: int, end: int, *, context: int = SNIPPET_CONTEXT, limit: int | None = SNIPPET_LIMIT, mark: bool = False
) -> str:
    """A one-line excerpt of ``text`` around ``[start, end)``, cut at word boundaries, with
    ``…`` where it is cut: at most ``limit`` characters (a long hit is shortened), the hit
    marked ``[...]`` with ``mark``."""
    if limit is not None:
        end = min(end, start + limit - 2 * context - 2)
    left = max(0, start - context)
    right = min(len(text), end + context)
    if left > 0:
        space = text.find(" ", left, start)
        left = space + 1 if space != -1 else left
    if right < len(text):
        space = text.rfind(" ", end, right)
        right = space if space != -1 else right
    excerpt = f"{text[left:start]}[{text[start:end]}]{text[end:right]}" if mark else text[left:right]
    return f"{'…' if left > 0 else ''}{' '.join(excerpt.split())}{'…' if right < len(text) else ''}"
