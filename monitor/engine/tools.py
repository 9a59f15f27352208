"""Operators' tools: check, test and evaluate rule files; explain a match.

Each tool is a pure function taking paths and an output stream and returning a process
exit code, so the CLI only wires arguments to them and tests can call them directly.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from monitor.engine.loader import collect_rules, format_duration, rule_files
from monitor.engine.query import iter_terms
from monitor.engine.ruleset import RuleSet
from monitor.engine.text import snippet
from monitor.errors import MonitorError, error_text
from monitor.language import detect, language_of, language_tag
from monitor.model import FIELDS, Article, Hit, Match, Rule, Signal, SignalArticle, SignalExample
from monitor.signals import Signals, outlet_of

__all__ = ["EXAMPLE_START", "SignalRun", "check", "evaluate", "explain", "language_warnings", "run_signal_example", "score", "test"]

PathLike = str | Path

#: When every signal example starts (its articles' ``at`` count from it): 2026-01-01T00:00:00Z,
#: a whole hour and day, so spike windows of hours and days start with the sequence.
EXAMPLE_START = 1_767_225_600.0


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

    Returns 1 if anything is invalid, else 0 after the warnings (the load's, as a list
    entry given twice, then :func:`language_warnings`) and a one-line summary.
    """
    paths = list(paths)
    ruleset = _load(paths, out)
    if ruleset is None:
        return 1
    for warning in [*ruleset.warnings, *language_warnings(ruleset)]:
        _print(out, warning)
    files, _ = rule_files(paths)
    enabled = sum(rule.enabled for rule in ruleset.rules)
    _print(
        out,
        f"OK: {len(ruleset.rules)} rules ({enabled} enabled) and {len(ruleset.lists)} lists "
        f"in {len(files)} file(s); version {ruleset.version}",
    )
    return 0


def language_warnings(ruleset: RuleSet) -> list[str]:
    """One line per rule and list with language sections that lacks a language some list
    of the rule set has: articles in that language match only the list's ``all:``
    entries (``file:line:col: warning: ...``)."""
    declared = frozenset().union(*ruleset.list_languages.values())
    warnings: list[str] = []
    for rule in ruleset.rules:
        names = {term.label[1:].split(":", 1)[0] for term in iter_terms(ruleset.query(rule.id)) if term.label.startswith("@")}
        for name in sorted(names & set(ruleset.list_languages)):
            missing = declared - ruleset.list_languages[name]
            if missing:
                _where = f"{rule.location}: " if rule.location else ""
                warnings.append(
                    f"{_where}warning: rule {rule.id!r} uses @{name}, which has no entries for {', '.join(sorted(missing))} "
                    f"(the rule set has lists in {len(declared)} languages): articles in those languages match only its all: entries"
                )
    return warnings


def _format_hit(hit: Hit) -> str:
    return f"{hit.term} {hit.field}[{hit.start}:{hit.end}] {hit.text!r}"


def _example_article(rule: Rule, kind: str, index: int, text: str) -> Article:
    # Examples are plain texts: they are matched as an article body, in the language
    # detected, as an article from a feed that declares none would be.
    return Article(id=f"{rule.id}:{kind}[{index}]", feed_url="examples", body=text, lang=detect(text))


def test(paths: Iterable[PathLike], out: TextIO) -> int:
    """Run every rule's ``examples`` (match: must alert; no_match: must not; signals: the
    sequence must raise the kinds expected, in order: :func:`run_signal_example`).

    Prints a promtool-style report of failures with the matched terms or the signals
    raised; returns 1 on any failure or invalid file, else 0.
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
            for index, example in enumerate(rule.examples.signals):
                total += 1
                lines = _signal_failure(ruleset, rule, index, example)
                if lines:
                    failed += 1
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


@dataclass(frozen=True, slots=True)
class SignalRun:
    """What one signal example gave: the signals raised, in order, and the positions of
    its articles that the rule does not match (not counted)."""

    raised: list[Signal]
    unmatched: list[int]


def run_signal_example(ruleset: RuleSet, rule: Rule, index: int, example: SignalExample) -> SignalRun:
    """Run one of ``rule``'s signal examples through detectors of its own (docs/rules.md,
    "Expected signals"): watching begins at :data:`EXAMPLE_START`; each article that the
    rule matches counts, each repeat, as published and detected at its time, its outlet
    derived from its link as in the daemon. Pure: no clock, no state, no Kafka; escalations
    off. A disabled rule is run as if enabled, as its text examples are."""
    live = replace(rule, enabled=True)
    signals = Signals(levels=())
    signals.watch([live], EXAMPLE_START)
    raised: list[Signal] = []
    unmatched: list[int] = []
    for position, item in enumerate(example.articles):
        if ruleset.match_rule(rule.id, _example_article(rule, f"signals[{index}].articles", position, item.text)) is None:
            unmatched.append(position)
            continue
        outlet = outlet_of(item.url, "")
        title = item.text[:120]
        for repeat in range(item.repeat):
            t = EXAMPLE_START + item.at + repeat * item.every
            article = SignalArticle(f"{rule.id}:signals[{index}].articles[{position}]#{repeat}", item.url, title, outlet, t)
            raised += signals.observe_article(article, [live], t, t, journal=False)
    return SignalRun(raised, unmatched)


def _signal_failure(ruleset: RuleSet, rule: Rule, index: int, example: SignalExample) -> list[str]:
    """The report of a signal example that failed (its articles that do not match, the
    kinds expected and raised, each signal raised), or [] when it passed."""
    run = run_signal_example(ruleset, rule, index, example)
    kinds = [signal.kind for signal in run.raised]
    if kinds == list(example.expect) and not run.unmatched:
        return []
    name = f" {example.name!r}" if example.name else ""
    where = f" ({example.location})" if example.location else ""
    lines = [f"    rule: {rule.id}, example signals[{index}]{name}{where}"]
    for position in run.unmatched:
        item = example.articles[position]
        lines.append(f"      articles[{position}] (at {format_duration(item.at)}) does not match the rule: {item.text!r}")
    lines.append(f"      expected: [{', '.join(example.expect)}]")
    lines.append(f"      got: [{', '.join(kinds)}]")
    lines.extend(f"        {_describe(signal)}" for signal in run.raised)
    return lines


def _describe(signal: Signal) -> str:
    """One signal raised by an example, its times as offsets from the sequence's start."""
    start, end = (format_duration(t - EXAMPLE_START) for t in (signal.window_start, signal.window_end))
    text = f"{signal.kind} at {end}: {signal.articles} articles from {start} to {end}"
    if signal.outlets:
        text += f", outlets {', '.join(signal.outlets)}"
    if signal.kind == "spike":
        ratio = f"{signal.ratio:g} times the baseline" if signal.ratio is not None else "the baseline"
        text += f", {ratio} of {signal.baseline:g} per window" if signal.baseline is not None else ", empty baseline"
    return text


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
    texts: dict[str, Any] = {name: record.get(name) or "" for name in FIELDS}
    if "text" in record:
        texts["body"] = record["text"]
    if not any(texts.values()):
        raise ValueError("no text: give 'text', or 'title'/'summary'/'body'")
    if not all(isinstance(value, str) for value in texts.values()):
        raise ValueError("text fields must be strings")
    article_id = str(record.get("id", f"line {line_no}"))
    declared = record.get("lang")
    if declared is not None and (not isinstance(declared, str) or language_tag(declared) is None):
        raise ValueError(f"'lang' must be an ISO 639-1 code such as \"fr\", got {declared!r}")
    # 'lang' is the passage's declared language, as a feed's <language>; else detected.
    lang = language_of(language_tag(declared), texts["title"], texts["summary"], texts["body"])
    return Article(id=article_id, feed_url="labeled", title=texts["title"], summary=texts["summary"], body=texts["body"], lang=lang)


def evaluate(labeled_path: PathLike, rule_paths: Iterable[PathLike], out: TextIO, *, by_lang: bool = False) -> int:
    """Score rules against labeled passages (JSON lines).

    Each line: ``{"id": ..., "text": ... | "title"/"summary"/"body": ..., "labels": [rule ids]}``,
    and optionally ``"lang"``: the passage's declared language (else it is detected).
    Prints precision, recall and F1 per rule (and with ``by_lang``, per rule and
    language) and every false positive and negative; returns 1 if the rules or a line of
    the labeled file are invalid, else 0. Raises :class:`MonitorError` (naming the file)
    when the labeled file cannot be read (missing, a directory, unreadable).
    """
    ruleset = _load(rule_paths, out)
    if ruleset is None:
        return 1
    return score(labeled_path, ruleset, out, by_lang=by_lang)


def score(labeled_path: PathLike, ruleset: RuleSet, out: TextIO, *, by_lang: bool = False) -> int:
    """:func:`evaluate` with the rules already loaded.

    The file is read one line at a time, and each passage costs its matching plus work
    in proportion to the rules that fired on it and its labels, however many rules
    there are: a rule that neither fired nor is a label of the passage is not looked at.
    """
    tally = _Tally([rule.id for rule in ruleset.rules if rule.enabled], by_lang=by_lang)
    try:
        # Binary lines end at b"\n" only: a JSON string may hold U+2028, which text
        # mode's universal newlines would not cut at but str.splitlines would, and one
        # line that is not UTF-8 is reported with its number like any other bad line.
        with open(labeled_path, "rb") as lines:
            for line_no, line in enumerate(lines, start=1):
                if line.strip():
                    _score_line(labeled_path, line_no, line, ruleset, tally, out)
    except OSError as exc:
        # Not a failed check but input to fix: the CLI's one line on stderr, exit 2.
        raise MonitorError(
            f"{labeled_path}: cannot read the labeled file: {exc.strerror or error_text(exc)}",
            hint='give a file of JSON lines, {"id": ..., "text": ..., "labels": [rule ids]}, such as tests/data/labeled.jsonl',
        ) from exc
    if tally.errors:
        return 1
    tally.report(out)
    if by_lang:
        tally.report_languages(out)
    return 0


def _score_line(labeled_path: PathLike, line_no: int, line: bytes, ruleset: RuleSet, tally: _Tally, out: TextIO) -> None:
    """Match one labeled passage and tally it; a bad line is reported and counted."""
    try:
        article, labels = _labeled_passage(line, line_no)
    except UnicodeDecodeError as exc:
        _print(out, f"{labeled_path}:{line_no}: not UTF-8 text: {exc.reason} at byte {exc.start + 1} (save the file as UTF-8)")
        tally.errors += 1
        return
    except ValueError as exc:  # json.JSONDecodeError is a ValueError
        _print(out, f"{labeled_path}:{line_no}: {exc}")
        tally.errors += 1
        return
    tally.passages += 1
    if not tally.errors:  # else no scores will be printed: only look for more bad lines
        tally.add(article.id, {match.rule.id for match in ruleset.match(article)}, labels, article.lang)


@dataclass
class _Tally:
    """The scores of every rule over a labeled file, and what was wrong with it."""

    rule_ids: list[str]
    by_lang: bool = False
    scores: dict[str, _Score] = field(default_factory=dict)
    #: With ``by_lang``: the scores of each (rule, language) pair met.
    lang_scores: dict[tuple[str, str], _Score] = field(default_factory=dict)
    unknown: Counter[str] = field(default_factory=Counter)
    passages: int = 0
    errors: int = 0
    enabled: set[str] = field(init=False)
    languages: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.enabled = set(self.rule_ids)

    def _lang_score(self, rule_id: str, lang: str) -> _Score:
        score = self.lang_scores.get((rule_id, lang))
        if score is None:
            score = self.lang_scores[(rule_id, lang)] = _Score()
        return score

    def report_languages(self, out: TextIO) -> None:
        """Precision, recall and F1 per rule and language ("?": no language known); a
        rule with no positive and no false positive in a language is left out."""
        width = max([len("rule"), *(len(rule_id) for rule_id in self.rule_ids)])
        _print(out, "")
        _print(out, f"by language ({', '.join(f'{lang} {count}' for lang, count in sorted(self.languages.items()))} passages)")
        _print(out, f"{'rule':<{width}}  {'lang':<4}  {'tp':>4} {'fp':>4} {'fn':>4}  {'precision':>9} {'recall':>6} {'f1':>6}")
        for rule_id in self.rule_ids:
            for lang in sorted(self.languages):
                score = self.lang_scores.get((rule_id, lang))
                if score is not None:
                    _print(out, f"{rule_id:<{width}}  {lang:<4}  {_score_columns(score)}")

    def add(self, article_id: str, fired: set[str], labels: set[str], lang: str | None = None) -> None:
        """One passage: the rules that fired on it and the rules it is labeled with."""
        key = lang or "?"
        for rule_id in fired:
            scores = [self._score(rule_id)] + ([self._lang_score(rule_id, key)] if self.by_lang else [])
            for score in scores:
                if rule_id in labels:
                    score.tp += 1
                else:
                    score.fp += 1
                    score.false_positives.append(article_id)
        for label in labels - fired:
            if label in self.enabled:
                for score in [self._score(label)] + ([self._lang_score(label, key)] if self.by_lang else []):
                    score.fn += 1
                    score.false_negatives.append(article_id)
            else:
                self.unknown[label] += 1
        if self.by_lang:
            # A passage that no rule fired on and no rule is labeled on still counts its
            # language (a true negative for every rule).
            self.languages[key] += 1

    def report(self, out: TextIO) -> None:
        """Precision, recall and F1 per rule, then every false positive and negative."""
        rule_ids = self.rule_ids
        width = max([len("rule"), *(len(rule_id) for rule_id in rule_ids)])
        _print(out, f"{self.passages} labeled passages, {len(rule_ids)} enabled rules")
        _print(out, f"{'rule':<{width}}  {'tp':>4} {'fp':>4} {'fn':>4}  {'precision':>9} {'recall':>6} {'f1':>6}")
        # Most rules of a large set meet none of the passages: their row is formatted once.
        untouched = _score_columns(_Score())
        scores = self.scores
        rows = [f"{rule_id:<{width}}  {_score_columns(scores[rule_id]) if rule_id in scores else untouched}" for rule_id in rule_ids]
        for rule_id in rule_ids:
            score = scores.get(rule_id)
            if score is not None and score.false_positives:
                rows.append(f"false positives {rule_id}: {', '.join(score.false_positives)}")
            if score is not None and score.false_negatives:
                rows.append(f"false negatives {rule_id}: {', '.join(score.false_negatives)}")
        if rows:
            _print(out, "\n".join(rows))
        for label, count in sorted(self.unknown.items()):
            _print(out, f"note: label {label!r} ({count} passage(s)) is not an enabled rule id")

    def _score(self, rule_id: str) -> _Score:
        score = self.scores.get(rule_id)
        if score is None:
            score = self.scores[rule_id] = _Score()
        return score


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


def explain(article: Article, ruleset: RuleSet) -> list[dict[str, Any]]:
    """Per matching rule, as ``news-monitor match`` prints it: its id, topic, severity and
    mode, the matched terms, every hit (term, field, character offsets, text), and a
    snippet around the first hit with the hit marked ``[...]``."""
    return [_explain_match(article, match) for match in ruleset.match(article)]


def _explain_match(article: Article, match: Match) -> dict[str, Any]:
    first = match.hits[0] if match.hits else None
    rule = match.rule
    return {
        "rule_id": rule.id,
        "topic": rule.output_topic,
        "severity": rule.severity,
        "mode": rule.mode,
        "terms": sorted({hit.term for hit in match.hits}),
        "matches": [{"term": h.term, "field": h.field, "start": h.start, "end": h.end, "text": h.text} for h in match.hits],
        "snippet": snippet(article.field_text(first.field), first.start, first.end, context=60, limit=None, mark=True) if first else "",
    }
