"""Feed lists from OPML files, the format every feed reader exports.

Nested outlines (folders inside folders) are walked; every outline with an ``xmlUrl``
is a feed, and a feed listed twice is read once (its first listing wins). A relative
``xmlUrl`` names a file relative to the OPML file. An outline may carry our own
optional attributes:

``interval``
    seconds between polls (at least 1).
``enabled``
    ``false`` to skip the feed.
``fulltext``
    ``true`` to fetch article pages and match on their text.
``headers``
    extra request headers as a JSON object, e.g.
    ``headers='{"Authorization": "Bearer ..."}'`` (single-quoted in the XML so the
    JSON's double quotes need no escaping).

Every problem is a :class:`ConfigError` naming the file and the outline's line.
"""

from __future__ import annotations

import json
from pathlib import Path

from lxml import etree

from monitor.errors import ConfigError
from monitor.model import Feed, SourceLocation

__all__ = ["feeds_from_opml"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def feeds_from_opml(path: Path, default_interval: float) -> list[Feed]:
    """Read every feed outline in an OPML file; local feed paths resolve against its folder."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False, load_dtd=False)
    try:
        tree = etree.parse(str(path), parser)
    except OSError as exc:
        raise ConfigError("cannot read OPML file", location=SourceLocation(str(path)), hint=str(exc)) from exc
    except etree.XMLSyntaxError as exc:
        line, column = exc.position if exc.position else (None, None)
        raise ConfigError(f"invalid OPML: {exc.msg}", location=SourceLocation(str(path), line, column)) from exc
    root = tree.getroot()
    body = root.find("body")
    if root.tag != "opml" or body is None:
        raise ConfigError(
            "not an OPML file (no <opml><body>)",
            location=SourceLocation(str(path), root.sourceline),
            hint="export the feed list from your reader as OPML",
        )
    feeds: list[Feed] = []
    seen: set[str] = set()
    for outline in body.iter("outline"):
        url = (outline.get("xmlUrl") or "").strip()
        if not url:
            continue
        if "://" not in url:
            url = str((path.parent / url).resolve())
        if url in seen:
            continue
        seen.add(url)
        location = SourceLocation(str(path), outline.sourceline)
        feeds.append(
            Feed(
                url=url,
                interval=_interval(outline.get("interval"), default_interval, location),
                name=outline.get("title") or outline.get("text"),
                enabled=_flag(outline, "enabled", True, location),
                headers=_headers(outline.get("headers"), location),
                fulltext=_flag(outline, "fulltext", False, location),
            )
        )
    return feeds


def _interval(value: str | None, default: float, location: SourceLocation) -> float:
    if value is None:
        return default
    try:
        interval = float(value)
    except ValueError as exc:
        raise ConfigError(f"interval {value!r} is not a number of seconds", location=location) from exc
    if not interval >= 1:
        raise ConfigError(f"interval {value!r} is below 1 second", location=location, hint='e.g. interval="300"')
    return interval


def _flag(outline: etree._Element, name: str, default: bool, location: SourceLocation) -> bool:
    value = outline.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    # A typo must not silently switch a feed off (or full text on).
    raise ConfigError(f"{name}={value!r} is not true or false", location=location)


def _headers(value: str | None, location: SourceLocation) -> dict[str, str]:
    if value is None or not value.strip():
        return {}
    try:
        headers = json.loads(value)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"headers is not a JSON object: {exc.msg}",
            location=location,
            hint="""headers='{"Authorization": "Bearer ..."}'""",
        ) from exc
    if not isinstance(headers, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise ConfigError("headers must map header names to string values", location=location)
    for name, text in headers.items():
        if not name.strip() or any(c in name + text for c in "\r\n") or ":" in name:
            raise ConfigError(f"header {name!r} is not a valid header name and value", location=location)
    return headers
