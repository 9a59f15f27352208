"""Load rule files: YAML nodes with positions -> validated :class:`Rule` objects.

PyYAML is used at the node level (``compose``) rather than ``safe_load`` so that every
key and value keeps its line and column, duplicate keys can be refused, and an error in
a query points at the character of the query in the file. All errors from all files are
collected (``rules check`` lists them together); :func:`load_rules` raises them as one
:class:`RuleSetError`.

Loading happens in two passes: the named ``lists:`` of every file first (names are
global), then the rules, whose queries may use lists from any file.
"""

from __future__ import annotations

import difflib
import gc
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from monitor.engine.query import CompiledRule, QueryError, TermKey, TermSpec, can_match_without_terms, parse_query, parse_term
from monitor.engine.query import Node as QueryNode
from monitor.engine.ruleset import RuleSet
from monitor.errors import RuleError
from monitor.language.codes import ISO_639_1
from monitor.model import Burst, ExampleArticle, Rule, RuleExamples, SignalExample, SourceLocation, Spike

__all__ = ["MAX_EXAMPLE_ARTICLES", "RuleSetError", "collect_rules", "format_duration", "load_rules", "parse_rules", "rule_files"]

SEVERITIES = ("info", "low", "medium", "high", "critical")
MODES = ("live", "shadow")
RULE_KEYS = ("id", "query", "description", "topic", "severity", "tags", "enabled", "mode", "examples", "burst", "spike")
BURST_KEYS = ("min_outlets", "window", "cooldown")
SPIKE_KEYS = ("window", "baseline", "factor", "min_count", "cooldown")
# A number and a unit, or several added: 90s, 1h30m, 7d20m.
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?\s*[smhdw]\s*)+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
#: The longest duration a rule file may write (a window, a baseline, a cool-down, an example's time).
MAX_DURATION = 366 * 86400.0
#: The largest burst min_outlets and spike min_count: the detectors keep 1,000 sightings
#: per window (monitor.signals.detect.MAX_KEPT), so a larger one could never be reached.
MAX_SIGHTINGS = 1000
#: The largest spike factor.
MAX_FACTOR = 1000.0
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}
TOP_KEYS = ("rules", "lists")
EXAMPLE_KEYS = ("match", "no_match", "signals")
SIGNAL_EXAMPLE_KEYS = ("name", "articles", "expect")
EXAMPLE_ARTICLE_KEYS = ("at", "url", "text", "repeat", "every")
#: The kinds of signal a rule's examples may expect (escalations are per story, not per rule).
SIGNAL_KINDS = ("burst", "spike")
#: Articles one signal example may stand for, its repeats counted (``rules test`` runs each).
MAX_EXAMPLE_ARTICLES = 20_000
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
#: The longest Kafka topic name.
MAX_TOPIC = 249
# Kafka topic names: these characters, at most MAX_TOPIC of them.
_TOPIC = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_TOPIC}}}")
_LIST_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")

# libyaml's composer keeps the same node marks and is much faster on large rule sets.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_STR = "tag:yaml.org,2002:str"
_BOOL = "tag:yaml.org,2002:bool"


class RuleSetError(RuleError):
    """One or more invalid rules; ``errors`` holds each, ``str()`` lists one per line."""

    def __init__(self, errors: Sequence[RuleError]) -> None:
        self.errors = list(errors)
        super().__init__(f"{len(self.errors)} error(s) in rule files")

    def __str__(self) -> str:
        return "\n".join(str(error) for error in self.errors)


@dataclass
class _Source:
    """One parsed YAML document and what is needed to point into it."""

    path: str
    lines: list[str]
    root: Node | None


@dataclass
class _State:
    errors: list[RuleError] = field(default_factory=list)
    lists: dict[str, tuple[TermSpec, ...]] = field(default_factory=dict)
    list_locations: dict[str, SourceLocation] = field(default_factory=dict)
    #: The language sections of each list that has them (its ``all:`` entries not counted).
    list_languages: dict[str, frozenset[str]] = field(default_factory=dict)
    #: Lists refused with an error of their own: a query naming one is not also told
    #: the list is undefined.
    refused_lists: set[str] = field(default_factory=set)
    ids: dict[str, SourceLocation] = field(default_factory=dict)
    #: What ``rules check`` warns about beyond errors, ``file:line:col: warning: ...``.
    warnings: list[str] = field(default_factory=list)

    def error(self, message: str, location: SourceLocation, hint: str | None = None) -> None:
        self.errors.append(RuleError(message, location=location, hint=hint))


def _at(path: str, node: Node) -> SourceLocation:
    return SourceLocation(path, node.start_mark.line + 1, node.start_mark.column + 1)


def rule_files(paths: Iterable[str | Path]) -> tuple[list[Path], list[RuleError]]:
    """Expand files and directories (their ``*.yaml``/``*.yml``, sorted) into rule files."""
    files: list[Path] = []
    errors: list[RuleError] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            errors.append(RuleError("no such rule file or directory", location=SourceLocation(str(path))))
    unique = list(dict.fromkeys(files))
    return unique, errors


def _compose(path: str, text: str, state: _State) -> _Source:
    try:
        root = yaml.compose(text, Loader=_YAML_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        location = SourceLocation(path, mark.line + 1, mark.column + 1) if mark else SourceLocation(path)
        state.error(f"invalid YAML: {exc.problem or exc.context}", location, "check indentation and quoting")
        return _Source(path, text.splitlines(), None)
    except yaml.reader.ReaderError as exc:
        # A character YAML does not allow (a control character pasted in with a term):
        # the reader gives only its position in the text.
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        state.error(
            f"invalid YAML: character U+{exc.character:04X} is not allowed" if isinstance(exc.character, int)
            else f"invalid YAML: {exc.reason}",
            SourceLocation(path, line, column),
            "delete the control character (it may be invisible in an editor)",
        )
        return _Source(path, text.splitlines(), None)
    source = _Source(path, text.splitlines(), root)
    if root is not None and not _check_tree(source, root, state):
        return _Source(path, source.lines, None)
    return source


def _check_tree(source: _Source, root: Node, state: _State) -> bool:
    """Refuse duplicate mapping keys anywhere (YAML would silently keep the last one), and
    aliases of lists or mappings: expanding nested ones is how a few lines of YAML become
    billions of items (the "billion laughs"). Iterative, so no nesting libyaml accepts can
    exhaust Python's recursion limit. False if the file is not usable."""
    usable = True
    collections: set[int] = set()
    reported: set[int] = set()
    stack: list[Node] = [root]
    while stack:
        node = stack.pop()
        if not isinstance(node, (MappingNode, SequenceNode)):
            continue
        if id(node) in collections:
            usable = False
            if id(node) in reported:
                continue
            reported.add(id(node))
            # An alias is the anchored node itself, so this is where the anchor is.
            state.error(
                "a list or mapping anchored here (&name) is used again through an alias (*name)",
                _at(source.path, node),
                "rule files do not expand aliases of lists or mappings: write the items out, "
                "or share terms through a named list under lists:",
            )
            continue
        collections.add(id(node))
        if isinstance(node, SequenceNode):
            stack.extend(reversed(node.value))
            continue
        seen: dict[object, Node] = {}
        for key, _value in node.value:
            name = key.value if isinstance(key, ScalarNode) else id(key)
            if name in seen:
                first = seen[name]
                state.error(
                    f"duplicate key {name!r}",
                    _at(source.path, key),
                    f"it is already set at line {first.start_mark.line + 1}; keep one",
                )
            else:
                seen[name] = key
        stack.extend(value for _key, value in reversed(node.value))
    return usable


def _scalar(node: Node) -> object:
    return SafeConstructor().construct_object(node, deep=True)


def _string(source: _Source, node: Node, what: str, state: _State, *, empty_ok: bool = True) -> str | None:
    if not isinstance(node, ScalarNode) or node.tag != _STR:
        state.error(f"{what} must be a string", _at(source.path, node), "quote the value")
        return None
    value = str(node.value)
    if not empty_ok and not value.strip():
        state.error(f"{what} must not be empty", _at(source.path, node))
        return None
    return value


def _strings(source: _Source, node: Node, what: str, state: _State) -> list[tuple[str, Node]] | None:
    if isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null":
        return []
    if not isinstance(node, SequenceNode):
        state.error(f"{what} must be a list of strings", _at(source.path, node), "write [a, b] or one '- item' per line")
        return None
    items: list[tuple[str, Node]] = []
    for item in node.value:
        value = _string(source, item, f"each item of {what}", state)
        if value is not None:
            items.append((value, item))
    return items


def _unknown_key(source: _Source, key: Node, valid: Sequence[str], where: str, state: _State) -> None:
    name = str(key.value) if isinstance(key, ScalarNode) else "?"
    close = difflib.get_close_matches(name, valid, n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(valid)}"
    state.error(f"unknown key {name!r} in {where}", _at(source.path, key), hint)


def _collect_lists(source: _Source, node: Node, state: _State) -> None:
    if not isinstance(node, MappingNode):
        state.error("lists must be a mapping of name: [terms]", _at(source.path, node), "write lists:\\n  leaders: [Putin, Trump]")
        return
    for key, value in node.value:
        name = str(key.value)
        location = _at(source.path, key)
        if not _LIST_NAME.fullmatch(name):
            state.error(f"bad list name {name!r}", location, "use letters, digits, '_' and '-', starting with a letter")
            continue
        if name in state.list_locations:
            state.error(f"list {name!r} is defined twice", location, f"first defined at {state.list_locations[name]}")
            continue
        errors = len(state.errors)
        sections = _list_sections(source, name, value, state)
        if sections is None or not any(items for _lang, items in sections):
            if len(state.errors) == errors:  # items refused above make it no emptier
                state.error(f"list {name!r} is empty", location, "add at least one term")
            state.refused_lists.add(name)
            continue
        specs: list[TermSpec] = []
        # Entries that are one term ("Xi" and "XI" folded, "sommet" and "sommets" cut to
        # their stem) are one entry: two would let one mention count twice in "K OF @list".
        # Only the folded duplicates are warned about: listing the forms a stem covers is
        # how the lists were written before stems.
        firsts: dict[TermKey, str] = {}
        written: dict[tuple[str | None, TermKey], str] = {}
        kept: list[tuple[str | None, str, Node]] = []
        for lang, items in sections:
            for text, item_node in items:
                try:
                    spec = parse_term(text, lang=lang)
                except QueryError as exc:
                    state.error(exc.message, _at(source.path, item_node), exc.hint)
                    continue
                if spec.key in firsts:
                    first = written.get((lang, parse_term(text).key)) if lang is not None else firsts[spec.key]
                    if first is not None:
                        state.warnings.append(
                            f"{_at(source.path, item_node)}: warning: list {name!r} has {text!r} twice: "
                            f"it is the same term as {first!r} once folded, and counts once"
                        )
                    continue
                firsts[spec.key] = text
                if lang is not None:
                    written.setdefault((lang, parse_term(text).key), text)
                specs.append(spec)
                kept.append((lang, text, item_node))
        state.list_locations[name] = location
        if isinstance(value, MappingNode):
            specs = _entries(source, name, specs, kept, state)
            state.list_languages[name] = frozenset(lang for lang, _items in sections if lang is not None)
        state.lists[name] = tuple(specs)


def _entries(
    source: _Source, name: str, specs: list[TermSpec], kept: list[tuple[str | None, str, Node]], state: _State
) -> list[TermSpec]:
    """The specs of a list with language sections, each numbered with its entry
    (``TermSpec.entry``). An ``all:`` entry counts in every article, so in one of language
    L it is matched beside L's section: an entry of that section that is the same term as
    it read as L's (folded, and cut to the same stem where L has a stemmer) is one entry
    with it, or one mention would count twice in ``K OF``. Warned about, as a repeat in
    one section is, when the two are written as the same term once folded."""
    parent = list(range(len(specs)))  # union-find; an entry's number is its first spec's

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    everywhere = [index for index, (lang, _text, _node) in enumerate(kept) if lang is None]
    for lang in dict.fromkeys(lang for lang, _text, _node in kept if lang is not None):
        as_read: dict[TermKey, list[int]] = {}
        for index in everywhere:
            as_read.setdefault(parse_term(kept[index][1], lang=lang).key, []).append(index)
        for index, (section, text, node) in enumerate(kept):
            if section != lang:
                continue
            for other in as_read.get(specs[index].key, ()):
                low, high = sorted((root(index), root(other)))
                parent[high] = low
                other_text, other_node = kept[other][1], kept[other][2]
                if parse_term(text).key != parse_term(other_text).key:
                    continue  # one stem, written as two words ("sommets" under all:, "sommet" under fr:)
                later, later_text, first = (node, text, other_text)
                if _position(node) < _position(other_node):
                    later, later_text, first = other_node, other_text, text
                state.warnings.append(
                    f"{_at(source.path, later)}: warning: list {name!r} has {later_text!r} in its all: and {lang}: sections: "
                    f"it is the same term as {first!r} once folded, and counts once"
                )
    return [replace(spec, entry=root(index)) for index, spec in enumerate(specs)]


def _position(node: Node) -> tuple[int, int]:
    return node.start_mark.line, node.start_mark.column


#: The section of a list with per-language entries that holds its entries for every language.
ALL_LANGUAGES = "all"


def _list_sections(source: _Source, name: str, node: Node, state: _State) -> list[tuple[str | None, list[tuple[str, Node]]]] | None:
    """A list's entries by language section: one section for every language (None) when
    the list is a plain list of terms, else one per key of its mapping (an ISO 639-1
    code, or ``all``); None when it is neither."""
    if not isinstance(node, MappingNode):
        items = _strings(source, node, f"list {name!r}", state)
        return None if items is None else [(None, items)]
    sections: list[tuple[str | None, list[tuple[str, Node]]]] = []
    for key, value in node.value:
        code = str(key.value) if isinstance(key, ScalarNode) else ""
        if code != ALL_LANGUAGES and code not in ISO_639_1:
            close = difflib.get_close_matches(code.lower(), [ALL_LANGUAGES, *sorted(ISO_639_1)], n=1)
            did = f"did you mean {close[0]!r}? " if close else ""
            state.error(
                f"unknown language code {code!r} in list {name!r}",
                _at(source.path, key),
                f"{did}sections are ISO 639-1 codes (en, fr, zh...) or '{ALL_LANGUAGES}' for every language",
            )
            continue
        items = _strings(source, value, f"list {name!r}, section {code!r}", state)
        if items is not None:
            sections.append((None if code == ALL_LANGUAGES else code, items))
    return sections


def _query_location(source: _Source, node: ScalarNode, offset: int) -> SourceLocation:
    """The file position of character ``offset`` of a query scalar, in any style.

    A query's characters other than whitespace stand in the file in the same order: block
    and plain scalars hold them as written, whatever the indentation of each line, and
    quoted ones too but for their escapes, whose backslash or doubled quote is stepped
    over. So the query and the file are walked together. Where that fails (an escape such
    as ``\\u00e9``), the column is counted from the scalar's start on its first line.
    """
    start, end = node.start_mark, node.end_mark
    lines = source.lines[start.line : end.line + 1]
    text = "\n".join(lines)
    style = node.style
    skipped = {"'": "'", '"': "\\"}.get(style or "", "")
    position = len(lines[0]) + 1 if style in ("|", ">") else start.column + int(bool(skipped))
    target = None
    for index, char in enumerate(str(node.value)):
        if char.isspace():
            continue
        while position < len(text) and text[position] != char and (text[position].isspace() or text[position] in skipped):
            position += 1
        if position >= len(text) or text[position] != char:
            return SourceLocation(source.path, start.line + 1, start.column + 1 + int(bool(skipped)) + offset)
        if index >= offset:
            target = position
            break
        position += 1
    if target is None:  # at the end of the query
        target = position
    line = start.line + text.count("\n", 0, target)
    return SourceLocation(source.path, line + 1, target - (text.rfind("\n", 0, target) + 1) + 1)


def _parse_rule(source: _Source, node: Node, state: _State) -> CompiledRule | None:
    path = source.path
    if not isinstance(node, MappingNode):
        state.error("each rule must be a mapping", _at(path, node), "start it with '- id: name'")
        return None
    errors_before = len(state.errors)
    values: dict[str, Node] = {}
    for key, value in node.value:
        name = str(key.value) if isinstance(key, ScalarNode) else ""
        if name not in RULE_KEYS:
            _unknown_key(source, key, RULE_KEYS, "rule", state)
        else:
            values[name] = value
    location = _at(path, node)
    rule_id = _rule_id(source, values, location, state)
    query_text, parsed = _rule_query(source, values, location, state)
    description = _string(source, values["description"], "description", state) if "description" in values else ""
    topic = _string(source, values["topic"], "topic", state, empty_ok=False) if "topic" in values else None
    if topic is not None and not _TOPIC.fullmatch(topic):
        hint = f"Kafka topics use letters, digits, '.', '_' and '-', at most {MAX_TOPIC} of them"
        state.error(f"bad topic {topic!r}", _at(path, values["topic"]), hint)
    severity = _choice(source, values.get("severity"), "severity", SEVERITIES, "medium", state)
    mode = _choice(source, values.get("mode"), "mode", MODES, "live", state)
    _check_topic_length(source, values, rule_id, topic, mode, state)
    enabled = _enabled(source, values.get("enabled"), state)
    tags: tuple[str, ...] = ()
    if "tags" in values:
        items = _strings(source, values["tags"], "tags", state)
        tags = tuple(text for text, _ in items or ())
    blocks = frozenset(kind for kind in SIGNAL_KINDS if kind in values)
    examples = _parse_examples(source, values.get("examples"), blocks, state)
    burst = _parse_burst(source, values["burst"], state) if "burst" in values else None
    spike = _parse_spike(source, values["spike"], state) if "spike" in values else None
    if len(state.errors) > errors_before or rule_id is None or query_text is None or parsed is None:
        return None
    rule = Rule(
        id=rule_id,
        query=query_text,
        description=description or "",
        topic=topic or f"alerts.{rule_id}",
        severity=severity,
        tags=tags,
        enabled=enabled,
        mode=mode,
        examples=examples,
        location=location,
        burst=burst,
        spike=spike,
    )
    return CompiledRule(rule, parsed)


def _check_topic_length(
    source: _Source, values: dict[str, Node], rule_id: str | None, topic: str | None, mode: str, state: _State
) -> None:
    """Refuse a rule whose longest topic is longer than Kafka allows: its signals topic,
    ``.signals`` after its alerts' topic (``alerts.<id>`` without ``topic:``, ``.shadow``
    after it in shadow mode; docs/signals.md). The broker would refuse the rule's records."""
    if rule_id is None or (topic is not None and not _TOPIC.fullmatch(topic)):
        return
    longest = (topic or f"alerts.{rule_id}") + (".shadow" if mode == "shadow" else "") + ".signals"
    if len(longest) <= MAX_TOPIC:
        return
    shorten = "shorten the topic:" if topic is not None else "shorten the id, or set a shorter topic: (without one it is alerts.<id>)"
    state.error(
        f"the rule's signals topic would be {len(longest)} characters long, more than Kafka's {MAX_TOPIC}",
        _at(source.path, values.get("topic") or values["id"]),
        f"its topics are the alerts topic and that with .signals after it, at most {MAX_TOPIC - len('.signals')} characters "
        f"for the alerts topic: {shorten}",
    )


def _rule_id(source: _Source, values: dict[str, Node], location: SourceLocation, state: _State) -> str | None:
    """The rule's id, when it is one: present, well formed and not taken by an earlier rule."""
    if "id" not in values:
        state.error("rule has no id", location, "add 'id: a-short-name'")
        return None
    rule_id = _string(source, values["id"], "id", state, empty_ok=False)
    if rule_id is None:
        return None
    where = _at(source.path, values["id"])
    if not _ID.fullmatch(rule_id):
        state.error(f"bad rule id {rule_id!r}", where, "use letters, digits, '.', '_' and '-', starting with a letter or digit")
    elif rule_id in state.ids:
        state.error(f"duplicate rule id {rule_id!r}", where, f"first defined at {state.ids[rule_id]}")
    else:
        state.ids[rule_id] = where
    return rule_id


def _rule_query(source: _Source, values: dict[str, Node], location: SourceLocation, state: _State) -> tuple[str | None, QueryNode | None]:
    """The rule's query text and its parse; an error at the query's own character when it does not parse."""
    query_node = values.get("query")
    if query_node is None:
        state.error("rule has no query", location, "add 'query: ...' (see docs/rules.md)")
        return None, None
    query_text = _string(source, query_node, "query", state)
    if query_text is None or not isinstance(query_node, ScalarNode):
        return query_text, None
    try:
        parsed = parse_query(query_text, state.lists)
        if can_match_without_terms(parsed):
            raise QueryError(
                "query can match an article that contains none of its terms",
                0,
                "add a required positive term, as in: sanctions AND NOT sport",
            )
    except QueryError as exc:
        if exc.unknown_list is None or exc.unknown_list not in state.refused_lists:
            state.error(exc.message, _query_location(source, query_node, exc.offset), exc.hint)
        return query_text, None
    return query_text, parsed


def _enabled(source: _Source, node: Node | None, state: _State) -> bool:
    if node is None:
        return True
    if isinstance(node, ScalarNode) and node.tag == _BOOL:
        return bool(_scalar(node))
    state.error("enabled must be true or false", _at(source.path, node))
    return True


def _choice(source: _Source, node: Node | None, what: str, valid: Sequence[str], default: str, state: _State) -> str:
    if node is None:
        return default
    value = _string(source, node, what, state)
    if value is None:
        return default
    if value not in valid:
        close = difflib.get_close_matches(value, valid, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        state.error(f"bad {what} {value!r}", _at(source.path, node), f"{hint}one of: {', '.join(valid)}")
        return default
    return value


def _parse_examples(source: _Source, node: Node | None, blocks: frozenset[str], state: _State) -> RuleExamples:
    """A rule's ``examples:``; ``blocks``: the signal blocks the rule has (``burst``, ``spike``)."""
    if node is None:
        return RuleExamples()
    if not isinstance(node, MappingNode):
        state.error("examples must be a mapping", _at(source.path, node), "write examples: {match: [...], no_match: [...]}")
        return RuleExamples()
    found: dict[str, tuple[str, ...]] = {}
    signals: tuple[SignalExample, ...] = ()
    for key, value in node.value:
        name = str(key.value) if isinstance(key, ScalarNode) else ""
        if name not in EXAMPLE_KEYS:
            _unknown_key(source, key, EXAMPLE_KEYS, "examples", state)
            continue
        if name == "signals":
            signals = _signal_examples(source, value, blocks, state)
            continue
        items = _strings(source, value, f"examples.{name}", state)
        found[name] = tuple(text for text, _ in items or ())
    return RuleExamples(match=found.get("match", ()), no_match=found.get("no_match", ()), signals=signals)


def _signal_examples(source: _Source, node: Node, blocks: frozenset[str], state: _State) -> tuple[SignalExample, ...]:
    """``examples.signals``: timed sequences of articles and the signals they must raise
    (docs/rules.md, "Expected signals")."""
    if isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null":
        return ()
    if not isinstance(node, SequenceNode):
        hint = "write one '- articles: [...]' item with its expect: per sequence"
        state.error("examples.signals must be a list", _at(source.path, node), hint)
        return ()
    examples = (_signal_example(source, item, f"examples.signals[{index}]", blocks, state) for index, item in enumerate(node.value))
    return tuple(example for example in examples if example is not None)


def _signal_example(source: _Source, node: Node, what: str, blocks: frozenset[str], state: _State) -> SignalExample | None:
    keys = _block(source, node, what, SIGNAL_EXAMPLE_KEYS, "write each sequence as a mapping: {articles: [...], expect: [burst]}", state)
    if keys is None:
        return None
    where = _at(source.path, node)
    name = _string(source, keys["name"], f"{what}.name", state) if "name" in keys else ""
    if "articles" not in keys:
        state.error(f"{what} has no articles", where, "add articles: [{at: 0m, url: https://..., text: ...}, ...]")
    if "expect" not in keys:
        state.error(f"{what} has no expect", where, "write the kinds it must raise, in order: expect: [burst], or expect: [] for none")
    articles = _example_articles(source, keys["articles"], f"{what}.articles", state) if "articles" in keys else None
    expect = _expect(source, keys["expect"], f"{what}.expect", blocks, state) if "expect" in keys else None
    if name is None or articles is None or expect is None:
        return None
    return SignalExample(articles=articles, expect=expect, name=name, location=where)


def _example_articles(source: _Source, node: Node, what: str, state: _State) -> tuple[ExampleArticle, ...] | None:
    """The articles of one sequence: in time order, at most :data:`MAX_EXAMPLE_ARTICLES` with their repeats."""
    if not isinstance(node, SequenceNode) or not node.value:
        hint = "write articles: [{at: 0m, url: https://..., text: ...}]"
        state.error(f"{what} must be a list of at least one article", _at(source.path, node), hint)
        return None
    articles: list[ExampleArticle] = []
    usable = True
    total = 0
    for index, item in enumerate(node.value):
        parsed = _example_article(source, item, f"{what}[{index}]", state)
        if parsed is None:
            usable = False
            continue
        article, at_node, size_node = parsed
        if articles and article.at < articles[-1].last:
            state.error(
                f"{what}[{index}].at ({format_duration(article.at)}) is before the article above it"
                f" (its last at {format_duration(articles[-1].last)})",
                _at(source.path, at_node),
                "list the articles in time order; equal times are allowed, and a repeated article lasts until its last repeat",
            )
            usable = False
        if total <= MAX_EXAMPLE_ARTICLES < total + article.repeat:
            state.error(
                f"{what[: -len('.articles')]} stands for more than {MAX_EXAMPLE_ARTICLES:,} articles",
                _at(source.path, size_node),
                "repeat fewer articles, further apart: a week at one an hour is repeat: 168, every: 1h",
            )
            usable = False
        total += article.repeat
        articles.append(article)
    return tuple(articles) if usable else None


def _example_article(source: _Source, node: Node, what: str, state: _State) -> tuple[ExampleArticle, Node, Node] | None:
    """One article of a sequence, the node of its ``at`` and of its ``repeat`` (else itself)."""
    keys = _block(source, node, what, EXAMPLE_ARTICLE_KEYS, "write each article as a mapping: {at: 0m, url: https://..., text: ...}", state)
    if keys is None:
        return None
    errors_before = len(state.errors)
    where = _at(source.path, node)
    if "at" not in keys:
        state.error(f"{what} has no at", where, "add at: its time after the sequence's start, such as 0m, 90s, 30m, 6h, 7d")
    if "text" not in keys:
        state.error(f"{what} has no text", where, "add text: the article's text, matched as its body")
    at = _offset(source, keys["at"], f"{what}.at", state) if "at" in keys else None
    text = _string(source, keys["text"], f"{what}.text", state, empty_ok=False) if "text" in keys else None
    url = _string(source, keys["url"], f"{what}.url", state, empty_ok=False) if "url" in keys else None
    if url is not None and not url.startswith(("https://", "http://")):
        hint = "its outlet is the link's registrable domain: url: https://www.bbc.co.uk/news/1"
        state.error(f"{what}.url must be an http(s) link", _at(source.path, keys["url"]), hint)
    repeat = int(_number(source, keys.get("repeat"), f"{what}.repeat", 1, (1, MAX_EXAMPLE_ARTICLES), state, integer=True))
    every = _duration(source, keys.get("every"), f"{what}.every", 0.0, state)
    if ("repeat" in keys) != ("every" in keys):
        given, missing = ("repeat", "every") if "repeat" in keys else ("every", "repeat")
        hint = "write both: repeat: 168, every: 1h is 168 articles, one an hour"
        state.error(f"{what}.{given} needs {missing}", _at(source.path, keys[given]), hint)
    if len(state.errors) > errors_before or at is None or text is None:
        return None
    article = ExampleArticle(at=at, text=text, url=url, repeat=repeat, every=every, location=where)
    return article, keys["at"], keys.get("repeat", node)


def _expect(source: _Source, node: Node, what: str, blocks: frozenset[str], state: _State) -> tuple[str, ...] | None:
    """The kinds a sequence must raise, in order: each a block the rule has."""
    items = _strings(source, node, what, state)
    if items is None:
        return None
    kinds: list[str] = []
    for kind, item in items:
        where = _at(source.path, item)
        if kind == "escalation":
            state.error(
                f"{what}: an escalation cannot be expected in a rule's examples",
                where,
                "escalations are per story, at the levels of [signals] escalation, not per rule; expect burst or spike",
            )
        elif kind not in SIGNAL_KINDS:
            close = difflib.get_close_matches(kind, SIGNAL_KINDS, n=1)
            did = f"did you mean {close[0]!r}? " if close else ""
            state.error(f"unknown signal kind {kind!r} in {what}", where, f"{did}kinds: {', '.join(SIGNAL_KINDS)}")
        elif kind not in blocks:
            hint = f"add a {kind}: block (docs/signals.md), or take {kind} out of expect"
            state.error(f"{what} names {kind}, but the rule has no {kind}: block", where, hint)
        else:
            kinds.append(kind)
    return tuple(kinds) if len(kinds) == len(items) else None


def _block(source: _Source, node: Node, what: str, valid: Sequence[str], hint: str, state: _State) -> dict[str, Node] | None:
    """The keys of a mapping such as a ``burst:`` block (unknown keys reported)."""
    if not isinstance(node, MappingNode):
        state.error(f"{what} must be a mapping", _at(source.path, node), hint)
        return None
    found: dict[str, Node] = {}
    for key, value in node.value:
        name = str(key.value) if isinstance(key, ScalarNode) else ""
        if name not in valid:
            _unknown_key(source, key, valid, what, state)
        else:
            found[name] = value
    return found


def _seconds(text: str) -> float | None:
    """The seconds of a duration as rule files write it (``90s``, ``1h30m``), or None."""
    if not _DURATION.fullmatch(text):
        return None
    return sum(float(number) * _UNITS[unit] for number, unit in _DURATION_PART.findall(text))


def _duration(source: _Source, node: Node | None, what: str, default: float, state: _State) -> float:
    """A duration such as ``30m``, ``6h``, ``7d``, ``1h30m`` (s, m, h, d, w), in seconds."""
    if node is None:
        return default
    text = str(node.value).strip().lower() if isinstance(node, ScalarNode) and node.tag == _STR else ""
    seconds = _seconds(text) or 0.0
    if seconds <= 0:
        state.error(f"{what} must be a positive duration", _at(source.path, node), "write a number and a unit: 90s, 30m, 6h, 7d, 2w")
        return default
    if seconds > MAX_DURATION:
        state.error(f"{what} must be at most 366d", _at(source.path, node), "a year is the longest window, baseline or cool-down")
        return default
    return seconds


def _offset(source: _Source, node: Node, what: str, state: _State) -> float | None:
    """A time after a sequence's start: a duration as ``_duration`` reads them, zero allowed."""
    text = str(node.value).strip().lower() if isinstance(node, ScalarNode) and node.tag == _STR else ""
    seconds = _seconds(text)
    if seconds is None or seconds > MAX_DURATION:
        problem = "must not be negative" if text.startswith("-") else "must be at most 366d" if seconds else "must be a duration"
        hint = "write the time after the sequence's start as a number and a unit: 0m, 90s, 30m, 6h, 7d, 7d20m"
        state.error(f"{what} {problem}", _at(source.path, node), hint)
        return None
    return seconds


def format_duration(seconds: float) -> str:
    """A duration as rule files write it, largest units first: ``0s``, ``90s`` as ``1m30s``, ``7d4m``."""
    whole = int(seconds)
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        count, whole = divmod(whole, size)
        if count:
            parts.append(f"{count}{unit}")
    rest = round(whole + seconds - int(seconds), 3)
    if rest or not parts:
        parts.append(f"{rest:g}s")
    return "".join(parts)


def _number(
    source: _Source, node: Node | None, what: str, default: float, bounds: tuple[float, float], state: _State, *, integer: bool
) -> float:
    """A number within ``bounds`` (both included); ``default`` when absent or refused."""
    if node is None:
        return default
    value = _scalar(node) if isinstance(node, ScalarNode) else None
    kinds = (int,) if integer else (int, float)
    minimum, maximum = bounds
    # Compared before any float(): a 400-digit integer does not fit one; NaN fails both tests.
    if not isinstance(value, kinds) or isinstance(value, bool) or not minimum <= value <= maximum:
        kind = "a whole number" if integer else "a number"
        hint = f"e.g. {what.rsplit('.', 1)[-1]}: {default:g}"
        state.error(f"{what} must be {kind} from {minimum:g} to {maximum:g}", _at(source.path, node), hint)
        return default
    return float(value)


def _parse_burst(source: _Source, node: Node, state: _State) -> Burst | None:
    """A rule's ``burst:`` block (docs/signals.md)."""
    keys = _block(source, node, "burst", BURST_KEYS, "write burst: {min_outlets: 3, window: 30m, cooldown: 6h}", state)
    if keys is None:
        return None
    default = Burst()
    # One outlet is every alert; two or more make a burst.
    outlets_bounds = (2, MAX_SIGHTINGS)
    min_outlets = _number(source, keys.get("min_outlets"), "burst.min_outlets", default.min_outlets, outlets_bounds, state, integer=True)
    window = _duration(source, keys.get("window"), "burst.window", default.window, state)
    cooldown = _duration(source, keys.get("cooldown"), "burst.cooldown", default.cooldown, state)
    return Burst(min_outlets=int(min_outlets), window=window, cooldown=cooldown)


def _parse_spike(source: _Source, node: Node, state: _State) -> Spike | None:
    """A rule's ``spike:`` block (docs/signals.md)."""
    keys = _block(source, node, "spike", SPIKE_KEYS, "write spike: {window: 1h, baseline: 7d, factor: 3, min_count: 5}", state)
    if keys is None:
        return None
    default = Spike()
    window = _duration(source, keys.get("window"), "spike.window", default.window, state)
    baseline = _duration(source, keys.get("baseline"), "spike.baseline", default.baseline, state)
    factor = _number(source, keys.get("factor"), "spike.factor", default.factor, (1, MAX_FACTOR), state, integer=False)
    min_count = _number(source, keys.get("min_count"), "spike.min_count", default.min_count, (1, MAX_SIGHTINGS), state, integer=True)
    cooldown = _duration(source, keys.get("cooldown"), "spike.cooldown", default.cooldown, state)
    if window * 2 > baseline:
        where = keys.get("baseline") or keys.get("window") or node
        state.error(
            "spike.window must be at most half of spike.baseline",
            _at(source.path, where),
            "the baseline is the average over several windows before this one: e.g. window: 1h, baseline: 7d",
        )
    return Spike(window=window, baseline=baseline, factor=factor, min_count=int(min_count), cooldown=cooldown)


def _rule_nodes(source: _Source, state: _State) -> tuple[Node | None, Node | None]:
    """The file's ``rules:`` and ``lists:`` nodes (top-level keys are checked here)."""
    root = source.root
    if root is None:
        return None, None
    if not isinstance(root, MappingNode):
        state.error("a rule file must be a mapping with a 'rules:' key", _at(source.path, root), "start the file with 'rules:'")
        return None, None
    rules = lists = None
    for key, value in root.value:
        name = str(key.value) if isinstance(key, ScalarNode) else ""
        if name == "rules":
            rules = value
        elif name == "lists":
            lists = value
        else:
            _unknown_key(source, key, TOP_KEYS, "rule file", state)
    return rules, lists


def _load_sources(sources: Sequence[_Source], state: _State) -> RuleSet:
    parts = [(source, *_rule_nodes(source, state)) for source in sources]
    for source, _rules, lists in parts:
        if lists is not None:
            _collect_lists(source, lists, state)
    compiled: list[CompiledRule] = []
    for source, rules, _lists in parts:
        if rules is None:
            continue
        if isinstance(rules, ScalarNode) and rules.tag == "tag:yaml.org,2002:null":
            continue
        if not isinstance(rules, SequenceNode):
            state.error("rules must be a list", _at(source.path, rules), "put '- id: ...' items under rules:")
            continue
        for node in rules.value:
            item = _parse_rule(source, node, state)
            if item is not None:
                compiled.append(item)
    return RuleSet(compiled, state.lists, state.list_languages, state.warnings)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a rule set is built.

    Compiling allocates hundreds of thousands of long-lived objects, and every
    collection of the oldest generation triggered on the way re-traverses all of them (a
    large share of the load time, see docs/rules.md). Nothing is freed by pausing (no
    cycles are made here that matter), and the collector resumes as it was.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _not_utf8(path: str, data: bytes, exc: UnicodeDecodeError) -> tuple[str, SourceLocation, str]:
    """The error for a rule file that is not UTF-8, at the line and column of the first
    bad byte (everything before it decoded, so the column counts characters as an editor
    does)."""
    line_start = data.rfind(b"\n", 0, exc.start) + 1
    line = data.count(b"\n", 0, exc.start) + 1
    column = len(data[line_start : exc.start].decode("utf-8")) + 1
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        hint = "the file is UTF-16 (it starts with a UTF-16 byte order mark): save it as UTF-8"
    else:
        hint = (
            "save the file as UTF-8; an accented letter or curly quote saved in Latin-1 or "
            "Windows-1252 is a single byte like this one"
        )
    return f"not UTF-8 text: byte 0x{data[exc.start]:02x} ({exc.reason})", SourceLocation(path, line, column), hint


def collect_rules(paths: Iterable[str | Path]) -> tuple[RuleSet, list[RuleError]]:
    """Load what is valid and return every error found (for ``rules check``)."""
    with _gc_paused():
        return _collect_rules(paths)


def _collect_rules(paths: Iterable[str | Path]) -> tuple[RuleSet, list[RuleError]]:
    state = _State()
    files, state.errors = rule_files(paths)
    sources = []
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as exc:
            state.error(f"cannot read rule file: {exc.strerror or exc}", SourceLocation(str(path)))
            continue
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            state.error(*_not_utf8(str(path), data, exc))
            continue
        sources.append(_compose(str(path), text, state))
    ruleset = _load_sources(sources, state)
    _discard(sources)
    return ruleset, state.errors


def _discard(sources: list[_Source]) -> None:
    """Free the YAML nodes a rule at a time: freed in one go when the list goes, a large
    set's nodes would hold the interpreter, stalling the event loop while a reload runs
    in its thread."""
    while sources:
        root = sources.pop().root
        for _key, value in root.value if isinstance(root, MappingNode) else ():
            while isinstance(value, SequenceNode) and value.value:
                value.value.pop()


def load_rules(paths: Iterable[str | Path]) -> RuleSet:
    """Load rule files and directories into a :class:`RuleSet`.

    Raises :class:`RuleSetError` listing every problem if any rule or file is invalid.
    """
    ruleset, errors = collect_rules(paths)
    if errors:
        raise RuleSetError(errors)
    return ruleset


def parse_rules(text: str, path: str = "<string>") -> RuleSet:
    """Load rules from YAML text (for tests and embedding); errors name ``path``."""
    state = _State()
    with _gc_paused():
        ruleset = _load_sources([_compose(path, text, state)], state)
    if state.errors:
        raise RuleSetError(state.errors)
    return ruleset
