"""Expected signals in rule examples: timed sequences run by ``rules test``, refused by
``rules check`` with file:line:col (docs/rules.md, "Expected signals")."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import pytest

from monitor.engine import RuleSetError, load_rules, parse_rules
from monitor.engine.tools import check
from monitor.engine.tools import test as run_examples
from tests.engine.helpers import RULES_DIR

BURST_RULE = """\
rules:
  - id: summit
    query: summit AND (Trump OR Putin)
    burst: {min_outlets: 3, window: 30m, cooldown: 6h}
    examples:
      signals:
        - name: three outlets within 20 minutes
          articles:
            - {at: 0m, url: "https://www.bbc.co.uk/news/1", text: "Trump will meet Putin at a summit in Anchorage."}
            - {at: 10m, url: "https://www.lemonde.fr/2", text: "Putin and Trump summit set for Friday."}
            - {at: 20m, url: "https://www.reuters.com/3", text: "Summit: Trump and Putin to meet."}
            - {at: 25m, url: "https://apnews.com/4", text: "A fourth outlet on the Trump summit."}
          expect: [EXPECT]
"""

SPIKE_RULE = """\
rules:
  - id: quake
    query: quake*
    spike: {window: 1h, baseline: 7d, factor: 3, min_count: 5}
    examples:
      signals:
        - name: a week at one an hour, then twelve in an hour
          articles:
            - {at: 0h, url: "https://www.usgs.gov/1", text: "A small quake was recorded.", repeat: 168, every: 1h}
            - {at: 168h, url: "https://www.usgs.gov/2", text: "Quake felt across the region.", repeat: 12, every: 5m}
          expect: [spike]
        - name: a week at one an hour, then three in an hour
          articles:
            - {at: 0h, url: "https://www.usgs.gov/1", text: "A small quake was recorded.", repeat: 168, every: 1h}
            - {at: 168h, url: "https://www.usgs.gov/2", text: "Quake felt across the region.", repeat: 3, every: 5m}
          expect: []
        - name: twelve in the first hour, before a week was watched
          articles:
            - {at: 0m, url: "https://www.usgs.gov/3", text: "Quakes shake the city.", repeat: 12, every: 5m}
          expect: []
"""


def run(tmp_path: Path, text: str) -> tuple[int, str]:
    path = tmp_path / "r.yaml"
    path.write_text(text)
    out = io.StringIO()
    return run_examples([path], out), out.getvalue()


def errors(text: str) -> list[str]:
    with pytest.raises(RuleSetError) as caught:
        parse_rules(textwrap.dedent(text), "r.yaml")
    return [f"{e.location}: {e.message}" for e in caught.value.errors]


def test_a_burst_example_passes(tmp_path: Path) -> None:
    code, report = run(tmp_path, BURST_RULE.replace("EXPECT", "burst"))
    assert code == 0, report
    assert "SUCCESS" in report and "1/1 examples passed" in report


def test_a_wrong_expectation_fails_with_what_was_expected_and_raised(tmp_path: Path) -> None:
    code, report = run(tmp_path, BURST_RULE.replace("EXPECT", "burst, burst"))
    assert code == 1
    assert f"rule: summit, example signals[0] 'three outlets within 20 minutes' ({tmp_path / 'r.yaml'}:7:11)" in report
    assert "      expected: [burst, burst]\n      got: [burst]\n" in report
    # The signal raised: when (offsets from the start), how many articles, which outlets.
    assert "burst at 20m: 3 articles from 0s to 20m, outlets bbc.co.uk, lemonde.fr, reuters.com" in report
    assert "0/1 examples passed" in report


def test_an_article_the_rule_does_not_match_fails_with_its_position(tmp_path: Path) -> None:
    text = BURST_RULE.replace("EXPECT", "burst").replace("Putin and Trump summit set for Friday.", "Putin and Trump talk on Friday.")
    code, report = run(tmp_path, text)
    assert code == 1
    assert "articles[1] (at 10m) does not match the rule: 'Putin and Trump talk on Friday.'" in report
    # Without it only two outlets remain (and the fourth): still a burst, the failure is the article.
    assert "expected: [burst]\n      got: [burst]" in report


def test_a_spike_over_a_repeated_baseline_passes(tmp_path: Path) -> None:
    code, report = run(tmp_path, SPIKE_RULE)
    assert code == 0, report
    assert "3/3 examples passed" in report


def test_a_spike_expected_but_not_raised_fails(tmp_path: Path) -> None:
    code, report = run(tmp_path, SPIKE_RULE.replace("repeat: 3, every: 5m}\n          expect: []", "repeat: 3, every: 5m}\n          expect: [spike]"))
    assert code == 1
    assert "example signals[1] 'a week at one an hour, then three in an hour'" in report
    assert "expected: [spike]\n      got: []" in report
    code, report = run(tmp_path, SPIKE_RULE.replace("expect: [spike]", "expect: []", 1))
    assert code == 1
    assert "spike at 7d20m: 5 articles from 7d to 7d20m, outlets usgs.gov, 5 times the baseline of 1 per window" in report


def test_disabled_rules_run_their_signal_examples(tmp_path: Path) -> None:
    code, report = run(tmp_path, BURST_RULE.replace("EXPECT", "burst").replace("    burst:", "    enabled: false\n    burst:"))
    assert code == 0, report


def test_the_shipped_summit_rule_has_a_burst_and_expects_it() -> None:
    (summit,) = [rule for rule in load_rules([RULES_DIR]).rules if rule.id == "summit"]
    assert summit.burst is not None
    assert [example.expect for example in summit.examples.signals] == [("burst",), (), ()]


def test_malformed_signal_examples_are_refused_at_their_place() -> None:
    assert errors(
        """\
        rules:
          - id: r
            query: summit
            burst: {}
            examples:
              signals:
                - nme: x
                  articles:
                    - {at: 0m, ulr: "https://a.com/1", text: summit}
                    - {at: 10, url: "https://b.com/2", text: summit}
                    - {at: -5m, url: "https://b.com/2", text: summit}
                    - {at: 1h, url: "ftp://b.com/2", text: summit, repeat: 3}
                    - {at: 2h, url: "https://c.com/3", text: summit, every: 0s, repeat: 2}
                  expect: [burst, spike, escalation, bursts]
                - articles: []
                - {}
                - articles: [{at: 1h, url: "https://c.com/3"}]
                  expect: [burst]
        """
    ) == [
        "r.yaml:7:11: unknown key 'nme' in examples.signals[0]",
        "r.yaml:9:24: unknown key 'ulr' in examples.signals[0].articles[0]",
        "r.yaml:10:20: examples.signals[0].articles[1].at must be a duration",
        "r.yaml:11:20: examples.signals[0].articles[2].at must not be negative",
        "r.yaml:12:29: examples.signals[0].articles[3].url must be an http(s) link",
        "r.yaml:12:68: examples.signals[0].articles[3].repeat needs every",
        "r.yaml:13:69: examples.signals[0].articles[4].every must be a positive duration",
        "r.yaml:14:27: examples.signals[0].expect names spike, but the rule has no spike: block",
        "r.yaml:14:34: examples.signals[0].expect: an escalation cannot be expected in a rule's examples",
        "r.yaml:14:46: unknown signal kind 'bursts' in examples.signals[0].expect",
        "r.yaml:15:11: examples.signals[1] has no expect",
        "r.yaml:15:21: examples.signals[1].articles must be a list of at least one article",
        "r.yaml:16:11: examples.signals[2] has no articles",
        "r.yaml:16:11: examples.signals[2] has no expect",
        "r.yaml:17:22: examples.signals[3].articles[0] has no text",
    ]


def test_articles_out_of_order_and_too_many_repeats_are_refused() -> None:
    assert errors(
        """\
        rules:
          - id: r
            query: quake
            spike: {}
            examples:
              signals:
                - articles:
                    - {at: 0h, text: quake, repeat: 168, every: 1h}
                    - {at: 100h, text: quake}
                    - {at: 200h, text: quake, repeat: 19900, every: 1m}
                  expect: []
        """
    ) == [
        "r.yaml:9:20: examples.signals[0].articles[1].at (4d4h) is before the article above it (its last at 6d23h)",
        "r.yaml:10:47: examples.signals[0] stands for more than 20,000 articles",
    ]


def test_hints_say_what_to_write(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(
        "rules:\n  - id: r\n    query: summit\n    examples:\n      signals:\n"
        "        - articles: [{at: 0m, text: summit}]\n          expect: [burst, escalation]\n"
    )
    out = io.StringIO()
    assert check([path], out) == 1
    assert out.getvalue().splitlines() == [
        f"{path}:7:20: examples.signals[0].expect names burst, but the rule has no burst: block"
        " (add a burst: block (docs/signals.md), or take burst out of expect)",
        f"{path}:7:27: examples.signals[0].expect: an escalation cannot be expected in a rule's examples"
        " (escalations are per story, at the levels of [signals] escalation, not per rule; expect burst or spike)",
        "2 error(s)",
    ]


def test_signal_examples_change_the_rule_set_version_and_only_they() -> None:
    plain = "rules:\n  - id: r\n    query: x\n    burst: {}\n    examples:\n      match: [x]\n"
    with_signals = plain + "      signals:\n        - articles: [{at: 0m, text: x}]\n          expect: []\n"
    assert parse_rules(plain).version != parse_rules(with_signals).version
    # A rule set without signal examples keeps the version it had before they existed.
    assert parse_rules(plain).version == "79f63a1dd17087fc"


def test_durations_are_printed_as_rule_files_write_them() -> None:
    from monitor.engine.loader import format_duration

    assert [format_duration(s) for s in (0, 90, 1200, 604800 + 1200, 0.5, 86400)] == ["0s", "1m30s", "20m", "7d20m", "0.5s", "1d"]


def test_huge_repeats_and_times_are_refused_and_compound_times_read() -> None:
    from monitor.engine.loader import RuleSetError, parse_rules

    nines = "9" * 400
    text = (
        "rules:\n  - id: r\n    query: summit\n    burst: {min_outlets: 2}\n    examples:\n      signals:\n"
        "        - articles:\n"
        f"            - {{at: 0m, text: summit, repeat: {nines}, every: 1h}}\n"
        f"            - {{at: {nines}d, text: summit}}\n"
        "            - {at: 7d20m, text: summit, repeat: 1, every: 1000d}\n"
        "          expect: []\n"
    )
    with pytest.raises(RuleSetError) as caught:
        parse_rules(text, "r.yaml")
    messages = [e.message for e in caught.value.errors]
    assert messages == [
        "examples.signals[0].articles[0].repeat must be a whole number from 1 to 20000",
        "examples.signals[0].articles[1].at must be at most 366d",
        "examples.signals[0].articles[2].every must be at most 366d",
    ]
