"""The shipped rules: the reference story matches all three, the decoys none."""

from __future__ import annotations

import io

import pytest

from monitor.engine import load_rules
from monitor.engine.tools import evaluate
from monitor.engine.tools import test as run_examples
from tests.engine.helpers import RULES_DIR, article, reference_article

DEFAULT_IDS = {"summit", "sanctions", "arms-control"}


@pytest.fixture(scope="module")
def ruleset():
    return load_rules([RULES_DIR])


def test_default_rules_and_topics(ruleset) -> None:
    assert {rule.id for rule in ruleset.rules} == DEFAULT_IDS
    assert ruleset.topics == {f"alerts.{rule_id}" for rule_id in DEFAULT_IDS}


def test_reference_article_matches_all_three(ruleset) -> None:
    assert {match.rule.id for match in ruleset.match(reference_article())} == DEFAULT_IDS


@pytest.mark.parametrize(
    "decoy",
    [
        "Two climbers reached the summit of Everest at dawn after a nine-hour push from the South Col.",
        "The league sanctioned the club for fielding an ineligible player and docked it six points.",
        "UEFA imposed sanctions on the club after its fans threw flares onto the pitch.",
        "The council sanctioned the plan for a new library on the high street.",
        "A new exhibition explores the coat of arms of the city, granted by the king in 1592.",
        "The new chief executive promised a new start for the struggling retailer.",
        "The company said the deal marked a New Start for its European business.",
    ],
)
def test_decoy_matches_no_rule(ruleset, decoy: str) -> None:
    assert ruleset.match(article(decoy, title=decoy.split(".")[0])) == []


def test_examples_in_default_rules_pass() -> None:
    out = io.StringIO()
    assert run_examples([RULES_DIR], out) == 0, out.getvalue()


def test_default_rules_reach_f1_on_the_labeled_set() -> None:
    out = io.StringIO()
    assert evaluate(RULES_DIR.parent / "tests" / "data" / "labeled.jsonl", [RULES_DIR], out) == 0
    rows = {line.split()[0]: float(line.split()[-1]) for line in out.getvalue().splitlines() if line.split()[0] in DEFAULT_IDS}
    assert rows.keys() == DEFAULT_IDS and min(rows.values()) >= 0.9, out.getvalue()


def test_summit_needs_the_leaders_near_the_meeting(ruleset) -> None:
    """An opinion piece naming Trump and Putin far apart, with "meet" near Trump only (the
    labeled negative neg-23, modelled on a real feed item the summit rule fired on), raises
    nothing; the same leaders with the meeting in one sentence do."""
    import json

    labeled = RULES_DIR.parent / "tests" / "data" / "labeled.jsonl"
    records = {json.loads(line)["id"]: json.loads(line) for line in labeled.read_text(encoding="utf-8").splitlines()}
    piece = records["neg-23"]
    assert piece["labels"] == []
    assert ruleset.match(article(piece["body"], title=piece["title"])) == []
    close = piece["body"] + " Trump will meet Putin in Alaska next month."
    assert [match.rule.id for match in ruleset.match(article(close, title=piece["title"]))] == ["summit"]


def test_the_seed_article_raises_one_alert_per_rule(ruleset) -> None:
    from tests.support import SHARED

    seed = SHARED / "seeds" / "000_2d2ab9e6ed23a7ee.txt"
    if not seed.exists():
        pytest.skip("../shared/seeds is not present")
    from monitor.parse.textinput import article_from_input

    matches = ruleset.match(article_from_input(seed.read_bytes(), str(seed)))
    assert sorted(match.rule.id for match in matches) == sorted(DEFAULT_IDS)
