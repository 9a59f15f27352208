"""Messages: title and body templates, and the default messages for alerts, signals and digests.

A template is text with ``{field}`` placeholders (``{{`` and ``}}`` for literal braces);
nothing else is evaluated, so a template can neither run code nor reach into objects.
The fields (:data:`FIELDS`) are checked when the config is loaded: an unknown one is a
start-up error.

Messages are written in the destination's format: ``markdown`` (the values are escaped,
so text from feeds cannot add links, emphasis or HTML; Apprise turns Markdown into the
HTML of an email or the mrkdwn of Slack) or ``text`` (values as they are).

An alert *breaks* a template when a field it uses has no value in that alert (``link``
of an article without a link, or in Markdown one that is not http(s); ``published`` of an
undated one, ``story``) or when the
title and body come out blank: the alert is then rendered with the default template
(:meth:`Renderer.alert` says so, for the caller to count and log). Signals always use a
generic message listing their fields.

Pure: no I/O.
"""

from __future__ import annotations

import difflib
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from monitor.notify.items import ALERT, Item, outlet

__all__ = [
    "FIELDS",
    "Message",
    "Renderer",
    "Template",
    "TemplateError",
    "alert_fields",
    "escape_markdown",
    "safe_url",
]

#: Every template field, with what it holds (docs/notify.md lists the same).
FIELDS: dict[str, str] = {
    "rule": "the rule id",
    "severity": "info, low, medium, high or critical",
    "tags": "the rule's tags, comma-separated",
    "topic": "the Kafka topic of the alert",
    "title": "the article's title",
    "outlet": "the article's outlet: the alert's article.outlet (a registrable domain), else the host of its link or feed, without www.",
    "link": "the article's link (absent when the article has none)",
    "snippet": "the excerpt around the first match",
    "terms": "the matched terms, comma-separated, in the order the rule engine reported them",
    "matches": "how many hits the rule engine reported",
    "published": "when the article was published, RFC 3339 (absent when the feed gave no date)",
    "detected": "when the monitor raised the alert, RFC 3339",
    "when": "published, else detected",
    "story": "the story id (absent unless the article is part of a story)",
    "story_size": "alerted articles of the story this notify process has seen, this one included (1 without a story)",
    "alert_id": "the alert id",
    "article_id": "the article id",
}

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>&~])")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class TemplateError(ValueError):
    """A template that cannot be used: what is wrong, for a config error."""


def escape_markdown(text: str) -> str:
    """``text`` as literal Markdown: every punctuation mark that means something is escaped,
    so a title from a feed cannot open a link, emphasis or an HTML tag."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", _CONTROL.sub(" ", text))


@dataclass(frozen=True)
class Template:
    """A checked template: literal text and field names, in order."""

    source: str
    parts: tuple[tuple[str, str | None], ...]

    @classmethod
    def parse(cls, source: str) -> Template:
        """Check ``source``; :class:`TemplateError` naming the first problem."""
        parts: list[tuple[str, str | None]] = []
        try:
            parsed = list(string.Formatter().parse(source))
        except ValueError as exc:
            raise TemplateError(f"{exc} (write {{{{ and }}}} for literal braces)") from None
        for literal, name, spec, conversion in parsed:
            if name is None:
                parts.append((literal, None))
                continue
            if conversion or spec:
                written = f"{{{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}"
                raise TemplateError(f"{written}: only plain {{field}} placeholders are supported")
            if name not in FIELDS:
                close = difflib.get_close_matches(name, FIELDS, n=1)
                hint = f"did you mean {{{close[0]}}}? " if close else ""
                raise TemplateError(f"unknown field {{{name}}} ({hint}fields: {', '.join(FIELDS)})")
            parts.append((literal, name))
        return cls(source, tuple(parts))

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(name for _literal, name in self.parts if name is not None)

    def render(self, values: dict[str, str | None], markdown: bool) -> str | None:
        """The text, or None when a field it uses has no value."""
        out: list[str] = []
        for literal, name in self.parts:
            out.append(literal)
            if name is None:
                continue
            value = values.get(name)
            if value is None or _absent(name, value, markdown):
                return None
            if markdown:
                value = safe_url(value) if name == "link" else escape_markdown(value)
            out.append(value)
        return "".join(out)


@dataclass(frozen=True)
class Message:
    """What goes to a destination: a title and a body in ``markdown`` or ``text``."""

    title: str
    body: str
    markdown: bool


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else orjson.dumps(value).decode()


def alert_fields(item: Item, story_size: int = 1) -> dict[str, str | None]:
    """The template fields of an alert."""
    document = item.document
    article = document.get("article") or {}
    counts = document.get("match_counts")
    if isinstance(counts, dict) and counts:
        terms = list(counts)
        hits = sum(n for n in counts.values() if isinstance(n, int))
    else:
        matches = [m for m in document.get("matches") or () if isinstance(m, dict)]
        terms = list(dict.fromkeys(str(m.get("term", "")) for m in matches))
        hits = len(matches)
    published = _text(article.get("published"))
    detected = _text(document.get("detected_at"))
    return {
        "rule": item.rule_id,
        "severity": item.severity or "",
        "tags": ", ".join(item.tags or ()),
        "topic": _text(document.get("topic")),
        "title": _text(article.get("title")),
        "outlet": outlet(document),
        "link": _text(article.get("url")),
        "snippet": _text(document.get("snippet")),
        "terms": ", ".join(terms),
        "matches": str(hits),
        "published": published,
        "detected": detected,
        "when": published or detected,
        "story": item.story_id,
        "story_size": str(story_size),
        "alert_id": item.key,
        "article_id": item.article_id,
    }


class Renderer:
    """Renders one destination's messages with its templates (None: the defaults)."""

    def __init__(
        self, *, title: Template | None = None, body: Template | None = None, markdown: bool = True, max_items: int = 50
    ) -> None:
        self.title = title
        self.body = body
        self.markdown = markdown
        self.max_items = max_items

    def alert(self, item: Item, story_size: int = 1) -> tuple[Message, str | None]:
        """The message of one alert or signal, and why the destination's template was not
        used (None when it was, or when there is none)."""
        if item.kind != ALERT:
            return self.signal(item), None
        values = alert_fields(item, story_size)
        default = self._default(values)
        if self.title is None and self.body is None:
            return default, None
        title = self.title.render(values, self.markdown) if self.title is not None else default.title
        body = self.body.render(values, self.markdown) if self.body is not None else default.body
        if title is not None and body is not None and (title.strip() or body.strip()):
            return Message(_one_line(title), body, self.markdown), None
        used = (*(self.title.fields if self.title else ()), *(self.body.fields if self.body else ()))
        missing = [name for name in used if _absent(name, values.get(name), self.markdown)]
        return default, f"field {{{missing[0]}}} has no value" if missing else "the template renders blank"

    def _default(self, values: dict[str, str | None]) -> Message:
        title = f"[{values['severity']}] {values['rule']}: {values['title'] or values['outlet'] or values['alert_id']}"
        lines = [_md(values["title"] or "(no title)", self.markdown, bold=True)]
        lines.append(" · ".join(_md(v, self.markdown) for v in (values["outlet"], values["when"]) if v))
        if values["snippet"]:
            lines += ["", _md(values["snippet"], self.markdown)]
        if values["terms"]:
            lines += ["", f"Matched: {_md(values['terms'], self.markdown)}"]
        if values["link"]:
            lines += ["", _link(values["link"], "Read the article", self.markdown)]
        return Message(_one_line(title), "\n".join(lines), self.markdown)

    def signal(self, item: Item) -> Message:
        """The message of a signal: a sentence for a burst, a spike or an escalation of the
        monitor's (``schemas/signal-v1.json``), else its kind and rule and each of its fields."""
        headline = _signal_headline(item)
        if headline is None:
            return self._generic_signal(item)
        document = item.document
        latest, first = _mapping(document, "latest_article"), _mapping(document, "first_article")
        named = document.get("outlets")
        outlets = [o for o in named if isinstance(o, str)] if isinstance(named, list) else []
        severity = f"[{item.severity}] " if item.severity else ""
        lines = [_md(headline, self.markdown, bold=True)]
        if outlets:
            shown = ", ".join(outlets[:12]) + (f" and {len(outlets) - 12} more" if len(outlets) > 12 else "")
            lines.append(f"Outlets: {_md(shown, self.markdown)}")
        for label, article in (("Latest", latest), ("First", first)):
            if article.get("title") and (label == "Latest" or article.get("id") != latest.get("id")):
                title = _md(str(article["title"]), self.markdown)
                url = article.get("url")
                link = f" {_link(url, 'read', self.markdown)}" if isinstance(url, str) and url else ""
                outlet_name = f" ({_md(str(article['outlet']), self.markdown)})" if article.get("outlet") else ""
                lines.append(f"{label}: {title}{outlet_name}{link}")
        return Message(_one_line(f"{severity}{headline}"), "\n".join(lines), self.markdown)

    def _generic_signal(self, item: Item) -> Message:
        document = item.document
        kind = str(document.get("kind", "signal"))
        title = f"[{kind}] {item.rule_id}" + (f" ({item.severity})" if item.severity else "")
        lines = []
        for name, value in document.items():
            if name in {"schema_version", "kind", "rule_id"} or value is None:
                continue
            text = _text(value) or ""
            text = text if len(text) <= 300 else text[:299] + "…"
            shown = (
                _link(text, text, True)
                if self.markdown and name.endswith("url") and text.startswith(("http://", "https://"))
                else _md(text, self.markdown)
            )
            lines.append(f"{_md(name, self.markdown, bold=True)}: {shown}" if self.markdown else f"{name}: {shown}")
        return Message(_one_line(title), "\n".join(lines), self.markdown)

    def digest(self, items: Sequence[tuple[Item, int]]) -> Message:
        """One message for many items (each with its story size): grouped by rule, copies of
        one story on one line, at most ``max_items`` lines in all (the rest counted)."""
        by_rule: dict[str, list[tuple[Item, int]]] = {}
        for entry in items:
            by_rule.setdefault(entry[0].rule_id, []).append(entry)
        alerts = sum(1 for item, _ in items if item.kind == ALERT)
        signals = len(items) - alerts
        what = ", ".join(part for part in (_count(alerts, "alert"), _count(signals, "signal")) if part)
        rules = ", ".join(f"{rule} {len(entries)}" for rule, entries in by_rule.items())
        title = f"{what}: {rules}"
        lines: list[str] = []
        budget = self.max_items
        for rule, entries in by_rule.items():
            if lines:
                lines.append("")
            lines.append(f"{_md(rule, self.markdown, bold=True)} ({len(entries)})")
            shown = 0
            for group in _by_story(entries):
                if budget <= 0:
                    break
                lines.append(self._digest_line(group))
                shown += len(group)
                budget -= 1
            if shown < len(entries):
                lines.append(f"… and {len(entries) - shown} more")
        return Message(_one_line(title), "\n".join(lines), self.markdown)

    def _digest_line(self, group: list[tuple[Item, int]]) -> str:
        item, size = group[0]
        if item.kind != ALERT:
            message = self.signal(item)
            return f"- {_md(message.title, self.markdown)}"
        values = alert_fields(item, size)
        headline = values["title"] or values["alert_id"] or ""
        shown = (
            _link(values["link"], headline, self.markdown) if values["link"] and self.markdown else _md(headline, self.markdown)
        )
        extra = [values["outlet"] or ""]
        if len(group) > 1:
            outlets = list(dict.fromkeys(alert_fields(other, 1)["outlet"] or "" for other, _ in group[1:]))
            extra.append(f"+{len(group) - 1} more: {', '.join(o for o in outlets if o)}")
        tail = " · ".join(_md(part, self.markdown) for part in (*extra, values["severity"] or "") if part)
        link = f" {values['link']}" if values["link"] and not self.markdown else ""
        return f"- {shown} — {tail}{link}"


def _absent(name: str, value: str | None, markdown: bool) -> bool:
    """Whether a field has no value for a template; in Markdown a ``link`` that is not
    http(s) has none (a ``javascript:`` or ``data:`` target would become a live link)."""
    if not value:
        return True
    return markdown and name == "link" and not value.startswith(("http://", "https://"))


def _signal_headline(item: Item) -> str | None:
    """One sentence for a signal of the monitor's, or None for another kind or shape."""
    document = item.document
    counts, window = _mapping(document, "counts"), _mapping(document, "window")
    articles, outlets = counts.get("articles"), counts.get("outlets")
    span = _span(window.get("start"), window.get("end"))
    kind, rule = document.get("kind"), item.rule_id
    if kind == "burst" and isinstance(outlets, int):
        return f"Breaking: {rule} — {outlets} outlets within {span}"
    if kind == "spike" and isinstance(articles, int):
        ratio, baseline = document.get("ratio"), document.get("baseline")
        known = isinstance(ratio, (int, float)) and isinstance(baseline, (int, float))
        usual = f"{ratio:g}× the usual {baseline:g}" if known else "none usually"
        return f"Spike: {rule} — {articles} articles within {span}, {usual}"
    if kind == "escalation" and isinstance(document.get("level"), int):
        return f"Story growing: {rule} — now {document['level']} outlets"
    return None


def _mapping(document: dict[str, Any], name: str) -> dict[str, Any]:
    value = document.get(name)
    return value if isinstance(value, dict) else {}


def _span(start: Any, end: Any) -> str:
    """``12 min`` between two RFC 3339 times ("a moment" when unreadable or equal)."""
    try:
        first, last = (datetime.fromisoformat(str(moment).replace("Z", "+00:00")) for moment in (start, end))
        seconds = (last - first).total_seconds()
    except (ValueError, TypeError, OverflowError):  # unreadable, or one with a zone and one without
        return "a moment"
    if seconds < 60:
        return "a minute"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"


def _by_story(entries: list[tuple[Item, int]]) -> list[list[tuple[Item, int]]]:
    """Entries with the same story together (in the order of the story's first entry)."""
    groups: dict[str, list[tuple[Item, int]]] = {}
    for index, entry in enumerate(entries):
        groups.setdefault(entry[0].story_id or f"\x00{index}", []).append(entry)
    return list(groups.values())


def _count(n: int, noun: str) -> str:
    return "" if n == 0 else f"{n} {noun}" + ("" if n == 1 else "s")


def _md(text: str, markdown: bool, *, bold: bool = False) -> str:
    if not markdown:
        return _CONTROL.sub(" ", text)
    escaped = escape_markdown(text)
    return f"**{escaped}**" if bold else escaped


def _link(url: str, label: str, markdown: bool) -> str:
    if not markdown:
        return url
    # Only http(s) links become links; the url's own parentheses cannot close the target.
    if not url.startswith(("http://", "https://")):
        return escape_markdown(label)
    return f"[{escape_markdown(label)}]({safe_url(url)})"


def safe_url(url: str) -> str:
    """``url`` fit for a Markdown link target: what would end the target or open a tag is
    percent-encoded."""
    return "".join(_URL_ESCAPES.get(c, c) for c in _CONTROL.sub("", url))


_URL_ESCAPES = {"(": "%28", ")": "%29", " ": "%20", "<": "%3C", ">": "%3E", "[": "%5B", "]": "%5D", "\\": "%5C"}


def _one_line(text: str) -> str:
    return " ".join(_CONTROL.sub(" ", text).split())
