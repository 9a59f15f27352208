"""Quality floor for the shipped rules: F1 >= 0.9 per rule on both labeled sets.

``labeled.jsonl`` was written together with the rules (a development set);
``labeled-holdout.jsonl`` was written before the rules were read (hard negatives,
varied wording, multi-topic stories), so it is the closer estimate of real quality.
Both go through the engine's own evaluation (``monitor.engine.tools.evaluate``, the
code behind ``news-monitor rules eval``).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from monitor.engine.tools import evaluate
from tests.support import ROOT

RULES_DIR = ROOT / "rules"
DATA = ROOT / "tests" / "data"
RULE_IDS = ("summit", "sanctions", "arms-control")
MIN_F1 = 0.9
LABELED_SETS = ("labeled.jsonl", "labeled-holdout.jsonl")


def _scores(labeled: Path) -> tuple[dict[str, dict[str, float]], str]:
    out = io.StringIO()
    assert evaluate(labeled, [RULES_DIR], out) == 0, out.getvalue()
    report = out.getvalue()
    scores: dict[str, dict[str, float]] = {}
    for line in report.splitlines():
        fields = line.split()
        if len(fields) == 7 and fields[0] in RULE_IDS:
            tp, fp, fn = (int(value) for value in fields[1:4])
            precision, recall, f1 = (float(value) for value in fields[4:7])
            scores[fields[0]] = {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}
    return scores, report


@pytest.fixture(scope="module", params=LABELED_SETS)
def evaluation(request) -> tuple[str, dict[str, dict[str, float]], str]:
    scores, report = _scores(DATA / request.param)
    return request.param, scores, report


@pytest.mark.parametrize("rule_id", RULE_IDS)
def test_rule_reaches_f1_floor(evaluation, rule_id: str) -> None:
    name, scores, report = evaluation
    assert rule_id in scores, f"{rule_id} missing from the evaluation of {name}:\n{report}"
    assert scores[rule_id]["f1"] >= MIN_F1, f"{rule_id} on {name}:\n{report}"


def test_every_rule_has_positives_in_each_set(evaluation) -> None:
    # An F1 computed on a handful of positives would be meaningless.
    name, scores, report = evaluation
    for rule_id in RULE_IDS:
        assert scores[rule_id]["tp"] + scores[rule_id]["fn"] >= 10, f"{rule_id} on {name}:\n{report}"


def test_holdout_set_shape() -> None:
    records = [json.loads(line) for line in (DATA / "labeled-holdout.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()]
    assert len(records) >= 90
    assert len({record["id"] for record in records}) == len(records), "duplicate ids"
    labels = [set(record["labels"]) for record in records]
    assert all(label_set <= set(RULE_IDS) for label_set in labels), "unknown label"
    assert sum(1 for label_set in labels if not label_set) >= 30, "too few hard negatives"
    assert sum(1 for label_set in labels if len(label_set) > 1) >= 5, "too few multi-topic passages"
    for rule_id in RULE_IDS:
        assert sum(1 for label_set in labels if rule_id in label_set) >= 20, rule_id
