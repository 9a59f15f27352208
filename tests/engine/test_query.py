"""The query language: each feature, precedence and the implicit operator."""

from __future__ import annotations

import pytest

from monitor.engine import RuleSetError
from monitor.engine.query import And, AtLeast, Near, Not, Or, QueryError, Term, parse_query
from tests.engine.helpers import article, fires, one_rule

LEADERS = "lists:\n  leaders: [Putin, Trump, Xi Jinping, zelensk*]\n"


class TestTerms:
    def test_bare_term_is_case_insensitive(self) -> None:
        assert fires("putin", "PUTIN arrives")

    def test_phrase_needs_adjacent_words(self) -> None:
        assert not fires('"arms control"', "arms and control")

    def test_wildcard_matches_word_continuations(self) -> None:
        assert fires("sanction*", "new sanctions on oil")

    def test_wildcard_matches_the_prefix_itself(self) -> None:
        assert fires("sanction*", "a sanction")

    def test_wildcard_does_not_match_inside_words(self) -> None:
        assert not fires("sanction*", "unsanctioned")

    def test_wildcard_hit_covers_the_whole_word(self) -> None:
        (match,) = one_rule("sanction*").match(article("new sanctions."))
        assert match.hits[0].text == "sanctions"

    def test_wildcard_in_phrase_applies_to_last_word(self) -> None:
        assert fires('"nuclear weapon*"', "nuclear weapons programme")

    def test_case_sensitive_term_matches_exact_case(self) -> None:
        assert fires("=START", "the START treaty")

    def test_case_sensitive_term_rejects_other_case(self) -> None:
        assert not fires("=START", "a new start for the firm")

    def test_case_sensitive_phrase(self) -> None:
        assert not fires('="New START"', "a New Start for the firm")

    def test_case_sensitive_term_is_still_accent_insensitive(self) -> None:
        assert fires("=IAEA", "the ÍAEA said")


class TestBoolean:
    def test_and_needs_both(self) -> None:
        assert not fires("putin AND trump", "Putin spoke")

    def test_or_needs_either(self) -> None:
        assert fires("putin OR trump", "Trump spoke")

    def test_not_excludes(self) -> None:
        assert not fires("sanctions AND NOT football", "football sanctions")

    def test_implicit_operator_is_and(self) -> None:
        node = parse_query("putin trump")
        assert isinstance(node, And) and [child.label for child in node.children] == ["putin", "trump"]

    def test_lowercase_operators_are_words(self) -> None:
        assert fires("rock and roll", "rock and roll")
        assert isinstance(parse_query("rock and roll"), And)

    def test_and_binds_tighter_than_or(self) -> None:
        node = parse_query("a OR b AND c")
        assert isinstance(node, Or) and isinstance(node.children[1], And)

    def test_not_binds_tighter_than_and(self) -> None:
        node = parse_query("a AND NOT b c")
        assert isinstance(node, And) and isinstance(node.children[1], Not) and len(node.children) == 3

    def test_near_binds_tighter_than_and(self) -> None:
        node = parse_query("a b NEAR/3 c")
        assert isinstance(node, And) and isinstance(node.children[1], Near)

    def test_parentheses_override_precedence(self) -> None:
        assert isinstance(parse_query("(a OR b) AND c"), And)


class TestNear:
    def test_within_distance_fires(self) -> None:
        assert fires("Putin NEAR/3 Trump", "Putin will meet Trump")

    def test_beyond_distance_does_not_fire(self) -> None:
        assert not fires("Putin NEAR/1 Trump", "Putin will meet Trump")

    def test_order_does_not_matter(self) -> None:
        assert fires("Trump NEAR/2 Putin", "Putin will meet Trump")

    def test_zero_means_adjacent(self) -> None:
        assert fires("Putin NEAR/0 Trump", "a Putin–Trump summit")

    def test_possessive_counts_as_one_word(self) -> None:
        assert fires("Putin NEAR/0 summit", "Putin’s summit")

    def test_both_sides_in_the_same_field(self) -> None:
        assert not fires("Putin NEAR/5 Trump", body="Trump spoke", title="Putin")

    def test_near_accepts_or_groups_and_phrases(self) -> None:
        assert fires('(summit OR talks) NEAR/4 "Vladimir Putin"', "talks with Vladimir Putin")

    def test_near_evidence_is_the_close_pair(self) -> None:
        body = "Trump spoke. " + "filler " * 30 + "Putin met Trump."
        (match,) = one_rule("Putin NEAR/2 Trump").match(article(body))
        assert [hit.start for hit in match.hits] == [body.index("Putin"), body.rindex("Trump")]


class TestNearKOf:
    LISTS = "lists:\n  leaders: [Trump, Putin, Xi]\n  meet: [met, meet, talks]\n"

    def fires(self, body: str) -> bool:
        return fires("2 OF @leaders NEAR/5 @meet", body, lists=self.LISTS)

    def test_parses_as_near_of_k_of(self) -> None:
        node = parse_query("2 OF (a, b, c) NEAR/5 (d OR e)")
        assert isinstance(node, Near) and isinstance(node.left, AtLeast) and node.left.k == 2

    def test_two_different_entries_near_the_other_side(self) -> None:
        assert self.fires("Trump met Putin in Alaska.")
        assert self.fires("Putin arrived. Xi and Putin held talks.")

    def test_one_entry_twice_is_not_two(self) -> None:
        assert not self.fires("Trump met Trump's advisers.")

    def test_each_counted_entry_must_itself_be_near(self) -> None:
        far = "Trump met his adviser. " + "Then the story went on about other things entirely. " * 3 + "Putin was not there."
        assert not self.fires(far)
        assert fires("2 OF @leaders AND @meet NEAR/5 @leaders", far, lists=self.LISTS)  # what K OF alone allows

    def test_evidence_is_the_near_spans(self) -> None:
        body = "Xi spoke. " + "filler " * 20 + "Trump met Putin."
        (match,) = one_rule("2 OF @leaders NEAR/5 @meet", self.LISTS).match(article(body))
        assert [hit.text for hit in match.hits] == ["Trump", "met", "Putin"]


class TestFields:
    def test_title_scope(self) -> None:
        assert fires("title:summit", title="Summit in Alaska", body="no")

    def test_title_scope_ignores_body(self) -> None:
        assert not fires("title:summit", title="Talks", body="summit")

    def test_scope_applies_to_group(self) -> None:
        assert fires("summary:(putin OR trump)", summary="Trump", body="x")

    def test_default_is_all_fields(self) -> None:
        assert fires("putin", summary="Putin")

    def test_hit_names_its_field(self) -> None:
        (match,) = one_rule("putin").match(article(title="Putin"))
        assert match.hits[0].field == "title"


class TestAtLeast:
    def test_k_distinct_items(self) -> None:
        assert fires("2 OF (Putin, Trump, Xi)", "Putin and Xi")

    def test_fewer_than_k_does_not_fire(self) -> None:
        assert not fires("2 OF (Putin, Trump, Xi)", "Putin and Putin again")

    def test_k_of_a_list(self) -> None:
        assert fires("2 OF @leaders", "Zelenskyy and Xi Jinping", lists=LEADERS)

    def test_items_can_be_expressions(self) -> None:
        assert isinstance(parse_query("1 OF (a b, c)"), AtLeast)

    def test_list_entries_that_fold_to_one_term_count_once(self) -> None:
        # "Xi" and "XI" (or "Kyiv" and "Kyïv") are one term once folded: two entries let
        # one mention count twice, so "2 OF @leaders" held for "Xi" alone.
        lists = "lists:\n  leaders: [Putin, Xi, XI, Kyïv, Kyiv, Trump]\n"
        assert not fires("2 OF @leaders", "Xi arrived", lists=lists)
        assert not fires("2 OF @leaders NEAR/5 talks", "Xi held talks", lists=lists)
        assert fires("2 OF @leaders", "Xi met Putin", lists=lists)
        ruleset = one_rule("@leaders", lists)
        assert [spec.label for spec in ruleset.lists["leaders"]] == ["Putin", "Xi", "Kyïv", "Trump"]
        (match,) = ruleset.match(article("XI spoke"))
        assert [hit.term for hit in match.hits] == ["@leaders:Xi"]

    def test_items_repeating_a_term_count_once(self) -> None:
        # Across lists, and between a list and a term item, in the same fields.
        lists = "lists:\n  leaders: [Putin, Xi]\n  hosts: [xi, Trump]\n"
        assert not fires("2 OF (@leaders, @hosts)", "Xi arrived", lists=lists)
        assert not fires("2 OF (@leaders, Putin)", "Putin arrived", lists=lists)
        assert fires("2 OF (@leaders, @hosts)", "Xi met Trump", lists=lists)
        assert fires("2 OF (title:Xi, Xi)", "Xi arrived", title="Xi") and not fires("2 OF (title:Xi, Xi)", "Xi arrived")
        with pytest.raises(RuleSetError, match=r"2 OF with 1 item\(s\) \(1 repeating an earlier one counted once\)"):
            one_rule("2 OF (Xi, XI)")

    def test_check_warns_about_a_list_entry_given_twice(self, tmp_path) -> None:
        import io

        from monitor.engine.tools import check

        (tmp_path / "r.yaml").write_text(
            "lists:\n  leaders:\n    - Xi\n    - Putin\n    - XI\nrules:\n  - id: r\n    query: '2 OF @leaders'\n"
        )
        out = io.StringIO()
        assert check([tmp_path], out) == 0
        assert out.getvalue().splitlines()[0] == (
            f"{tmp_path / 'r.yaml'}:5:7: warning: list 'leaders' has 'XI' twice: "
            "it is the same term as 'Xi' once folded, and counts once"
        )

    def test_entries_of_a_section_with_one_stem_count_once_without_a_warning(self) -> None:
        lists = "lists:\n  summit_words:\n    fr: [sommet, sommets, Sommet]\n    de: [sommet]\n"
        ruleset = one_rule("2 OF @summit_words", "lists:\n  summit_words:\n    fr: [sommet, sommets, Sommet, G7]\n")
        assert [spec.label for spec in ruleset.lists["summit_words"]] == ["fr:sommet", "fr:G7"]
        assert [warning.split(": ", 2)[2] for warning in ruleset.warnings] == [
            "list 'summit_words' has 'Sommet' twice: it is the same term as 'sommet' once folded, and counts once"
        ]
        assert len(one_rule("@summit_words", lists).lists["summit_words"]) == 2  # another section, another term


class TestLists:
    def test_list_is_or_of_entries(self) -> None:
        assert fires("@leaders", "Zelensky spoke", lists=LEADERS)

    def test_list_entry_is_a_phrase(self) -> None:
        assert not fires("@leaders", "Xi and Jinping", lists=LEADERS)

    def test_list_hits_name_the_list(self) -> None:
        (match,) = one_rule("@leaders", LEADERS).match(article("Putin"))
        assert match.hits[0].term == "@leaders:Putin"

    def test_list_from_another_file_is_visible(self, tmp_path) -> None:
        from monitor.engine import load_rules

        (tmp_path / "a.yaml").write_text("rules:\n  - id: r\n    query: '@start_treaty'\n")
        (tmp_path / "b.yaml").write_text(
            "lists:\n  start_treaty: ['=New START', Strategic Arms Reduction Treaty]\n"
        )
        ruleset = load_rules([tmp_path])
        assert ruleset.match(article("the Strategic Arms Reduction Treaty"))


def test_parse_produces_terms_with_fields() -> None:
    node = parse_query("title:putin")
    assert isinstance(node, Term) and node.fields == ("title",)


@pytest.mark.parametrize("space", ["\u00a0", "\u3000", "\u2009"])
def test_any_whitespace_separates_terms_and_operators(space: str) -> None:
    # A no-break or ideographic space (pasted from a document, typed with a CJK input
    # method) used to glue its neighbours into one term: the phrase "putin trump", or
    # the term "putin AND trump".
    assert fires(f"putin{space}trump", "Trump said that Putin would come.")
    assert fires(f"putin{space}AND{space}trump", "Trump said that Putin would come.")
    assert fires(f"putin{space}NEAR/3{space}trump", "Trump and Putin")
    assert not fires(f"putin{space}NOT{space}trump", "Trump and Putin")


class TestFullWidthSyntax:
    """A CJK input method in full-width mode types ＯＲ, （ ）, ， and ＮＥＡＲ／３: NFKC
    reads them as OR, ( ), , and NEAR/3, and so does the parser (they were words)."""

    @pytest.mark.parametrize(
        "written, ascii_query",
        [
            ("Putin ＯＲ Trump", "Putin OR Trump"),
            ("Putin ＡＮＤ ＮＯＴ Trump", "Putin AND NOT Trump"),
            ("Putin ＮＥＡＲ／３ Trump", "Putin NEAR/3 Trump"),
            ("Putin ＮＥＡＲ/３ Trump", "Putin NEAR/3 Trump"),
            ("（Putin ＯＲ Xi）　Trump", "(Putin OR Xi) Trump"),
            ("２ ＯＦ （Putin，Trump，Xi）", "2 OF (Putin, Trump, Xi)"),
            ("２ ＯＦ ＠leaders", "2 OF @leaders"),
            ("ｔｉｔｌｅ：Putin ＡＮＤ ｌａｎｇ：ｆｒ", "title:Putin AND lang:fr"),
            ("＝ＮＡＴＯ ＯＲ ＂arms control＂ ＯＲ sanction＊", "=NATO OR \"arms control\" OR sanction*"),
        ],
    )
    def test_full_width_operators_are_operators(self, written: str, ascii_query: str) -> None:
        lists = {"leaders": one_rule("@leaders", LEADERS).lists["leaders"]}
        assert _keys(parse_query(written, lists)) == _keys(parse_query(ascii_query, lists))

    def test_they_match_as_the_ascii_query_does(self) -> None:
        assert fires("Putin ＮＥＡＲ／２ Trump", "Putin met Trump") and not fires("Putin ＮＥＡＲ／０ Trump", "Putin met Trump")
        assert fires("２ ＯＦ （Putin，Trump，Xi）", "Putin and Xi") and not fires("２ ＯＦ （Putin，Trump，Xi）", "Putin")
        assert fires("峰会 ＡＮＤ （北京 ＯＲ 上海）", "峰会在北京举行") and not fires("峰会 ＡＮＤ 北京", "峰会在上海举行")

    def test_a_term_keeps_what_was_written_as_its_label(self) -> None:
        (match,) = one_rule("ＮＡＴＯ ＯＲ Ｇ７").match(article("the G7 met"))
        assert [hit.term for hit in match.hits] == ["Ｇ７"]

    def test_lower_case_and_other_digits_are_still_words_or_errors(self) -> None:
        assert isinstance(parse_query("Putin ｏｒ Trump"), And)  # a word, as "or" is
        with pytest.raises(QueryError, match="bad proximity operator 'ＮＥＡＲ／٣'"):
            parse_query("Putin ＮＥＡＲ／٣ Trump")
        with pytest.raises(QueryError, match="unexpected '，'"):
            parse_query("Putin，Trump")


def _keys(node: object) -> object:
    """A query's shape with its terms' keys and fields (not their labels or offsets)."""
    if isinstance(node, Term):
        return ("term", node.key, node.fields)
    if isinstance(node, Not):
        return ("not", _keys(node.child))
    if isinstance(node, Near):
        return ("near", node.distance, _keys(node.left), _keys(node.right))
    if isinstance(node, AtLeast):
        return ("of", node.k, tuple(_keys(child) for child in node.children))
    if isinstance(node, (And, Or)):
        return (type(node).__name__, tuple(_keys(child) for child in node.children))
    return node
