"""Feed lists from OPML files, the format every feed reader exports.

Nested outlines (folders) are walked; every outline with an ``xmlUrl`` is a feed. An
outline may carry our own optional attributes: ``interval`` (seconds), ``enabled``
(``false`` to skip), ``fulltext`` (``true`` to fetch article pages).
"""

from __future__ import annotations

from pathlib import Path

from lxml import etree

from monitor.errors import ConfigError
from monitor.model import Feed, SourceLocation

__all__ = ["feeds_from_opml"]

_TRUE = {"1", "true", "yes", "on"}


def feeds_from_opml(path: Path, default_interval: float) -> list[Feed]:
    """Read every feed outline in an OPML file; local feed paths resolve against its folder."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
    try:
        tree = etree.parse(str(path), parser)
    except OSError as exc:
        raise ConfigError("cannot read OPML file", location=SourceLocation(str(path)), hint=str(exc)) from exc
    except etree.XMLSyntaxError as exc:
        line, column = exc.position if exc.position else (None, None)
        raise ConfigError(f"invalid OPML: {exc.msg}", location=SourceLocation(str(path), line, column)) from exc
    body = tree.getroot().find("body")
    if tree.getroot().tag != "opml" or body is None:
        raise ConfigError("not an OPML file (no <opml><body>)", location=SourceLocation(str(path)))
    feeds: list[Feed] = []
    seen: set[str] = set()
    for outline in body.iter("outline"):
        url = (outline.get("xmlUrl") or "").strip()
        if not url or url in seen:
            continue
        seen.add(url)
        if "://" not in url:
            url = str((path.parent / url).resolve())
        location = SourceLocation(str(path), outline.sourceline)
        try:
            interval = float(outline.get("interval", default_interval))
        except ValueError as exc:
            raise ConfigError(f"interval {outline.get('interval')!r} is not a number of seconds", location=location) from exc
        feeds.append(
            Feed(
                url=url,
                interval=interval,
                name=outline.get("title") or outline.get("text"),
                enabled=outline.get("enabled", "true").lower() in _TRUE,
                fulltext=outline.get("fulltext", "false").lower() in _TRUE,
            )
        )
    return feeds
