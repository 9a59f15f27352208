"""Rules' ``burst:`` and ``spike:`` blocks: read with their defaults, refused with file:line:col."""

from __future__ import annotations

import textwrap

import pytest

from monitor.engine import RuleSetError, load_rules, parse_rules
from monitor.engine.reload import RulesHolder
from monitor.model import Burst, Spike


def _errors(text: str) -> list[str]:
    with pytest.raises(RuleSetError) as caught:
        parse_rules(textwrap.dedent(text), "r.yaml")
    return [f"{e.location}: {e.message}" for e in caught.value.errors]


def test_blocks_are_read_with_their_units_and_defaults() -> None:
    (rule,) = parse_rules(
        "rules:\n  - id: r\n    query: x\n    burst: {min_outlets: 4, window: 45m}\n"
        "    spike: {window: 2h, baseline: 2w, factor: 2.5, min_count: 3, cooldown: 90s}\n"
    ).rules
    assert rule.burst == Burst(min_outlets=4, window=2700.0, cooldown=6 * 3600.0)
    assert rule.spike == Spike(window=7200.0, baseline=14 * 86400.0, factor=2.5, min_count=3, cooldown=90.0)
    (plain,) = parse_rules("rules:\n  - id: r\n    query: x\n").rules
    assert plain.burst is None and plain.spike is None


def test_malformed_blocks_are_refused_at_their_place() -> None:
    assert _errors(
        """\
        rules:
          - id: r
            query: x
            burst: {min_outlet: 3, window: 30, cooldown: 6h}
            spike:
              window: 8d
              baseline: 7d
          - id: s
            query: y
            burst: {min_outlets: 0}
            spike: 1h
        """
    ) == [
        "r.yaml:4:13: unknown key 'min_outlet' in burst",
        "r.yaml:4:36: burst.window must be a positive duration",
        "r.yaml:7:17: spike.window must be at most half of spike.baseline",
        "r.yaml:10:26: burst.min_outlets must be a whole number from 2 to 1000",
        "r.yaml:11:12: spike must be a mapping",
    ]


async def test_a_bad_block_on_reload_keeps_the_old_rules(tmp_path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("rules:\n  - id: r\n    query: x\n    burst: {min_outlets: 3}\n")
    holder = RulesHolder(load_rules([path]), paths=(str(path),))
    path.write_text("rules:\n  - id: r\n    query: x\n    burst: {min_outlets: 3, windw: 1h}\n")
    assert await holder.reload() is False
    assert holder.current.rules[0].burst == Burst(min_outlets=3)
    assert holder.last_error is not None and "rules.yaml:4" in holder.last_error


def test_huge_and_non_finite_values_are_refused_not_a_traceback() -> None:
    nines = "9" * 400
    assert _errors(
        f"""\
        rules:
          - id: r
            query: x
            burst: {{min_outlets: {nines}, window: {nines}d, cooldown: 367d}}
            spike: {{factor: .nan, min_count: 1001, baseline: 1e999d}}
        """
    ) == [
        "r.yaml:4:26: burst.min_outlets must be a whole number from 2 to 1000",
        "r.yaml:4:436: burst.window must be at most 366d",
        "r.yaml:4:849: burst.cooldown must be at most 366d",
        "r.yaml:5:54: spike.baseline must be a positive duration",
        "r.yaml:5:21: spike.factor must be a number from 1 to 1000",
        "r.yaml:5:38: spike.min_count must be a whole number from 1 to 1000",
    ]


def test_durations_may_add_units() -> None:
    (rule,) = parse_rules("rules:\n  - id: r\n    query: x\n    burst: {window: 1h30m, cooldown: 7d20m}\n").rules
    assert rule.burst is not None and (rule.burst.window, rule.burst.cooldown) == (5400.0, 7 * 86400.0 + 1200.0)


def test_the_largest_counts_are_what_a_window_keeps() -> None:
    from monitor.engine.loader import MAX_SIGHTINGS
    from monitor.settings import MAX_STORY_OUTLETS
    from monitor.signals.detect import MAX_KEPT

    assert MAX_SIGHTINGS == MAX_KEPT
    assert MAX_STORY_OUTLETS == MAX_KEPT  # [signals] escalation levels a story can reach
