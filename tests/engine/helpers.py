"""Helpers for engine tests: build rule sets from YAML text and articles from strings."""

from __future__ import annotations

import textwrap
from pathlib import Path

from monitor.engine import RuleSet, parse_rules
from monitor.model import Article

SEEDS = Path(__file__).resolve().parents[2] / "seeds"
RULES_DIR = Path(__file__).resolve().parents[2] / "rules"


def rules_from(text: str, path: str = "test.yaml") -> RuleSet:
    """A rule set from dedented YAML text."""
    return parse_rules(textwrap.dedent(text), path)


def one_rule(query: str, lists: str = "") -> RuleSet:
    """A rule set holding one rule ``r`` with ``query`` (and optional ``lists:`` YAML)."""
    escaped = query.replace("'", "''")
    return parse_rules(f"{lists}rules:\n  - id: r\n    query: '{escaped}'\n", "test.yaml")


def article(body: str = "", title: str = "", summary: str = "") -> Article:
    return Article(id="a", feed_url="test", title=title, summary=summary, body=body)


def fires(query: str, body: str = "", title: str = "", summary: str = "", lists: str = "") -> bool:
    """Whether a one-rule set with ``query`` fires on the given article."""
    return bool(one_rule(query, lists).match(article(body, title, summary)))


def reference_article() -> Article:
    """The reference story: a Trump-Putin summit that also covers sanctions and arms control.

    Read from the sample RSS feed in seeds/ (the repo's own copy of the reference article),
    through the real parse stage.
    """
    from monitor.parse import parse_feed

    feed = SEEDS / "world-news.rss.xml"
    return parse_feed(feed.read_bytes(), str(feed)).articles[0]
