"""Operators' tools: check, test, evaluate, explain."""

from __future__ import annotations

import io
import json
from pathlib import Path

from monitor.engine.text import snippet
from monitor.engine.tools import check, evaluate, explain
from monitor.engine.tools import test as run_examples
from tests.engine.helpers import article, rules_from

GOOD = "rules:\n  - id: war\n    query: war*\n    examples:\n      match: [the war goes on]\n      no_match: [a sunny day]\n"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


class TestCheck:
    def test_valid_files_exit_0_with_one_line_summary(self, tmp_path: Path) -> None:
        out = io.StringIO()
        assert check([write(tmp_path, "a.yaml", GOOD)], out) == 0
        assert out.getvalue().count("\n") == 1 and out.getvalue().startswith("OK: 1 rules")

    def test_every_error_in_every_file_is_printed(self, tmp_path: Path) -> None:
        write(tmp_path, "a.yaml", "rules:\n  - id: a\n    query: '(x'\n  - id: b\n    qeury: y\n")
        write(tmp_path, "b.yaml", "rules:\n  - id: c\n    query: 'x NEAR y'\n")
        out = io.StringIO()
        assert check([tmp_path], out) == 1
        lines = out.getvalue().splitlines()
        assert [line.split(":")[0].rsplit("/", 1)[-1] for line in lines[:-1]] == ["a.yaml", "a.yaml", "a.yaml", "b.yaml"]
        assert lines[-1] == "4 error(s)"

    def test_error_lines_carry_line_col_and_hint(self, tmp_path: Path) -> None:
        path = write(tmp_path, "a.yaml", "rules:\n  - id: a\n    query: 'x NEAR y'\n")
        out = io.StringIO()
        check([path], out)
        assert out.getvalue().startswith(f"{path}:3:15: bad proximity operator 'NEAR' (write NEAR/N")


class TestExamples:
    def test_passing_examples_exit_0(self, tmp_path: Path) -> None:
        out = io.StringIO()
        assert run_examples([write(tmp_path, "a.yaml", GOOD)], out) == 0
        assert "SUCCESS" in out.getvalue() and "2/2 examples passed" in out.getvalue()

    def test_unwanted_match_is_reported_with_matched_terms(self, tmp_path: Path) -> None:
        path = write(tmp_path, "a.yaml", "rules:\n  - id: war\n    query: war*\n    examples:\n      no_match: [warships sail]\n")
        out = io.StringIO()
        assert run_examples([path], out) == 1
        report = out.getvalue()
        assert "FAILED" in report and "rule: war, example no_match[0]" in report
        assert "expected: no alert" in report and "war* body[0:8] 'warships'" in report

    def test_missing_match_is_reported(self, tmp_path: Path) -> None:
        path = write(tmp_path, "a.yaml", "rules:\n  - id: war\n    query: war\n    examples:\n      match: [warfare]\n")
        out = io.StringIO()
        assert run_examples([path], out) == 1 and "got: no alert" in out.getvalue()

    def test_disabled_rules_are_tested_too(self, tmp_path: Path) -> None:
        path = write(tmp_path, "a.yaml", "rules:\n  - id: w\n    query: war\n    enabled: false\n    examples:\n      match: [peace]\n")
        assert run_examples([path], io.StringIO()) == 1


class TestEvaluate:
    def test_metrics_and_errors_per_rule(self, tmp_path: Path) -> None:
        rules = write(tmp_path, "r.yaml", "rules:\n  - id: war\n    query: war\n")
        records = [
            {"id": "tp", "text": "the war", "labels": ["war"]},
            {"id": "fp", "title": "war games", "body": "a board game", "labels": []},
            {"id": "fn", "text": "the conflict", "labels": ["war"]},
            {"id": "tn", "text": "peace", "labels": []},
            {"id": "tp2", "body": "war again", "labels": ["war"]},
        ]
        labeled = write(tmp_path, "l.jsonl", "\n".join(json.dumps(r) for r in records) + "\n")
        out = io.StringIO()
        assert evaluate(labeled, [rules], out) == 0
        report = out.getvalue().splitlines()
        row = next(line for line in report if line.startswith("war "))
        # tp=2 fp=1 fn=1: precision 2/3, recall 2/3, F1 2/3
        assert row.split() == ["war", "2", "1", "1", "0.667", "0.667", "0.667"]
        assert "false positives war: fp" in report and "false negatives war: fn" in report

    def test_bad_line_is_reported_with_its_number(self, tmp_path: Path) -> None:
        rules = write(tmp_path, "r.yaml", "rules:\n  - id: war\n    query: war\n")
        labeled = write(tmp_path, "l.jsonl", '{"id": 1, "text": "x", "labels": []}\nnot json\n')
        out = io.StringIO()
        assert evaluate(labeled, [rules], out) == 1 and f"{labeled}:2:" in out.getvalue()

    def test_a_line_that_is_not_utf8_is_reported_with_its_number(self, tmp_path: Path) -> None:
        rules = write(tmp_path, "r.yaml", "rules:\n  - id: war\n    query: war\n")
        labeled = tmp_path / "l.jsonl"
        labeled.write_bytes(b'{"id": "a", "text": "war", "labels": ["war"]}\n{"id": "b", "text": "\xff war"}\n')
        out = io.StringIO()
        assert evaluate(str(labeled), [rules], out) == 1
        assert f"{labeled}:2: not UTF-8 text" in out.getvalue() and "Traceback" not in out.getvalue()

    def test_line_separators_inside_strings_and_crlf_do_not_split_records(self, tmp_path: Path) -> None:
        rules = write(tmp_path, "r.yaml", "rules:\n  - id: war\n    query: war\n")
        labeled = tmp_path / "l.jsonl"
        labeled.write_text('{"id": "a", "text": "the\u2028war", "labels": ["war"]}\r\n{"id": "b", "text": "peace", "labels": []}\r\n', encoding="utf-8")
        out = io.StringIO()
        assert evaluate(str(labeled), [rules], out) == 0
        assert out.getvalue().startswith("2 labeled passages")
        row = next(line for line in out.getvalue().splitlines() if line.startswith("war "))
        assert row.split()[1:4] == ["1", "0", "0"]


    def test_the_labeled_file_is_read_a_line_at_a_time(self, tmp_path: Path, monkeypatch) -> None:
        """A 10 MB file of 100 KB passages is scored holding about one passage at a time."""
        import tracemalloc

        from monitor.engine import tools

        ruleset = rules_from("rules:\n  - id: war\n    query: war\n")
        monkeypatch.setattr(tools, "_load", lambda paths, out, ruleset=ruleset: ruleset)
        labeled = tmp_path / "l.jsonl"
        filler = "the talks went on " * 5600  # ~100 KB
        with labeled.open("w", encoding="utf-8") as out:
            for index in range(100):
                out.write(json.dumps({"id": f"p{index}", "text": f"war {filler}", "labels": ["war"]}) + "\n")
        size = labeled.stat().st_size
        report = io.StringIO()
        tracemalloc.start()
        try:
            assert evaluate(labeled, [], report) == 0
            _current, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert report.getvalue().startswith("100 labeled passages")
        assert peak < size / 4, f"peak {peak:,} bytes for a {size:,}-byte file"

    def test_rules_that_neither_fire_nor_are_labels_cost_nothing_per_passage(self, monkeypatch) -> None:
        """Scoring is proportional to the matches and the labels: 10,000 rules cost about
        what matching them costs, not a loop over every rule for every passage (which
        made them ~60x slower to score than 10 rules)."""
        import random
        import tempfile
        import time

        from monitor.engine import tools

        def rule_set(count: int):
            return rules_from("rules:\n" + "".join(f"  - id: r{i}\n    query: w{i}x\n" for i in range(count)))

        rng = random.Random(13)
        filler = ["the", "ministers", "said", "talks", "would", "continue", "later", "in", "the", "week"]
        records = []
        for index in range(1000):
            fired = rng.sample(range(10), 3)
            words = filler * 12 + [f"w{i}x" for i in fired]
            rng.shuffle(words)
            records.append(json.dumps({"id": f"p{index}", "text": " ".join(words), "labels": [f"r{fired[0]}", "r7"]}))
        with tempfile.TemporaryDirectory() as tmp:
            labeled = Path(tmp) / "l.jsonl"
            labeled.write_text("\n".join(records) + "\n", encoding="utf-8")
            seconds = {}
            for count in (10, 10_000):
                ruleset = rule_set(count)
                monkeypatch.setattr(tools, "_load", lambda paths, out, ruleset=ruleset: ruleset)
                best = float("inf")
                for _ in range(3):
                    start = time.process_time()
                    assert evaluate(labeled, [], io.StringIO()) == 0
                    best = min(best, time.process_time() - start)
                seconds[count] = best
        assert seconds[10_000] < 4 * seconds[10], seconds


class TestExplain:
    def test_explains_terms_fields_offsets_and_snippet(self) -> None:
        ruleset = rules_from("rules:\n  - id: s\n    query: Putin NEAR/3 summit\n")
        body = "Officials said Putin will attend the summit in Alaska next week."
        (entry,) = explain(article(body), ruleset)
        assert entry["rule_id"] == "s" and entry["topic"] == "alerts.s" and entry["terms"] == ["Putin", "summit"]
        first = entry["matches"][0]
        assert (first["field"], body[first["start"] : first["end"]]) == ("body", "Putin")
        assert "[Putin]" in entry["snippet"]

    def test_snippet_marks_the_hit_and_trims_at_words(self) -> None:
        text = "word " * 40 + "HIT" + " word" * 40
        start = text.index("HIT")
        result = snippet(text, start, start + 3, context=20, limit=None, mark=True)
        assert result.startswith("…word") and "[HIT]" in result and result.endswith("word…")
