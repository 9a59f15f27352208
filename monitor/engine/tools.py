"""Operators' tools: check, test and evaluate rule files; explain a match.

Each tool is a pure function taking paths and an output stream and returning a process
exit code, so the CLI only wires arguments to them and tests can call them directly.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, TextIO

from monitor.engine.loader import collect_rules, rule_files
from monitor.engine.ruleset import RuleSet
from monitor.model import FIELDS, Article, Hit, Match, Rule

__all__ = ["check", "evaluate", "explain", "score", "snippet", "test"]

PathLike = str | Path


def _print(out: TextIO, line: str = "") -> None:
    out.write(line + "\n")


def _load(paths: Iterable[PathLike], out: TextIO) -> RuleSet | None:
    ruleset, errors = collect_rules(paths)
    for error in errors:
        _print(out, str(error))
    if errors:
        _print(out, f"{len(errors)} error(s)")
        return None
    return ruleset


def check(paths: Iterable[PathLike], out: TextIO) -> int:
    """Validate rule files; print every error as ``file:line:col: message (hint)``.

    Returns 1 if anything is invalid, else 0 after a one-line summary.
    """
    paths = list(paths)
    ruleset = _load(paths, out)
    if ruleset is None:
        return 1
    files, _ = rule_files(paths)
    enabled = sum(rule.enabled for rule in ruleset.rules)
    _print(
        out,
        f"OK: {len(ruleset.rules)} rules ({enabled} enabled) and {len(ruleset.lists)} lists "
        f"in {len(files)} file(s); version {ruleset.version}",
    )
    return 0


def _format_hit(hit: Hit) -> str:
    return f"{hit.term} {hit.field}[{hit.start}:{hit.end}] {hit.text!r}"


def _example_article(rule: Rule, kind: str, index: int, text: str) -> Article:
    # Examples are plain texts: they are matched as an article body.
    return Article(id=f"{rule.id}:{kind}[{index}]", feed_url="examples", body=text)


def test(paths: Iterable[PathLike], out: TextIO) -> int:
    """Run every rule's ``examples`` (match: must alert; no_match: must not).

    Prints a promtool-style report of failures with the matched terms; returns 1 on any
    failure or invalid file, else 0.
    """
    ruleset = _load(paths, out)
    if ruleset is None:
        return 1
    by_file: dict[str, list[Rule]] = {}
    for rule in ruleset.rules:
        by_file.setdefault(rule.location.path if rule.location else "<rules>", []).append(rule)
    total = failed = 0
    for path, rules in by_file.items():
        failures: list[str] = []
        for rule in rules:
            for kind, texts, expected in (
                ("match", rule.examples.match, True),
                ("no_match", rule.examples.no_match, False),
            ):
                for index, text in enumerate(texts):
                    total += 1
                    found = ruleset.match_rule(rule.id, _example_article(rule, kind, index, text))
                    if (found is not None) == expected:
                        continue
                    failed += 1
                    lines = [
                        f"    rule: {rule.id}, example {kind}[{index}]",
                        f"      text: {text!r}",
                        f"      expected: {'an alert' if expected else 'no alert'}",
                    ]
                    if found is None:
                        lines.append("      got: no alert")
                    else:
                        lines.append("      got: an alert; matched terms:")
                        lines.extend(f"        {_format_hit(hit)}" for hit in found.hits)
                    failures.extend(lines)
        _print(out, f"Unit Testing: {path}")
        if failures:
            _print(out, "  FAILED:")
            for line in failures:
                _print(out, line)
        else:
            _print(out, "  SUCCESS")
    _print(out, f"{total - failed}/{total} examples passed")
    return 1 if failed else 0


@dataclass
class _Score:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    false_positives: list[str] = field(default_factory=list)
    false_negatives: list[str] = field(default_factory=list)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def _labeled_article(record: dict[str, Any], line_no: int) -> Article:
    texts = {name: record.get(name) or "" for name in FIELDS}
    if "text" in record:
        texts["body"] = record["text"]
    if not any(texts.values()):
        raise ValueError("no text: give 'text', or 'title'/'summary'/'body'")
    if not all(isinstance(value, str) for value in texts.values()):
        raise ValueError("text fields must be strings")
    return Article(id=str(record.get("id", f"line {line_no}")), feed_url="labeled", **texts)


def evaluate(labeled_path: PathLike, rule_paths: Iterable[PathLike], out: TextIO) -> int:
    """Score rules against labeled passages (JSON lines).

    Each line: ``{"id": ..., "text": ... | "title"/"summary"/"body": ..., "labels": [rule ids]}``.
    Prints precision, recall and F1 per rule and every false positive and negative;
    returns 1 if the rules or the labeled file are invalid, else 0.
    """
    ruleset = _load(rule_paths, out)
    if ruleset is None:
        return 1
    return score(labeled_path, ruleset, out)


def score(labeled_path: PathLike, ruleset: RuleSet, out: TextIO) -> int:
    """:func:`evaluate` with the rules already loaded.

    The file is read one line at a time, and each passage costs its matching plus work
    in proportion to the rules that fired on it and its labels, however many rules
    there are: a rule that neither fired nor is a label of the passage is not looked at.
    """
    rule_ids = [rule.id for rule in ruleset.rules if rule.enabled]
    enabled = set(rule_ids)
    scores: dict[str, _Score] = {}
    unknown: Counter[str] = Counter()
    passages = errors = 0
    try:
        # Binary lines end at b"\n" only: a JSON string may hold U+2028, which text
        # mode's universal newlines would not cut at but str.splitlines would, and one
        # line that is not UTF-8 is reported with its number like any other bad line.
        with open(labeled_path, "rb") as lines:
            for line_no, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    article, labels = _labeled_passage(line, line_no)
                except UnicodeDecodeError as exc:
                    _print(out, f"{labeled_path}:{line_no}: not UTF-8 text: {exc.reason} at byte {exc.start + 1} (save the file as UTF-8)")
                    errors += 1
                    continue
                except ValueError as exc:  # json.JSONDecodeError is a ValueError
                    _print(out, f"{labeled_path}:{line_no}: {exc}")
                    errors += 1
                    continue
                passages += 1
                if errors:
                    continue  # no scores will be printed: only look for more bad lines
                fired = {match.rule.id for match in ruleset.match(article)}
                for rule_id in fired:
                    tally = scores.get(rule_id) or scores.setdefault(rule_id, _Score())
                    if rule_id in labels:
                        tally.tp += 1
                    else:
                        tally.fp += 1
                        tally.false_positives.append(article.id)
                for label in labels - fired:
                    if label in enabled:
                        tally = scores.get(label) or scores.setdefault(label, _Score())
                        tally.fn += 1
                        tally.false_negatives.append(article.id)
                    else:
                        unknown[label] += 1
    except OSError as exc:
        _print(out, f"{labeled_path}: cannot read: {exc}")
        return 1
    if errors:
        return 1
    width = max([len("rule"), *(len(rule_id) for rule_id in rule_ids)])
    _print(out, f"{passages} labeled passages, {len(rule_ids)} enabled rules")
    _print(out, f"{'rule':<{width}}  {'tp':>4} {'fp':>4} {'fn':>4}  {'precision':>9} {'recall':>6} {'f1':>6}")
    # Most rules of a large set meet none of the passages: their row is formatted once.
    untouched = _score_columns(_Score())
    rows = [
        f"{rule_id:<{width}}  {_score_columns(scores[rule_id]) if rule_id in scores else untouched}" for rule_id in rule_ids
    ]
    for rule_id in rule_ids:
        tally = scores.get(rule_id)
        if tally is not None and tally.false_positives:
            rows.append(f"false positives {rule_id}: {', '.join(tally.false_positives)}")
        if tally is not None and tally.false_negatives:
            rows.append(f"false negatives {rule_id}: {', '.join(tally.false_negatives)}")
    if rows:
        _print(out, "\n".join(rows))
    for label, count in sorted(unknown.items()):
        _print(out, f"note: label {label!r} ({count} passage(s)) is not an enabled rule id")
    return 0


def _score_columns(tally: _Score) -> str:
    return f"{tally.tp:>4} {tally.fp:>4} {tally.fn:>4}  {tally.precision:>9.3f} {tally.recall:>6.3f} {tally.f1:>6.3f}"


def _labeled_passage(line: bytes, line_no: int) -> tuple[Article, set[str]]:
    """One line of a labeled file: the passage and its labels; ValueError if it is bad."""
    record = json.loads(line)
    if not isinstance(record, dict):
        raise ValueError("each line must be a JSON object")
    labels = record.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise ValueError("'labels' must be a list of rule ids")
    return _labeled_article(record, line_no), set(labels)


def snippet(text: str, start: int, end: int, width: int = 60) -> str:
    """A one-line excerpt of ``text`` around ``[start, end)``, the hit marked with [ ]."""
    left = max(0, start - width)
    right = min(len(text), end + width)
    before = text[left:start]
    after = text[end:right]
    if left > 0 and " " in before:
        before = before[before.index(" ") + 1 :]  # do not start mid-word
    if right < len(text) and " " in after:
        after = after[: after.rindex(" ")]
    prefix = "…" if left > 0 else ""
    suffix = "…" if right < len(text) else ""
    excerpt = f"{prefix}{before}[{text[start:end]}]{after}{suffix}"
    return " ".join(excerpt.split())


def _explain_match(article: Article, match: Match) -> dict[str, Any]:
    hits = [
        {
            "term": hit.term,
            "field": hit.field,
            "start": hit.start,
            "end": hit.end,
            "text": hit.text,
            "snippet": snippet(article.field_text(hit.field), hit.start, hit.end),
        }
        for hit in match.hits
    ]
    return {
        "id": match.rule.id,
        "topic": match.rule.output_topic,
        "severity": match.rule.severity,
        "mode": match.rule.mode,
        "terms": sorted({hit.term for hit in match.hits}),
        "hits": hits,
        "snippet": hits[0]["snippet"] if hits else "",
    }


def explain(article: Article, ruleset: RuleSet) -> list[dict[str, Any]]:
    """Per matching rule: id, topic, severity, mode, the matched terms, and every hit
    (term, field, start, end, text, snippet), plus a snippet around the first hit."""
    return [_explain_match(article, match) for match in ruleset.match(article)]
