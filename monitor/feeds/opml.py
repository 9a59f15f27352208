"""Feed lists from OPML files, the format every feed reader exports.

Nested outlines (folders inside folders) are walked; every outline with an ``xmlUrl``
is a feed, and a feed listed twice is read once (its first listing wins). ``xmlUrl`` is
an http(s) URL, a ``file://`` URL or a path; a relative path names a file relative to
the OPML file. An outline may carry our own optional attributes (XML attribute values
are text, so each is parsed strictly; surrounding spaces are ignored):

``interval``
    seconds between polls: a decimal number (digits, optionally a dot and more digits,
    e.g. ``300`` or ``90.5``) of at least 1.
``enabled``
    ``false`` to skip the feed. Booleans are ``true``/``false``, ``yes``/``no``,
    ``on``/``off`` or ``1``/``0``, in any case.
``fulltext``
    ``true`` to fetch article pages and match on their text (a boolean, as above).
``websub``
    ``off`` never to subscribe to the feed's WebSub hub; ``auto`` (the default) subscribes
    when ``[websub]`` is on and the feed names a hub (docs/websub.md).
``language``
    the language of the feed's articles, overriding what the feed declares: an ISO 639-1
    code (``fr``; a tag such as ``fr-CA`` counts as its code), or ``auto`` to ignore the
    feed's declaration and detect each article's language (docs/languages.md).
``headers``
    extra request headers as a JSON object of strings, e.g.
    ``headers='{"Authorization": "Bearer ..."}'`` (single-quoted in the XML so the
    JSON's double quotes need no escaping).

Other attributes (``text``, ``title``, ``type``, ``htmlUrl``, ...) are the readers' own
and are ignored, except that ``title`` (else ``text``) names the feed. Every problem is
a :class:`ConfigError` naming the file and the outline's line, the feed, the attribute
and what it must be.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from lxml import etree

from monitor.errors import ConfigError, error_text
from monitor.language import AUTO, feed_language_problem, language_tag
from monitor.model import Feed, SourceLocation
from monitor.settings import WEBSUB_MODES, feed_location_problem, header_problem

__all__ = ["feeds_from_opml"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_BOOLEANS = "use true or false; yes/no, on/off and 1/0 work too, in any case"


def feeds_from_opml(path: Path, default_interval: float) -> list[Feed]:
    """Read every feed outline in an OPML file; local feed paths resolve against its folder."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, load_dtd=False)
    try:
        data = path.read_bytes()
    except OSError as exc:
        # lxml's own error named the path three times and no errno: read it ourselves.
        raise ConfigError(
            f"cannot read OPML file: {exc.strerror or error_text(exc)}", location=SourceLocation(str(path)),
            hint="check [feeds] opml (a relative path is relative to the config file)",
        ) from exc  # fmt: skip
    try:
        root = etree.fromstring(data, parser, base_url=str(path))
    except etree.XMLSyntaxError as exc:
        line, column = exc.position if exc.position else (None, None)
        # The position is in the location already: not again at the end of lxml's message.
        why = re.sub(r", line \d+, column \d+$", "", exc.msg)
        raise ConfigError(f"invalid OPML: {why}", location=SourceLocation(str(path), line, column)) from exc
    body = root.find("body")
    if root.tag != "opml" or body is None:
        raise ConfigError(
            "not an OPML file (no <opml><body>)",
            location=SourceLocation(str(path), _line(root)),
            hint="export the feed list from your reader as OPML",
        )
    feeds: list[Feed] = []
    seen: set[str] = set()
    for outline in body.iter("outline"):
        url = (outline.get("xmlUrl") or "").strip()
        if not url:
            continue
        problem = feed_location_problem(url)
        if problem is not None:
            raise ConfigError(
                f"outline xmlUrl: {problem}",
                location=SourceLocation(str(path), _line(outline)),
                hint="an http(s):// or file:// URL, or a path relative to the OPML file",
            )
        if "://" not in url:
            url = str((path.parent / url).resolve())
        if url in seen:
            continue
        seen.add(url)
        location = SourceLocation(str(path), _line(outline))
        about = f"outline {outline.get('xmlUrl', '').strip()}"
        feeds.append(
            Feed(
                url=url,
                interval=_interval(outline.get("interval"), default_interval, location, about),
                name=outline.get("title") or outline.get("text"),
                enabled=_flag(outline, "enabled", True, location, about),
                headers=_headers(outline.get("headers"), location, about),
                fulltext=_flag(outline, "fulltext", False, location, about),
                websub=_websub(outline.get("websub"), location, about),
                language=_language(outline.get("language"), location, about),
            )
        )
    return feeds


def _interval(value: str | None, default: float, location: SourceLocation, about: str) -> float:
    if value is None:
        return default
    hint = 'a decimal number of seconds, at least 1, e.g. interval="300"'
    if not _SECONDS.fullmatch(value.strip()):
        raise ConfigError(f"{about}: interval {value!r} is not a number of seconds", location=location, hint=hint)
    interval = float(value)
    if interval < 1:
        raise ConfigError(f"{about}: interval {value!r} is below 1 second", location=location, hint=hint)
    return interval


def _flag(outline: etree._Element, name: str, default: bool, location: SourceLocation, about: str) -> bool:
    value = outline.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    # A typo must not silently switch a feed off (or full text on).
    raise ConfigError(f"{about}: {name}={value!r} is not true or false", location=location, hint=_BOOLEANS)


def _websub(value: str | None, location: SourceLocation, about: str) -> str:
    if value is None:
        return WEBSUB_MODES[0]
    mode = value.strip().lower()
    if mode not in WEBSUB_MODES:
        raise ConfigError(f"{about}: websub={value!r} is not one of {', '.join(WEBSUB_MODES)}", location=location, hint='websub="off"')
    return mode


def _language(value: str | None, location: SourceLocation, about: str) -> str | None:
    if value is None or not value.strip():
        return None
    problem = feed_language_problem(value)
    if problem is not None:
        raise ConfigError(f"{about}: {problem}", location=location, hint='language="fr", or language="auto" to detect')
    return language_tag(value) or AUTO


def _headers(value: str | None, location: SourceLocation, about: str) -> dict[str, str]:
    if value is None or not value.strip():
        return {}
    example = """headers='{"Authorization": "Bearer ..."}'"""
    try:
        headers = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{about}: headers is not a JSON object: {exc.msg}", location=location, hint=example) from exc
    if not isinstance(headers, dict):
        raise ConfigError(f"{about}: headers must map header names to string values", location=location, hint=example)
    for name, text in headers.items():
        problem = header_problem(name, text)
        if problem is not None:
            raise ConfigError(f"{about}: headers: {problem}", location=location, hint=example)
    return headers


def _line(element: etree._Element) -> int | None:
    """The element's line in the file, when lxml knows it."""
    line = element.sourceline
    return line if isinstance(line, int) else None
