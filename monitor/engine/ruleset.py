"""The loaded, compiled rule set: what the pipeline holds and calls per article."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

from monitor.engine.presearch import Matcher
from monitor.engine.query import CompiledRule, Node, TermSpec
from monitor.model import Article, Match, Rule

__all__ = ["RuleSet"]


class RuleSet:
    """Rules loaded from files, compiled for matching.

    ``rules`` holds every rule (disabled ones too, for tooling); only enabled rules match.
    """

    def __init__(
        self,
        compiled: Sequence[CompiledRule],
        lists: Mapping[str, tuple[TermSpec, ...]],
        list_languages: Mapping[str, frozenset[str]] | None = None,
        warnings: Sequence[str] = (),
    ) -> None:
        self._compiled = tuple(compiled)
        self.rules: tuple[Rule, ...] = tuple(item.rule for item in self._compiled)
        self.lists = dict(lists)
        #: The language sections of each list written with them (docs/languages.md).
        self.list_languages: dict[str, frozenset[str]] = dict(list_languages or {})
        #: What the load found questionable but not wrong (a list entry given twice), as
        #: ``file:line:col: warning: ...`` lines for ``rules check``.
        self.warnings: tuple[str, ...] = tuple(warnings)
        self._matcher = Matcher([item for item in self._compiled if item.rule.enabled])
        self.version: str = _version(self.rules, self.lists)

    @property
    def topics(self) -> set[str]:
        """The output topics of enabled rules (shadow rules publish to ``<topic>.shadow``)."""
        return {rule.output_topic for rule in self.rules if rule.enabled}

    def get(self, rule_id: str) -> Rule | None:
        """The rule with this id, enabled or not."""
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        return None

    def query(self, rule_id: str) -> Node:
        """The parsed query of a rule (for tooling); KeyError if there is no such rule."""
        for item in self._compiled:
            if item.rule.id == rule_id:
                return item.query
        raise KeyError(rule_id)

    def match(self, article: Article) -> list[Match]:
        """The enabled rules that fire on ``article``, in rule order, with their hits."""
        return self._matcher.match(article)

    def match_rule(self, rule_id: str, article: Article) -> Match | None:
        """Match one rule, enabled or not (for example tests); KeyError if unknown."""
        for item in self._compiled:
            if item.rule.id == rule_id:
                matches = Matcher([item]).match(article)
                return matches[0] if matches else None
        raise KeyError(rule_id)

    def __len__(self) -> int:
        return len(self.rules)

    def __repr__(self) -> str:
        return f"<RuleSet {len(self.rules)} rules version={self.version}>"


def _version(rules: Sequence[Rule], lists: Mapping[str, tuple[TermSpec, ...]]) -> str:
    """A content hash: stable across runs and file moves, changed by any rule or list edit.

    The hash of ``{"lists": {...}, "rules": [...]}`` as sorted-key JSON, encoded a rule at
    a time: one ``json.dumps`` of a whole large set would hold the interpreter long enough
    to stall the event loop while a reload runs in its thread.
    """
    digest = hashlib.sha256()

    def put(value: object) -> None:
        digest.update(json.dumps(value, sort_keys=True, ensure_ascii=False).encode())

    digest.update(b'{"lists": ')
    put({name: [spec.label for spec in specs] for name, specs in sorted(lists.items())})
    digest.update(b', "rules": [')
    for index, r in enumerate(rules):
        if index:
            digest.update(b", ")
        put(
            {
                "id": r.id,
                "query": r.query,
                "description": r.description,
                "topic": r.topic,
                "severity": r.severity,
                "tags": list(r.tags),
                "enabled": r.enabled,
                "mode": r.mode,
                "examples": [list(r.examples.match), list(r.examples.no_match), *_signal_examples(r)],
            }
        )
    digest.update(b"]}")
    return digest.hexdigest()[:16]


def _signal_examples(rule: Rule) -> list[object]:
    """A rule's signal examples for the version (nothing without any: the versions of rule
    sets written before them stay as they were)."""
    return [
        [[[a.at, a.url, a.text, a.repeat, a.every] for a in example.articles], list(example.expect), example.name]
        for example in rule.examples.signals
    ]
