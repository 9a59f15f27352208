"""Rules across languages: lang: scopes, lists with language sections, stems as prefixes,
Arabic attached prefixes, and the matcher agreeing with the reference term search."""

from __future__ import annotations

import io

import pytest

from monitor.engine import RuleSetError
from monitor.engine.evaluate import find_term_hits, fold_fields
from monitor.engine.languages import arabic_variants, stem_prefix
from monitor.engine.query import iter_terms, parse_term
from monitor.engine.tools import check, evaluate, language_warnings
from monitor.model import FIELDS, Article
from tests.engine.helpers import one_rule, rules_from

LISTS = """\
lists:
  summit_words:
    all: [G7]
    fr: [sommet]
    de: [Gipfel]
    ru: [саммит, "встреча на высшем уровне"]
    zh: [峰会]
  sanctions:
    ru: [санкции]
    de: [Sanktion]
    it: ['"vertice"']
    ar: [عقوبات]
"""


def lang_article(text: str, lang: str | None) -> Article:
    return Article(id="a", feed_url="test", body=text, lang=lang)


def fires_in(query: str, text: str, lang: str | None, lists: str = LISTS) -> bool:
    return bool(one_rule(query, lists).match(lang_article(text, lang)))


class TestLanguageSections:
    def test_an_entry_counts_in_its_own_language_only(self) -> None:
        assert fires_in("@summit_words", "Le sommet de Paris", "fr")
        assert not fires_in("@summit_words", "Le sommet de Paris", "de")
        assert fires_in("@summit_words", "峰会在北京举行", "zh")

    def test_all_entries_count_in_every_language_and_in_none(self) -> None:
        for lang in ("fr", "nl", None):
            assert fires_in("@summit_words", "the G7 met", lang)

    def test_an_article_of_unknown_or_uncovered_language_gets_the_neutral_entries_only(self) -> None:
        assert not fires_in("@summit_words", "Le sommet de Paris", None)
        assert not fires_in("@summit_words", "Le sommet de Paris", "nl")

    def test_an_entry_and_a_plain_term_with_the_same_text_are_separate(self) -> None:
        lists = "lists:\n  w:\n    fr: [Paris]\n"
        assert fires_in("@w OR Paris", "Paris", "de", lists)
        assert not fires_in("@w", "Paris", "de", lists)

    def test_the_evidence_names_the_list_and_the_language(self) -> None:
        matches = one_rule("@summit_words", LISTS).match(lang_article("Le sommet de Paris", "fr"))
        assert [hit.term for hit in matches[0].hits] == ["@summit_words:fr:sommet"]

    def test_unknown_section_code_is_a_located_error(self) -> None:
        with pytest.raises(RuleSetError) as error:
            rules_from("lists:\n  w:\n    fr: [a]\n    xx: [b]\nrules:\n  - id: r\n    query: '@w'\n")
        text = str(error.value)
        assert "test.yaml:4:5" in text and "unknown language code 'xx'" in text

    def test_a_list_whose_only_section_is_refused_is_not_also_called_empty(self) -> None:
        # It had an entry; "list 'w' is empty (add at least one term)" sent the operator
        # looking for a missing term.
        with pytest.raises(RuleSetError) as error:
            rules_from("lists:\n  w:\n    xx: [b]\nrules:\n  - id: r\n    query: 'a'\n")
        assert [e.message for e in error.value.errors] == ["unknown language code 'xx' in list 'w'"]


LEADERS = """\
lists:
  leaders:
    all: [Putin, Trump]
    fr: [Putin, Macron]
"""


class TestOneEntryAcrossSections:
    """An all: entry counts in every article, so in a French one it is matched beside the
    fr: section: the same term in both is one entry, and one mention counts once."""

    def test_one_mention_is_one_entry_of_k_of(self) -> None:
        assert not fires_in("2 OF @leaders", "Putin est arrivé à Paris.", "fr", LEADERS)
        assert fires_in("2 OF @leaders", "Putin et Macron sont arrivés.", "fr", LEADERS)
        assert fires_in("2 OF @leaders", "Putin and Trump arrived.", "en", LEADERS)
        assert not fires_in("2 OF (@leaders, Putin)", "Putin est arrivé.", "fr", LEADERS)
        assert not fires_in("2 OF (Putin, @leaders)", "Putin est arrivé.", "fr", LEADERS)

    def test_one_mention_is_one_entry_of_k_of_near(self) -> None:
        query = "2 OF @leaders NEAR/5 sommet"
        assert not fires_in(query, "Putin arrive au sommet.", "fr", LEADERS)
        assert fires_in(query, "Putin et Macron arrivent au sommet.", "fr", LEADERS)

    def test_both_spellings_still_match_and_name_their_section(self) -> None:
        lists = "lists:\n  w:\n    all: [Sanktion]\n    de: [Sanktion, Embargo]\n"
        assert fires_in("@w", "Die Sanktionen", "de", lists)  # the de: entry's stem
        assert not fires_in("@w", "Die Sanktionen", "fr", lists)
        assert fires_in("@w", "une Sanktion", "fr", lists)  # the all: entry
        (match,) = one_rule("2 OF @w", lists).match(lang_article("Sanktion und Embargo", "de"))
        assert [hit.term for hit in match.hits] == ["@w:Sanktion", "@w:de:Sanktion", "@w:de:Embargo"]
        assert not fires_in("2 OF @w", "Sanktion, Sanktionen", "de", lists)

    def test_an_all_entry_and_a_section_entry_cut_to_one_stem_are_one_entry_without_a_warning(self) -> None:
        lists = "lists:\n  w:\n    all: [sommets, G7]\n    fr: [sommet]\n"
        ruleset = one_rule("2 OF @w", lists)
        assert ruleset.warnings == ()
        assert not ruleset.match(lang_article("les sommets", "fr"))
        assert ruleset.match(lang_article("les sommets du G7", "fr"))

    def test_k_counts_the_entries(self) -> None:
        with pytest.raises(RuleSetError, match=r"2 OF with 1 item\(s\) \(1 repeating an earlier one counted once\)"):
            one_rule("2 OF @w", "lists:\n  w:\n    all: [Putin]\n    fr: [Putin]\n")
        one_rule("2 OF @w", "lists:\n  w:\n    fr: [Putin]\n    de: [Putin]\n")  # never in one article

    def test_check_warns_at_the_later_entry(self, tmp_path) -> None:
        (tmp_path / "r.yaml").write_text(LEADERS + "rules:\n  - id: r\n    query: '2 OF @leaders'\n", encoding="utf-8")
        out = io.StringIO()
        assert check([tmp_path], out) == 0
        assert out.getvalue().splitlines()[0] == (
            f"{tmp_path / 'r.yaml'}:4:10: warning: list 'leaders' has 'Putin' in its all: and fr: sections: "
            "it is the same term as 'Putin' once folded, and counts once"
        )


class TestStems:
    @pytest.mark.parametrize(
        ("lang", "entry", "text"),
        [
            ("ru", "санкции", "новые санкциями"),
            ("ru", "санкции", "пакет санкций"),
            ("ru", "встреча на высшем уровне", "встреча на высшем уровнях"),
            ("de", "Sanktion", "neue Sanktionen"),
            ("fr", "sommet", "les sommets"),
            ("es", "sanción", "las sanciones"),
            ("it", "tetto", "nuovi tetti"),
        ],
    )
    def test_a_word_matches_its_inflections(self, lang: str, entry: str, text: str) -> None:
        lists = f"lists:\n  w:\n    {lang}: ['{entry}']\n"
        assert fires_in("@w", text, lang, lists)

    def test_quoted_short_wildcard_and_case_sensitive_entries_are_kept_as_written(self) -> None:
        assert not fires_in("@sanctions", "i vertici aziendali", "it")
        assert fires_in("@sanctions", "il vertice Nato", "it")
        assert parse_term("=Gipfel", lang="de").key.wildcard is False
        assert parse_term("Gipf*", lang="de").key.pattern == "gipf"
        assert stem_prefix("de", "gas") is None  # four letters or fewer: the word itself
        assert stem_prefix("en", "sanctions") is None  # English entries are not stemmed

    def test_a_stem_keeps_at_least_five_letters(self) -> None:
        # Snowball cuts the Spanish "desarme" to "des", which would match "después".
        assert stem_prefix("es", "desarme") == "desar"

    def test_a_word_with_a_digit_is_not_stemmed(self) -> None:
        lists = "lists:\n  w:\n    fr: [COVID19, sommet]\n"
        assert fires_in("@w", "le COVID19", "fr", lists) and not fires_in("@w", "les COVID19s", "fr", lists)


class TestArabic:
    def test_attached_prefixes(self) -> None:
        for text in ("فرض العقوبات", "والعقوبات الجديدة", "بالعقوبات", "وعقوبات", "للعقوبات"):
            assert fires_in("@sanctions", text, "ar"), text

    def test_a_longer_word_is_not_a_prefix_hit(self) -> None:
        assert not fires_in("@sanctions", "عقوباتها", "ar")

    def test_orthographic_variants_fold(self) -> None:
        # Diacritics, hamza forms, ta marbuta and tatweel are written or left out at will.
        assert fires_in("القمة", "عقدت القِمّـة في الرياض", None, "")
        assert fires_in("أمريكا", "قالت امريكا", None, "")
        assert fires_in("مصطفى", "مصطفي", None, "")

    def test_quoted_terms_take_prefixes_and_case_sensitive_ones_are_matched_as_written(self) -> None:
        # docs/rules.md said "any term in Arabic script"; an = term never took them.
        assert fires_in('"عقوبات"', "والعقوبات", None, "")
        assert not fires_in("=عقوبات", "والعقوبات", None, "")
        assert fires_in("=عقوبات", "فرض عقوبات", None, "")

    def test_variants_of_a_word_with_the_article(self) -> None:
        assert arabic_variants("القمه")[:2] == ("القمه", "والقمه")
        assert "للقمه" in arabic_variants("القمه")


class TestLangScope:
    def test_lang_scope(self) -> None:
        assert fires_in("lang:fr AND Paris", "Paris", "fr", "")
        assert not fires_in("lang:fr AND Paris", "Paris", "de", "")
        assert fires_in("lang:(fr OR de) AND Paris", "Paris", "de", "")
        assert not fires_in("lang:(fr OR de) AND Paris", "Paris", None, "")
        assert fires_in("Paris AND NOT lang:fr", "Paris", None, "")

    def test_a_lang_scope_alone_matches_nothing_and_is_refused(self) -> None:
        with pytest.raises(RuleSetError, match="contains none of its terms"):
            one_rule("lang:fr")

    @pytest.mark.parametrize(("query", "column"), [("lang:xx AND a", 6), ("a AND lang:(fr OR FR)", 19), ("lang:() AND a", 7)])
    def test_an_unknown_code_is_a_located_error(self, query: str, column: int) -> None:
        with pytest.raises(RuleSetError) as error:
            one_rule(query)
        assert f"test.yaml:3:{column + 12}" in str(error.value), str(error.value)

    def test_a_lang_scope_cannot_be_a_near_operand(self) -> None:
        with pytest.raises(RuleSetError, match="NEAR/5 needs a term"):
            one_rule("lang:fr NEAR/5 a")


@pytest.mark.parametrize("lang", ["ar", "fr", "ru", None])
def test_the_matcher_agrees_with_the_reference_search(lang: str | None) -> None:
    """Every key of a multilingual rule: the hits the automaton's scan reports are the
    hits of the regex reference search, language by language."""
    ruleset = one_rule("@summit_words OR @sanctions OR قمة OR Gipfel*", LISTS)
    matcher = ruleset._matcher
    text = "والقمة قمة القمم. Le sommet, les sommets; Gipfeltreffen. санкциями санкции عقوبات وبالعقوبات"
    fields = fold_fields(Article(id="a", feed_url="t", title=text, body=text, lang=lang))
    present, context = matcher.scan(fields, lang)
    keys = {term.key for term in iter_terms(ruleset.query("r"))}
    hits = context.load_keys({matcher._key_ids[key] for key in keys})
    for key in keys:
        expected = [hit for index in range(len(FIELDS)) for hit in find_term_hits(key, fields[index], index, lang)]
        assert sorted(hits.get(matcher._key_ids[key], [])) == sorted(expected), key
        assert (matcher._key_ids[key] in present) == bool(expected), key


class TestTools:
    def test_check_warns_about_a_list_missing_a_language_the_set_has(self, tmp_path) -> None:
        (tmp_path / "r.yaml").write_text(
            "lists:\n  a:\n    fr: [x]\n    de: [y]\n  b:\n    fr: [z]\nrules:\n  - id: r\n    query: '@a AND @b'\n",
            encoding="utf-8",
        )
        out = io.StringIO()
        assert check([tmp_path], out) == 0
        lines = out.getvalue().splitlines()
        assert lines[0] == (
            f"{tmp_path / 'r.yaml'}:8:5: warning: rule 'r' uses @b, which has no entries for de "
            "(the rule set has lists in 2 languages): articles in those languages match only its all: entries"
        )
        assert lines[1].startswith("OK: 1 rules")

    def test_the_shipped_rules_have_no_language_warnings(self) -> None:
        from monitor.engine import load_rules
        from tests.engine.helpers import RULES_DIR

        ruleset = load_rules([RULES_DIR])
        assert language_warnings(ruleset) == []
        assert ruleset.warnings == ()  # no list entry given twice (Lai Ching-te was)

    def test_eval_by_language(self, tmp_path) -> None:
        (tmp_path / "r.yaml").write_text(LISTS + "rules:\n  - id: summit\n    query: '@summit_words'\n", encoding="utf-8")
        (tmp_path / "set.jsonl").write_text(
            '{"id": "1", "lang": "fr", "text": "Le sommet", "labels": ["summit"]}\n'
            '{"id": "2", "text": "Le sommet de Paris a réuni les dirigeants du monde entier.", "labels": ["summit"]}\n'
            '{"id": "3", "lang": "de", "text": "Der Gipfel", "labels": []}\n'
            '{"id": "4", "lang": "de-AT", "text": "Nichts", "labels": []}\n',
            encoding="utf-8",
        )
        out = io.StringIO()
        assert evaluate(tmp_path / "set.jsonl", [tmp_path], out, by_lang=True) == 0
        text = out.getvalue()
        assert "by language (de 2, fr 2 passages)" in text
        assert "summit  de       0    1    0      0.000  1.000  0.000" in text
        # The line without lang was detected as French.
        assert "summit  fr       2    0    0      1.000  1.000  1.000" in text

    def test_eval_refuses_a_bad_lang(self, tmp_path) -> None:
        (tmp_path / "set.jsonl").write_text('{"id": "1", "lang": "french", "text": "x", "labels": []}\n', encoding="utf-8")
        out = io.StringIO()
        assert evaluate(tmp_path / "set.jsonl", ["rules"], out) == 1
        assert "set.jsonl:1: 'lang' must be an ISO 639-1 code" in out.getvalue()
