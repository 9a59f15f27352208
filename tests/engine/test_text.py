"""Folding for matching, and the offsets of hits in the original text."""

from __future__ import annotations

import random

import pytest

from monitor.engine.text import fold, scan_text
from tests.engine.helpers import article, fires, one_rule


class TestFold:
    def test_lowercases_and_strips_accents(self) -> None:
        assert fold("Kyïv Sánchez").lower == "kyiv sanchez"

    def test_keeps_case_in_cased_text(self) -> None:
        assert fold("NATO Sánchez").cased == "NATO Sanchez"

    def test_dashes_become_spaces(self) -> None:
        assert fold("arms-control arms–control arms—control").lower == "arms control arms control arms control"

    def test_curly_quotes_become_straight(self) -> None:
        assert fold("“Kyiv’s”").lower == "\"kyiv's\""

    def test_whitespace_runs_collapse(self) -> None:
        assert fold("a \t\n  b\u00a0 c").lower == "a b c"

    def test_expanding_character_keeps_lengths_equal(self) -> None:
        folded = fold("Straße")
        assert folded.lower == "strasse" and len(folded.cased) == len(folded.lower)

    def test_letters_of_scripts_without_spaces_are_words_of_their_own(self) -> None:
        assert fold("峰会在北京举行").lower == "峰 会 在 北 京 举 行"
        # A space goes between such a letter and any letter or digit beside it, not
        # beside punctuation or a space; half-width katakana folds to full-width first.
        assert fold("Putin在北京，Trump 2025年").lower == "putin 在 北 京,trump 2025 年"
        assert fold("ｶﾀｶﾅ").lower == "カ タ カ ナ"
        assert fold("Toyota㍿").lower == "toyota 株 式 会 社"  # a compatibility character expands
        # Korean puts spaces between words: Hangul is left as it is.
        assert fold("서울에서 회담").lower == "서울에서 회담"

    def test_scan_text_replaces_punctuation_one_for_one(self) -> None:
        assert scan_text("u.s. putin's") == "u s  putin s"


class TestOffsets:
    @pytest.mark.parametrize(
        "original, folded_span, expected",
        [
            ("Kyi\u0308v talks", (0, 4), "Kyi\u0308v"),  # a combining mark removed
            ("Große summit", (7, 13), "summit"),  # ß expanded to ss before the hit
            ("Große summit", (0, 6), "Große"),  # the hit includes the expansion
            ("a  —  summit", (2, 8), "summit"),  # whitespace collapsed before the hit
            ("x…y summit", (6, 12), "summit"),  # ellipsis expanded to three dots
        ],
    )
    def test_folded_span_maps_to_original_text(self, original: str, folded_span: tuple[int, int], expected: str) -> None:
        folded = fold(original)
        start, end = folded.original_span(*folded_span)
        assert original[start:end] == expected

    def test_every_span_maps_as_through_the_breakpoints_one_by_one(self) -> None:
        # original_span maps a span inside one 1:1 stretch with a single lookup; it must
        # agree with OffsetMap.point applied to both ends, wherever the span falls.
        rng = random.Random(5)
        pieces = ["ß", "…", "i\u0308", "  ", "word", "x", " ", "ﬁ", "—"]
        for _ in range(300):
            folded = fold("".join(rng.choice(pieces) for _ in range(rng.randint(1, 30))))
            if len(folded.maps) != 1:
                continue
            (offset_map,) = folded.maps
            for start in range(len(folded.lower)):
                for end in range(start + 1, len(folded.lower) + 1):
                    expected = (offset_map.point(start), offset_map.point(end - 1) + 1)
                    assert folded.original_span(start, end) == expected, (folded.original, start, end)

    def test_every_word_span_maps_to_original_text_that_folds_back_to_it(self) -> None:
        # Across any mix of maps (expansions, unspaced scripts, collapsed spaces): the
        # original text under a mapped span folds to the span's folded text again.
        rng = random.Random(11)
        pieces = ["ß", "…", "i\u0308", "  ", "word", "x", " ", "ﬁ", "—", "北", "京", "カ", "ｶ", "ไทย", "7", "，"]
        for _ in range(300):
            folded = fold("".join(rng.choice(pieces) for _ in range(rng.randint(1, 25))))
            text = folded.lower
            for start in range(len(text)):
                for end in range(start + 1, len(text) + 1):
                    if not (text[start].isalnum() and text[end - 1].isalnum()):
                        continue  # hits start and end at a letter or digit...
                    if (start and text[start - 1].isalnum()) or (end < len(text) and text[end].isalnum()):
                        continue  # ...of whole words (never inside an expansion, as "ss" of ß)
                    o_start, o_end = folded.original_span(start, end)
                    assert fold(folded.original[o_start:o_end]).lower.strip() == text[start:end].strip(), (
                        folded.original,
                        start,
                        end,
                    )

    def test_hit_offsets_point_into_original_field(self) -> None:
        body = "Große  Gespräche in Kyïv — “summit’s” agenda"
        (match,) = one_rule("summit kyiv").match(article(body))
        for hit in match.hits:
            assert body[hit.start : hit.end] == hit.text
        assert {hit.text for hit in match.hits} == {"Kyïv", "summit"}


class TestNormalisedMatching:
    def test_plain_term_matches_accented_text(self) -> None:
        assert fires("Kyiv", "Talks in Kyïv")

    def test_accented_term_matches_plain_text(self) -> None:
        assert fires("Sánchez", "Pedro Sanchez said")

    def test_letters_without_a_unicode_decomposition_fold_too(self) -> None:
        # ø, ł, đ, æ... are letters of their own in Unicode, not a base letter plus a mark.
        assert fires("Store", "Prime Minister Jonas Gahr Støre said")
        assert fires("Lodz", "talks in Łódź")
        assert fires("Dukanovic", "Milo Đukanović met")
        assert fires('"Faroe Islands"', "the Færøe Islands") is False
        assert fires("Faeroe", "the Færøe Islands")

    def test_expanding_fold_keeps_offsets_on_the_original(self) -> None:
        match = one_rule("Thorshavn").match(article("Welcome to Þórshavn today"))[0]
        assert [(h.start, h.end, h.text) for h in match.hits] == [(11, 19, "Þórshavn")]

    def test_phrase_matches_hyphenated_text(self) -> None:
        assert fires('"arms control"', "new arms-control talks")

    def test_phrase_matches_en_dash_text(self) -> None:
        assert fires('"arms control"', "new arms–control talks")

    def test_hyphenated_term_matches_spaced_text(self) -> None:
        assert fires("arms-control", "arms control talks")

    def test_curly_apostrophe_in_text_matches_straight_in_term(self) -> None:
        assert fires('"Kyiv\'s participation"', "without Kyiv’s participation")

    def test_whole_words_only(self) -> None:
        assert not fires("arms", "the farms were dry")

    def test_possessive_matches_base_word(self) -> None:
        assert fires("summit", "the summit’s agenda")

    def test_chinese_term_matches_inside_text_without_spaces(self) -> None:
        body = "峰会在北京举行。普京Putin抵达北京"
        (match,) = one_rule("北京").match(article(body))
        assert [(h.start, h.end, h.text) for h in match.hits] == [(3, 5, "北京"), (17, 19, "北京")]
        assert not fires("北京", "会谈在南京举行")
        assert fires("Putin", body)

    def test_japanese_and_thai_terms_match_inside_text_without_spaces(self) -> None:
        assert fires("東京 AND プーチン", "プーチン大統領は東京で会談した")
        assert not fires("京都", "東京で会談した")
        assert fires("กรุงเทพ", "การประชุมที่กรุงเทพวันนี้")

    def test_near_counts_each_ideograph_as_a_word(self) -> None:
        assert fires("峰会 NEAR/1 北京", "峰会在北京举行")
        assert not fires("峰会 NEAR/0 北京", "峰会在北京举行")

    def test_plural_is_not_the_word(self) -> None:
        assert not fires("summit", "two summits")

    def test_kana_keep_their_voiced_marks(self) -> None:
        # The dakuten was stripped as an accent: ドイツ (Germany) matched トイツ, and
        # バス (bus) ハス (lotus).
        assert fires("ドイツ", "ドイツの首相") and not fires("ドイツ", "トイツの首相")
        assert not fires("バス", "ハスの花") and not fires("がいこう", "かいこう")
        assert fires("プーチン", "プーチン大統領") and fires("パリ", "ﾊﾟﾘで")  # half-width: NFKD composes

    @pytest.mark.parametrize("invisible", ["\u00ad", "\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u200f"])
    def test_invisible_characters_do_not_split_a_word(self, invisible: str) -> None:
        # A soft hyphen (HTML &shy;) or a zero-width character inside a word is unseen by
        # the reader; it used to count as a space, so "Sank&shy;tionsliste" was two words.
        text = f"Die EU erweitert ihre Sank{invisible}tions{invisible}liste gegen Russland."
        assert fires("Sanktionsliste", text) and fires('"ihre Sanktionsliste"', text)
        assert not fires("Sank", text)
        assert fires(f"Pu{invisible}tin", "Putin arrived.")
        (match,) = one_rule("Sanktionsliste").match(article(text))
        assert match.hits[0].text == f"Sank{invisible}tions{invisible}liste"
        # A run of them is one break of the offset map; offsets after it still map back.
        run = invisible * 5
        (match,) = one_rule("Putin NEAR/1 Trump").match(article(f"ß{run}x Pu{run}tin{run} and {run}Trump{run}."))
        assert [hit.text for hit in match.hits] == [f"Pu{run}tin", "Trump"]


class TestCombiningMarks:
    """The vowel signs of Indic scripts, Thai, Khmer... are combining marks that folding
    keeps: they used to separate words, so भारत (India) matched inside भारतीय (Indian)."""

    @pytest.mark.parametrize(
        "term, alone, longer",
        [
            ("भारत", "भारत की संसद", "भारतीय संसद"),  # Hindi: India / Indian
            ("रूस", "रूस और अमेरिका", "रूसी तेल"),  # Russia / Russian
            ("ভারত", "ভারত ও বাংলাদেশ", "ভারতীয় দল"),  # Bengali: India / Indian
            ("ঢাক", "ঢাক বাজছে", "ঢাকায় বৈঠক"),  # drum / in Dhaka
            ("இந்திய", "இந்திய அணி", "இந்தியா வென்றது"),  # Tamil: Indian / India
            ("สาม", "สามคน", "สามีของเธอ"),  # Thai: three (people) / (her) husband
        ],
    )
    def test_a_term_matches_alone_but_not_as_the_start_of_a_longer_word(self, term: str, alone: str, longer: str) -> None:
        assert fires(term, alone)
        assert not fires(term, longer)
        assert fires(f"{term}*", longer)  # what a wildcard is for

    def test_a_trailing_vowel_sign_is_part_of_the_term(self) -> None:
        # It was cut from the term: रूसी (Russian) matched रूस (Russia), இந்தியா (India) இந்திய.
        assert fires("रूसी", "रूसी तेल") and not fires("रूसी", "रूस और अमेरिका")
        assert fires("இந்தியா", "இந்தியா வென்றது") and not fires("இந்தியா", "இந்திய அணி")
        assert fires("ঢাকা", "ঢাকা শহর") and not fires("ঢাকা", "ঢাক বাজছে")

    def test_phrases_and_near_count_whole_words(self) -> None:
        body = "भारत सरकार ने कहा कि प्रधानमंत्री मोदी और राष्ट्रपति ट्रंप की मुलाकात होगी"
        assert fires('"भारत सरकार"', body) and not fires('"भारत सर"', body)
        assert fires("मोदी NEAR/2 ट्रंप", body) and not fires("मोदी NEAR/1 ट्रंप", body)
        assert fires("प्रधानमंत्री NEAR/0 मोदी", body)
        (match,) = one_rule("भारतीय").match(article("कल भारतीय टीम"))
        assert [(h.start, h.end, h.text) for h in match.hits] == [(3, 9, "भारतीय")]

    def test_marks_of_scripts_without_spaces_stay_with_their_letter(self) -> None:
        assert fold("สามี").lower == "ส า มี"
        assert fires("กรุงเทพ", "การประชุมที่กรุงเทพวันนี้")

    def test_a_mark_after_no_letter_separates_words(self) -> None:
        # A stray vowel sign (after a space or punctuation, with any marks right after it)
        # is a space; one after a letter stays in its word.
        assert fold("(ि) x, ाा भारत").lower == "( ) x, भारत"
        assert fold("िx").lower == " x"
        assert fires("भारत", "ा भारत") and fires("x", "x ि")

    def test_accents_and_harakat_are_still_dropped(self) -> None:
        # Marks with a combining class (Latin accents, Arabic harakat, the virama and nukta
        # of Indic scripts, Thai tone marks) fold away as before and split nothing.
        assert fold("Kyi\u0308v مُحَمَّد क्ष ड़ ที่ ปู").lower == "kyiv محمد कष ड ที ป"
        assert fires("Kyiv", "Kyi\u0308v talks") and fires("محمد", "قال مُحَمَّد")

    def test_the_matcher_agrees_with_the_reference_search(self) -> None:
        import unicodedata

        from monitor.engine.evaluate import find_term_hits, fold_fields
        from monitor.engine.query import iter_terms
        from monitor.engine.text import WORD_START
        from monitor.model import FIELDS

        # ... with an enclosing mark (U+20DD) and an astral one (Chakma, U+11127) too.
        words = ["भारत", "भारतीय", "रूस", "रूसी", "ঢাক", "ঢাকা", "abc", "x", "สามี", "abc\u20dd", "x\U00011127"]
        ruleset = one_rule(" OR ".join([*words[:8], "abc*", "भार*"]))
        matcher = ruleset._matcher
        keys = {term.key for term in iter_terms(ruleset.query("r"))}
        rng = random.Random(3)
        for _ in range(60):
            text = "".join(rng.choice(words) + rng.choice([" ", ", ", "ि ", " ा", "-", "ः"]) for _ in range(12))
            fields = fold_fields(article(text))
            _present, context = matcher.scan(fields)
            hits = context.load_keys({matcher._key_ids[key] for key in keys})
            for key in keys:
                expected = [hit for index in range(len(FIELDS)) for hit in find_term_hits(key, fields[index], index)]
                assert sorted(hits.get(matcher._key_ids[key], [])) == sorted(expected), (key, text)
            # NEAR's words are the scan view's: a word starts where a run of letters, digits
            # and marks does.
            lower = fields[FIELDS.index("body")].lower
            runs = [i for i, c in enumerate(lower) if (c.isalnum() or unicodedata.category(c)[0] == "M")
                    and (i == 0 or not (lower[i - 1].isalnum() or unicodedata.category(lower[i - 1])[0] == "M"))]
            assert [found.start() for found in WORD_START.finditer(lower)] == runs, text

    def test_the_mark_table_covers_every_mark(self) -> None:
        import sys
        import unicodedata

        from monitor.engine import text as text_module

        marks = [code for code in range(sys.maxunicode + 1) if unicodedata.category(chr(code))[0] == "M"]
        beyond = [code for code in marks if code > text_module._LAST_MARK and not 0xE0100 <= code <= 0xE01EF]
        assert max(code for code in marks if code < 0xE0000) == text_module._LAST_MARK and not beyond
        classes = "[" + text_module.mark_class() + "]"
        assert all(__import__("re").fullmatch(classes, chr(code)) for code in marks)
        # Folding gives a mark only for a mark it keeps, or a character folding to several
        # (Thai ำ): what fold() looks up to know whether to look for stray marks.
        folding = [chr(code) for code in range(0x80, sys.maxunicode + 1) if not 0xD800 <= code < 0xE000]
        folding = [char for char in folding if unicodedata.decomposition(char) or unicodedata.category(char)[0] == "M"]
        for char in folding:
            folded = text_module.fold_char(char)
            if any(unicodedata.category(c)[0] == "M" for c in folded):
                assert char in text_module._KEPT_MARKS or len(folded) > 1, f"U+{ord(char):04X}"


DOCS = __import__("pathlib").Path(__file__).resolve().parents[2] / "docs" / "rules.md"
TABLE_MARK = "<!-- generated from monitor.engine.text.folding_table(); tests/engine/test_text.py checks it -->"


def _glyph(char: str) -> str:
    shown = char.isprintable() and not char.isspace() and char != "`"
    return f"`{char}` U+{ord(char):04X}" if shown else f"U+{ord(char):04X}"


def folding_table_markdown() -> list[str]:
    """docs/rules.md's table of what folds beyond NFKD, from the code's own tables."""
    from monitor.engine.text import folding_table

    lines = [TABLE_MARK, "| characters | fold to |", "|---|---|"]
    for chars, folded in folding_table():
        target = "a space" if folded == " " else "nothing" if not folded else f"`{folded}`"
        lines.append(f"| {', '.join(map(_glyph, chars))} | {target} |")
    return lines


class TestFoldingIsDocumented:
    def test_the_docs_table_is_the_code_table(self) -> None:
        expected = folding_table_markdown()
        text = DOCS.read_text(encoding="utf-8").splitlines()
        assert TABLE_MARK in text, "docs/rules.md lost its folding table; put this in:\n" + "\n".join(expected)
        start = text.index(TABLE_MARK)
        assert text[start : start + len(expected) + 1] == [*expected, ""], "regenerate:\n" + "\n".join(expected)

    def test_the_docs_describe_every_fold(self) -> None:
        """Every character folds as docs/rules.md says: its table, else Hangul kept whole,
        else NFKD without marks, case-folded where lower case differs, each character of
        that folded again. Checked over the first three planes of Unicode."""
        import unicodedata

        from monitor.engine.text import fold_char

        table: dict[str, str] = {}
        start = DOCS.read_text(encoding="utf-8").splitlines().index(TABLE_MARK)
        for line in DOCS.read_text(encoding="utf-8").splitlines()[start + 3 :]:
            if not line.startswith("|"):
                break
            chars, target = (cell.strip() for cell in line.strip("|").split("|"))
            folded = " " if target == "a space" else "" if target == "nothing" else target.strip("`")
            for item in chars.split(", "):
                table[chr(int(item.rsplit("U+", 1)[1], 16))] = folded

        def documented(char: str) -> str:
            if char in table:
                return table[char]
            if "\uac00" <= char <= "\ud7a3" or ("\u3041" <= char <= "\u30ff" and char not in "\u3099\u309a"):
                return char
            text = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
            if text.lower() != text.casefold() or len(text.lower()) != len(text):
                text = "".join(c for c in unicodedata.normalize("NFKD", text.casefold()) if not unicodedata.combining(c))
            return "".join(table.get(c, c) if c.isascii() or c == char else documented(c) for c in text)

        wrong = []
        for code in range(0x80, 0x30000):
            char = chr(code)
            if 0xD800 <= code < 0xE000:
                continue
            if fold_char(char) != documented(char):
                wrong.append((f"U+{code:04X}", fold_char(char), documented(char)))
        assert not wrong, wrong[:20]

    def test_folding_a_folded_character_changes_nothing(self) -> None:

        for char in "ǿǾǽǼℏ⁻₋ﬁŉ‴Støre":
            once = fold(char).cased
            assert fold(once).cased == once, char
        assert fold("Ǿ ǽ ℏ").lower == "o ae h"

    def test_many_distinct_characters_fold_like_few(self, monkeypatch) -> None:
        """Past a couple of hundred distinct characters to fold, one translate pass (and one
        regex pass for the characters that expand) does what a pass per character does."""
        from monitor.engine import text as text_module
        from monitor.engine.text import fold_char

        chars = [chr(c) for c in range(0xC0, 0x3400) if fold_char(chr(c)) != chr(c)]
        assert sum(len(fold_char(c)) == 1 for c in chars) > 250 and sum(len(fold_char(c)) > 1 for c in chars) > 250
        text = " ".join(chars) + " Ænd ß"
        single_pass = fold(text)
        monkeypatch.setattr(text_module, "_PASSES", 10**6)
        assert fold(text) == single_pass
