"""The rule engine: load operator rules, compile them, match articles. Pure library code.

    from monitor.engine import load_rules
    ruleset = load_rules(["rules"])          # raises RuleSetError listing every problem
    for match in ruleset.match(article):     # list[monitor.model.Match], in rule order
        ...

The engine does no I/O besides reading rule files when asked to, and imports nothing
from the network or settings layers. The query language is documented in docs/rules.md.
"""

from monitor.engine.loader import RuleSetError, collect_rules, load_rules, parse_rules
from monitor.engine.query import QueryError, parse_query
from monitor.engine.ruleset import RuleSet
from monitor.engine.text import FoldedText, fold

__all__ = [
    "FoldedText",
    "QueryError",
    "RuleSet",
    "RuleSetError",
    "collect_rules",
    "fold",
    "load_rules",
    "parse_query",
    "parse_rules",
]
