"""Every kind of rule error names file, line and column, and says what would be right."""

from __future__ import annotations

import textwrap

import pytest

from monitor.engine import RuleSetError, load_rules, parse_rules
from monitor.engine.query import MAX_NESTING
from monitor.errors import RuleError
from tests.engine.helpers import article


def errors_of(text: str) -> list[RuleError]:
    with pytest.raises(RuleSetError) as caught:
        parse_rules(textwrap.dedent(text), "r.yaml")
    return caught.value.errors


def only_error(text: str) -> RuleError:
    (error,) = errors_of(text)
    return error


def query_error(query: str) -> RuleError:
    """The error for a rule whose query sits at line 3, content starting at column 13."""
    escaped = query.replace("'", "''")
    return only_error(f"rules:\n  - id: r\n    query: '{escaped}'\n")


def position(error: RuleError) -> tuple[int | None, int | None]:
    assert error.location is not None and error.location.path == "r.yaml"
    return error.location.line, error.location.column


class TestQueryErrors:
    def test_empty_query(self) -> None:
        error = query_error("")
        assert "empty query" in error.message and position(error)[0] == 3

    def test_unclosed_parenthesis_points_at_it(self) -> None:
        error = query_error("putin AND (trump")
        assert "unbalanced '('" in error.message and position(error) == (3, 13 + 10)
        assert "add ')'" in (error.hint or "")

    @pytest.mark.parametrize(("query", "column"), [("(putin OR)", 9), ("2 OF (putin,)", 12), ("title:(a AND)", 12)])
    def test_missing_term_before_a_closing_parenthesis(self, query: str, column: int) -> None:
        # The ')' closes its '(': it was reported as "unbalanced ')'", sending the
        # operator to count parentheses instead of finding the dangling OR or comma.
        error = query_error(query)
        assert error.message == "a term was expected before ')'" and position(error) == (3, 13 + column)

    def test_k_of_with_no_items(self) -> None:
        error = query_error("2 OF ()")
        assert error.message == "empty parentheses" and position(error) == (3, 13 + 5)

    def test_stray_closing_parenthesis(self) -> None:
        error = query_error("putin)")
        assert "unbalanced ')'" in error.message and position(error) == (3, 13 + 5)

    def test_unknown_field_suggests_the_closest(self) -> None:
        error = query_error("putin titel:summit")
        assert "unknown field 'titel'" in error.message and position(error) == (3, 13 + 6)
        assert "did you mean title:?" in (error.hint or "")

    @pytest.mark.parametrize("operator", ["NEAR", "NEAR/x", "NEAR/-1", "NEAR/1000"])
    def test_bad_near(self, operator: str) -> None:
        error = query_error(f"putin {operator} trump")
        assert "bad proximity operator" in error.message and position(error) == (3, 13 + 6)
        assert "NEAR/N" in (error.hint or "")

    @pytest.mark.parametrize("query", ["(2 OF (a, b) OR c) NEAR/3 d", "2 OF (a NEAR/1 b, c) NEAR/2 d", "2 OF (a, 2 OF (b, c, d)) NEAR/2 e"])
    def test_k_of_near_only_as_a_whole_operand_of_terms(self, query: str) -> None:
        error = query_error(query)
        assert "needs a term, phrase, @list, (a OR b) group or K OF such items" in error.message

    def test_near_of_an_and_is_refused(self) -> None:
        error = query_error("(a AND b) NEAR/3 c")
        assert "NEAR/3 needs a term" in error.message and position(error) == (3, 13)

    def test_unknown_list_suggests_the_closest(self) -> None:
        error = only_error(
            """\
            lists:
              leaders: [Putin]
            rules:
              - id: r
                query: 'summit @leadrs'
            """
        )
        assert "unknown list @leadrs" in error.message and error.location.line == 5
        assert error.location.column == 13 + 7 and "@leaders" in (error.hint or "")

    @pytest.mark.parametrize("operator", ["NEAR/\u00b2", "NEAR/\u0663"])
    def test_near_with_a_digit_that_is_not_ascii(self, operator: str) -> None:
        # "²" passed str.isdigit() and then crashed int() with a ValueError (a traceback
        # from rules check, a crashed reload); "٣" was read as 3 unseen. A full-width "３"
        # is read as 3, as the full-width NEAR is (test_query.TestFullWidthSyntax).
        error = query_error(f"putin {operator} trump")
        assert "bad proximity operator" in error.message and position(error) == (3, 13 + 6)

    @pytest.mark.parametrize("k", ["\u00b2", "\u0662"])
    def test_k_of_with_a_digit_that_is_not_ascii(self, k: str) -> None:
        error = query_error(f"{k} OF (putin, trump)")
        assert "OF needs a number before it" in error.message and position(error) == (3, 13 + 2)

    @pytest.mark.parametrize(
        ("entries", "expected"),
        [
            ("[null]", "r.yaml:2:7: each item of list 'l' must be a string"),
            ("{xx: [a]}", "r.yaml:2:7: unknown language code 'xx' in list 'l'"),
            ("[]", "r.yaml:2:3: list 'l' is empty"),
        ],
    )
    def test_a_refused_list_is_one_error(self, entries: str, expected: str) -> None:
        # Its use was also "unknown list @l (define it under a top-level lists: key)",
        # and a list whose one item was refused also "empty (add at least one term)".
        errors = errors_of(f"lists:\n  l: {entries}\nrules:\n  - id: r\n    query: '@l OR x'\n")
        assert [str(error).split(" (")[0] for error in errors] == [expected]

    @pytest.mark.parametrize("query", ["3 OF (a, b)", "0 OF (a, b)"])
    def test_bad_k(self, query: str) -> None:
        error = query_error(query)
        assert "K must be between 1 and 2" in error.message and position(error) == (3, 13)

    def test_query_without_positive_term(self) -> None:
        error = query_error("NOT football")
        assert "none of its terms" in error.message and "positive term" in (error.hint or "")

    def test_short_wildcard(self) -> None:
        error = query_error("putin ab*")
        assert "wildcard 'ab*'" in error.message and position(error) == (3, 13 + 6)

    def test_unterminated_phrase(self) -> None:
        error = query_error('putin "arms control')
        assert "unterminated" in error.message and position(error) == (3, 13 + 6)

    def test_trailing_operator(self) -> None:
        error = query_error("putin AND")
        assert "ends where a term was expected" in error.message

    def test_error_in_folded_block_query_points_at_its_line(self) -> None:
        error = only_error(
            """\
            rules:
              - id: r
                query: >-
                  putin AND
                  (trump OR titel:x)
            """
        )
        assert "unknown field" in error.message and position(error) == (5, 17)

    def test_plain_multiline_query_points_at_its_line(self) -> None:
        error = only_error("rules:\n  - id: r\n    query: putin AND\n      trump NEAR/y x\n")
        assert position(error) == (4, 13)

    @pytest.mark.parametrize(
        ("query", "where"),
        [
            # A more-indented line keeps its extra spaces in a block scalar's value.
            ("query: >-\n      (putin OR trump)\n        AND titel:x\n", (5, 13)),
            ("query: |\n      (putin OR trump)\n\n        AND ab*\n", (6, 13)),
            ("query: >-\n      putin\n\n      AND ab*\n", (6, 11)),
            # Escapes take two characters of the file for one of the query.
            ("query: 'putin''s talks AND ab*'\n", (3, 32)),
            ('query: "putin \\"x\\" AND ab*"\n', (3, 29)),
            ("query: putin AND\n      trump NEAR/y x\n", (4, 13)),
        ],
        ids=["folded-more-indented", "literal-blank-line", "folded-blank-line", "single-quoted", "double-quoted", "plain"],
    )
    def test_the_location_is_the_character_in_the_file_whatever_the_style(self, query: str, where: tuple[int, int]) -> None:
        # The lines of a block scalar were taken stripped of all indentation and joined with
        # one character, so a more-indented line or a blank line in a literal block moved
        # the column, and an escape moved the rest of a quoted query.
        error = only_error(f"rules:\n  - id: r\n    {query}")
        assert position(error) == where

    @pytest.mark.parametrize(
        ("query", "column"),
        [
            ("(" * 5000 + "putin" + ")" * 5000, 13 + MAX_NESTING),
            ("NOT " * 3000 + "putin trump", 13 + 4 * MAX_NESTING),
            ("1 OF (" * 3000 + "putin" + ")" * 3000, 13 + 6 * MAX_NESTING + 5),
            # Parentheses and NOT count together.
            ("(" * 30 + "putin AND " + "NOT " * 30 + "trump" + ")" * 30, 13 + 30 + 10 + 4 * (MAX_NESTING - 30)),
        ],
        ids=["parentheses", "not", "k-of", "mixed"],
    )
    def test_nesting_past_the_limit_is_an_error_at_the_level_that_passes_it(self, query: str, column: int) -> None:
        # Before the limit, thousands of '(' were a RecursionError traceback.
        error = query_error(query)
        assert f"more than {MAX_NESTING} levels" in error.message and position(error) == (3, column)
        assert "flatten" in (error.hint or "")

    def test_nesting_up_to_the_limit_loads_and_matches(self) -> None:
        query = "(" * MAX_NESTING + "putin" + ")" * MAX_NESTING + " AND " + "NOT " * (MAX_NESTING - 1) + "xi"
        ruleset = parse_rules(f"rules:\n  - id: r\n    query: '{query}'\n", "r.yaml")
        # An odd number of NOTs: the rule needs "xi" to be absent.
        assert [m.rule.id for m in ruleset.match(article(body="Putin spoke."))] == ["r"]
        assert ruleset.match(article(body="Putin met Xi.")) == []

    def test_depth_is_nesting_not_the_count_of_groups(self) -> None:
        query = " OR ".join(f"(NOT a{i} AND (b{i}))" for i in range(3 * MAX_NESTING))
        assert parse_rules(f"rules:\n  - id: r\n    query: '{query}'\n", "r.yaml").rules[0].id == "r"


class TestFileErrors:
    def test_unknown_key_suggests_the_closest(self) -> None:
        error = only_error("rules:\n  - id: r\n    query: x\n    severty: high\n")
        assert "unknown key 'severty'" in error.message and position(error) == (4, 5)
        assert "did you mean 'severity'?" in (error.hint or "")

    def test_a_bad_id_is_told_what_an_id_starts_with(self) -> None:
        error = only_error("rules:\n  - id: _x\n    query: a\n")
        assert error.message == "bad rule id '_x'" and "starting with a letter or digit" in (error.hint or "")

    @pytest.mark.parametrize(
        ("rule", "where"),
        [
            ("id: " + "x" * 235, (2, 9)),  # alerts.<id>.signals: 250 characters
            ("id: x\n    mode: shadow\n    topic: " + "t" * 235, (4, 12)),  # <topic>.shadow.signals
        ],
        ids=["default-topic", "shadow"],
    )
    def test_a_topic_kafka_would_refuse_is_an_error(self, rule: str, where: tuple[int, int]) -> None:
        # Loaded before, and then every alert of the rule was refused by the broker.
        error = only_error(f"rules:\n  - {rule}\n    query: a\n")
        assert error.message == "the rule's signals topic would be 250 characters long, more than Kafka's 249"
        assert position(error) == where
        parse_rules(f"rules:\n  - id: {'x' * 234}\n    query: a\n", "r.yaml")  # 249 is allowed

    def test_unknown_top_level_key(self) -> None:
        error = only_error("rule:\n  - id: r\n")
        assert "unknown key 'rule'" in error.message and "'rules'" in (error.hint or "")

    def test_duplicate_key(self) -> None:
        error = only_error("rules:\n  - id: r\n    query: x\n    query: y\n")
        assert "duplicate key 'query'" in error.message and position(error) == (4, 5)
        assert "line 3" in (error.hint or "")

    def test_alias_of_a_list_is_refused_at_its_anchor(self) -> None:
        # The "billion laughs": nested aliases expand a few lines into billions of items.
        levels = ['a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
        for previous, name in zip("abcdefgh", "bcdefghi"):
            levels.append(f"{name}: &{name} [" + ", ".join([f"*{previous}"] * 10) + "]")
        text = "\n".join(levels) + "\nrules:\n  - id: r\n    query: x\n    tags: *i\n"
        errors = errors_of(text)
        assert [position(e) for e in errors] == [(line, 4) for line in range(1, 10)]
        assert all("alias" in e.message and "named list" in (e.hint or "") for e in errors)

    def test_alias_of_a_scalar_is_fine(self) -> None:
        ruleset = parse_rules("rules:\n  - id: a\n    query: x\n    severity: &s high\n  - id: b\n    query: y\n    severity: *s\n", "r.yaml")
        assert [r.severity for r in ruleset.rules] == ["high", "high"]

    def test_deep_yaml_nesting_is_an_error_not_a_crash(self) -> None:
        # libyaml accepts up to 1,000 levels, deeper than Python's default recursion limit.
        error = only_error("rules: " + "[" * 995 + "]" * 995 + "\n")
        assert "each rule must be a mapping" in error.message

    def test_duplicate_id_across_files(self, tmp_path) -> None:
        (tmp_path / "a.yaml").write_text("rules:\n  - id: r\n    query: x\n")
        (tmp_path / "b.yaml").write_text("rules:\n  - id: r\n    query: y\n")
        with pytest.raises(RuleSetError) as caught:
            load_rules([tmp_path])
        (error,) = caught.value.errors
        assert "duplicate rule id 'r'" in error.message
        assert str(error.location) == f"{tmp_path / 'b.yaml'}:2:9" and "a.yaml:2:9" in (error.hint or "")

    def test_missing_id(self) -> None:
        error = only_error("rules:\n  - query: x\n")
        assert "no id" in error.message and position(error) == (2, 5)

    def test_bad_severity_lists_choices(self) -> None:
        error = only_error("rules:\n  - id: r\n    query: x\n    severity: urgent\n")
        assert "bad severity 'urgent'" in error.message and "critical" in (error.hint or "")

    def test_bad_mode(self) -> None:
        error = only_error("rules:\n  - id: r\n    query: x\n    mode: dark\n")
        assert "bad mode 'dark'" in error.message and position(error) == (4, 11)

    def test_enabled_must_be_boolean(self) -> None:
        error = only_error("rules:\n  - id: r\n    query: x\n    enabled: maybe\n")
        assert "enabled must be true or false" in error.message

    def test_yaml_syntax_error_has_a_position(self) -> None:
        error = only_error("rules:\n  - id: r\n    query: [x\n")
        assert "invalid YAML" in error.message and error.location.line is not None

    def test_a_control_character_is_an_error_at_its_position_not_a_crash(self) -> None:
        # YAML refuses control characters (one pasted in with a term, invisible in an editor).
        error = only_error('rules:\n  - id: r\n    query: "arms\x00control"\n')
        assert "U+0000 is not allowed" in error.message and position(error) == (3, 17)

    def test_missing_path(self, tmp_path) -> None:
        with pytest.raises(RuleSetError) as caught:
            load_rules([tmp_path / "nope.yaml"])
        assert "no such rule file" in str(caught.value)

    def test_all_errors_are_collected_and_listed_one_per_line(self) -> None:
        with pytest.raises(RuleSetError) as caught:
            parse_rules("rules:\n  - id: a\n    query: '(x'\n  - id: b\n    query: 'NEAR y'\n", "r.yaml")
        lines = str(caught.value).splitlines()
        assert len(caught.value.errors) == 2 and lines[0].startswith("r.yaml:3:") and lines[1].startswith("r.yaml:5:")

    def test_error_string_is_path_line_col_message_hint(self) -> None:
        error = query_error("a NEAR b")
        assert str(error).startswith("r.yaml:3:15: bad proximity operator 'NEAR' (write NEAR/N")

    def test_rule_set_error_is_a_rule_error(self) -> None:
        assert issubclass(RuleSetError, RuleError)


class TestUnreadableFiles:
    def test_a_file_that_is_not_utf8_names_the_line_and_column_of_the_bad_byte(self, tmp_path) -> None:
        path = tmp_path / "latin1.yaml"
        path.write_bytes("rules:\n  - id: r\n    query: Café OR Sánchez\n".encode("latin-1"))
        with pytest.raises(RuleSetError) as caught:
            load_rules([path])
        (error,) = caught.value.errors
        assert (error.location.path, error.location.line, error.location.column) == (str(path), 3, 15)
        assert error.message == "not UTF-8 text: byte 0xe9 (invalid continuation byte)"
        assert error.hint is not None and "save the file as UTF-8" in error.hint
        assert str(error).startswith(f"{path}:3:15: not UTF-8 text")

    def test_the_column_counts_characters_before_the_bad_byte(self, tmp_path) -> None:
        path = tmp_path / "mixed.yaml"
        path.write_bytes("rules:\n  - id: r\n    query: Kyïv OR ".encode() + b"Caf\xe9\n")
        with pytest.raises(RuleSetError) as raised:
            load_rules([path])
        (error,) = raised.value.errors
        assert (error.location.line, error.location.column) == (3, 23)

    def test_a_utf16_file_is_named_as_such(self, tmp_path) -> None:
        path = tmp_path / "utf16.yaml"
        path.write_bytes("rules: []\n".encode("utf-16"))
        with pytest.raises(RuleSetError) as raised:
            load_rules([path])
        (error,) = raised.value.errors
        assert (error.location.line, error.location.column) == (1, 1)
        assert error.hint is not None and "UTF-16" in error.hint
