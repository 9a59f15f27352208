"""Loading rule files: defaults, directories, versions, topics."""

from __future__ import annotations

from pathlib import Path

from monitor.engine import load_rules
from monitor.model import SourceLocation
from tests.engine.helpers import article, rules_from


def test_defaults() -> None:
    (rule,) = rules_from("rules:\n  - id: r1\n    query: x\n").rules
    assert (rule.topic, rule.severity, rule.tags, rule.enabled, rule.mode, rule.description) == (
        "alerts.r1", "medium", (), True, "live", ""
    )


def test_every_key_is_read() -> None:
    (rule,) = rules_from(
        """\
        rules:
          - id: r1
            query: x
            description: d
            topic: custom.topic
            severity: critical
            tags: [a, b]
            enabled: false
            mode: shadow
            examples: {match: [x], no_match: [y]}
        """
    ).rules
    assert (rule.topic, rule.output_topic, rule.severity, rule.tags, rule.enabled) == (
        "custom.topic", "custom.topic.shadow", "critical", ("a", "b"), False
    )
    assert rule.examples.match == ("x",) and rule.examples.no_match == ("y",)


def test_rule_location_is_recorded() -> None:
    (rule,) = rules_from("rules:\n  - id: r1\n    query: x\n", "f.yaml").rules
    assert rule.location == SourceLocation("f.yaml", 2, 5)


def test_disabled_rule_is_kept_but_does_not_match() -> None:
    ruleset = rules_from("rules:\n  - id: r1\n    query: x\n    enabled: false\n")
    assert len(ruleset.rules) == 1 and ruleset.match(article("x")) == [] and ruleset.topics == set()


def test_topics_are_output_topics_of_enabled_rules() -> None:
    ruleset = rules_from("rules:\n  - id: a\n    query: x\n  - id: b\n    query: y\n    mode: shadow\n")
    assert ruleset.topics == {"alerts.a", "alerts.b.shadow"}


def test_matches_come_in_rule_order() -> None:
    ruleset = rules_from("rules:\n  - id: z\n    query: y\n  - id: a\n    query: x\n")
    assert [m.rule.id for m in ruleset.match(article("x y"))] == ["z", "a"]


def test_directory_loads_yaml_and_yml_sorted(tmp_path: Path) -> None:
    (tmp_path / "b.yml").write_text("rules:\n  - id: b\n    query: x\n")
    (tmp_path / "a.yaml").write_text("rules:\n  - id: a\n    query: x\n")
    (tmp_path / "notes.txt").write_text("not rules")
    assert [rule.id for rule in load_rules([tmp_path]).rules] == ["a", "b"]


def test_version_is_stable_across_loads() -> None:
    text = "rules:\n  - id: a\n    query: x\n"
    assert rules_from(text).version == rules_from(text).version


def test_version_ignores_comments_and_layout() -> None:
    assert rules_from("rules:\n  - id: a\n    query: x\n").version == rules_from(
        "# a comment\nrules:\n  - {id: a, query: x}\n"
    ).version


def test_version_changes_when_a_rule_changes() -> None:
    assert rules_from("rules:\n  - id: a\n    query: x\n").version != rules_from(
        "rules:\n  - id: a\n    query: y\n"
    ).version


def test_version_changes_when_a_list_changes() -> None:
    rule = "rules:\n  - id: a\n    query: '@l'\n"
    assert rules_from("lists:\n  l: [x]\n" + rule).version != rules_from("lists:\n  l: [y]\n" + rule).version


def test_empty_file_is_no_rules(tmp_path: Path) -> None:
    (tmp_path / "empty.yaml").write_text("# nothing yet\n")
    assert load_rules([tmp_path]).rules == ()


def test_engine_imports_nothing_from_network_or_settings() -> None:
    import subprocess
    import sys

    code = (
        "import sys, monitor.engine, monitor.engine.tools; "
        "bad = [m for m in sys.modules if m.split('.')[0] in ('aiohttp', 'aiokafka') or m == 'monitor.settings']; "
        "print(bad)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
