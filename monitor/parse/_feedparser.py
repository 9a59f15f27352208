"""RSS, RDF and Atom through feedparser, adapted to :class:`RawEntry`."""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime
from typing import Any
from xml.sax import SAXParseException

import feedparser

from monitor.parse._common import MarkupText, RawEntry, one_line
from monitor.parse._xmlguard import replace_invalid_charrefs
from monitor.redact import link_base

__all__ = ["FeedparserFailed", "FeedparserResult", "read_feedparser"]


class FeedparserResult:
    """The parts of a feedparser result the pipeline uses."""

    __slots__ = ("entries", "language", "recognised", "site", "title", "ttl", "version", "warning")

    def __init__(
        self,
        entries: list[RawEntry],
        title: MarkupText | None,
        ttl: float | None,
        warning: str | None,
        version: str,
        recognised: bool,
        site: str | None = None,
        language: str | None = None,
    ) -> None:
        self.entries = entries
        self.title = title
        self.ttl = ttl
        self.warning = warning
        self.version = version
        #: feedparser found a feed root element (RSS, RDF or Atom), even an empty one.
        self.recognised = recognised
        #: The site link the feed declares (RSS channel ``<link>``, Atom alternate link).
        self.site = site
        #: The language the feed declares (RSS ``<language>``, Atom ``xml:lang``), as written.
        self.language = language


class FeedparserFailed(ValueError):
    """feedparser raised on the document (its own bug, reached by malformed input)."""


def read_feedparser(data: bytes, feed_url: str, content_type: str | None) -> FeedparserResult:
    """Parse ``data`` with feedparser (no sanitising or URI rewriting: we only need text).

    Relative links resolve against ``xml:base`` and the feed's http(s) URL (without its
    credentials); a feed read from a file gives feedparser no location at all, so its
    relative links stay relative (a file path is no base for a web link, and feedparser
    would turn ``file:///dir/`` into a ``file://dir/`` URL whose host is ``dir``).
    """
    # Without a Content-Type feedparser flags every feed as bozo; application/xml means
    # "trust the BOM and XML declaration, else UTF-8", which is what no header means.
    headers = {"content-location": link_base(feed_url), "content-type": content_type or "application/xml"}
    # A BytesIO, never the bytes themselves: given bytes that look like a path or URL,
    # feedparser would open that file or fetch that URL.
    # Its lenient parser would raise on a reference to a surrogate (see _xmlguard).
    try:
        result = feedparser.parse(
            io.BytesIO(replace_invalid_charrefs(data)),
            response_headers=headers,
            sanitize_html=False,
            resolve_relative_uris=False,
        )
    except Exception as error:  # whatever feedparser raises is about this document
        # Hostile or broken bytes trip feedparser's own code (KeyError 'textinput' on a stray
        # </guid>, ValueError on a NUL in the XML declaration...): a feed error, not a crash.
        raise FeedparserFailed(f"{type(error).__name__}: {one_line(str(error), 160)}") from error
    feed = result.get("feed", {})
    warning = None
    exception = result.get("bozo_exception")
    # A feed served as text/html or text/plain parses fine: the server is mislabelling it,
    # the feed is not malformed, and a warning on every poll would only be noise.
    if result.get("bozo") and not isinstance(exception, feedparser.NonXMLContentType):
        warning = _describe_bozo(exception)
    version = result.get("version") or ""
    return FeedparserResult(
        entries=[_raw_entry(entry) for entry in result.get("entries", [])],
        title=_markup(feed, "title"),
        ttl=_ttl_seconds(feed.get("ttl")),
        warning=warning,
        version=version,
        recognised=bool(version),
        site=feed.get("link") or None,
        language=feed.get("language") or None,
    )


def _raw_entry(entry: Any) -> RawEntry:
    return RawEntry(
        guid=entry.get("id"),
        link=entry.get("link"),
        title=_markup(entry, "title") or ("", None),
        summary=_markup(entry, "summary") or ("", True),
        contents=[
            (content.get("value") or "", _is_html(content.get("type")))
            for content in entry.get("content", ())
        ],
        # dict.get, not FeedParserDict.get: the latter maps a missing updated_parsed to
        # published_parsed with a DeprecationWarning on every entry.
        published=_utc(dict.get(entry, "published_parsed") or dict.get(entry, "updated_parsed")),
        # The xml:lang in effect on the entry (Atom; feedparser puts it on each text construct).
        language=(entry.get("title_detail") or entry.get("summary_detail") or {}).get("language") or None,
    )


def _markup(container: Any, key: str) -> MarkupText | None:
    """Return a text construct's value and whether feedparser typed it as HTML."""
    value = container.get(key)
    if not value:
        return None
    detail = container.get(f"{key}_detail") or {}
    return value, _is_html(detail.get("type"))


def _is_html(content_type: str | None) -> bool | None:
    if not content_type:
        return None
    return "html" in content_type  # text/html, application/xhtml+xml


def _utc(parsed: time.struct_time | None) -> datetime | None:
    """feedparser's dates are struct_time in UTC; make them aware datetimes."""
    if parsed is None:
        return None
    try:
        return datetime(*parsed[:6], tzinfo=UTC)
    except ValueError:  # a leap second or an out-of-range year
        return None


def _ttl_seconds(value: Any) -> float | None:
    """RSS ``<ttl>`` is whole minutes; anything else (empty, "60m", negative) is ignored."""
    if value is None:
        return None
    text = str(value).strip()
    if not (text.isascii() and text.isdigit()):  # isdigit alone takes "²" and other digits int() refuses
        return None
    # Past a billion minutes the scheduler's cap decides anyway; int() refuses 4,300 digits.
    minutes = int(text) if len(text) <= 9 else 10**9
    return float(minutes * 60) if minutes > 0 else None


def _describe_bozo(exception: Any) -> str:
    """One line naming what feedparser objected to, e.g. "not well-formed XML at line 3,
    column 9: mismatched tag" (feedparser's own exceptions keep their name: it is what they say)."""
    if exception is None:
        return "malformed feed"
    if isinstance(exception, SAXParseException):
        where = f"line {exception.getLineNumber()}, column {exception.getColumnNumber()}"
        return f"not well-formed XML at {where}: {one_line(str(exception.getMessage()))}"
    detail = one_line(str(exception))
    name = type(exception).__name__
    return f"{name}: {detail}" if detail else name
