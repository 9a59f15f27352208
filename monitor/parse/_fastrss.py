"""A fast path for plain, well-formed RSS 2.0: lxml instead of feedparser.

feedparser drives a SAX parse through Python callbacks, then sanitises; lxml builds the
same document's tree in C, many times faster (docs/polling.md, "Parsing"). Most feeds
the monitor polls are plain RSS 2.0, so those are read here and everything else goes to
feedparser.

The contract is "the same Articles feedparser would give, or None". :func:`read_fast_rss`
claims a document only when it is sure of that, and returns None (not claimed: use
feedparser) for anything unusual:

* not well-formed XML, a DOCTYPE, ``xml:base`` or ``xml:lang``, an encoding other than UTF-8 (or
  ASCII), a Content-Type feedparser would second-guess;
* not ``<rss version="2.0"><channel>``, or items outside the channel; a channel with
  two ``<link>`` elements or an alternate ``atom:link`` (which one is the site link
  then depends on feedparser's order of events);
* an item child element outside a short list of ones whose meaning is known (title,
  link, description, guid, pubDate, content:encoded, and a few that carry no text the
  monitor reads), such an element with children or unexpected attributes (``type``,
  ``mode``), or a repeated title, link, description, guid or pubDate;
* C1 control characters (feedparser maps them to cp1252 punctuation).

Where feedparser's result depends on its own helpers (relative-URL joining, the date
formats it accepts, its guess of whether an RSS title is HTML) the same helpers are
called, so the two paths agree by construction on those fields; on the rest
``tests/test_parse_fastpath.py`` compares every field of every article on every feed of
the corpus the fast path claims.

The parser never resolves entities (only XML's five and character references exist
without a DTD, and a DOCTYPE is not claimed), never reads the network, and refuses
huge text nodes; :func:`monitor.parse._xmlguard.defuse_doctype` has run before.
"""

from __future__ import annotations

import re
import threading

from feedparser.datetimes import _parse_date
from feedparser.mixin import _FeedParserMixin
from feedparser.urls import _urljoin
from lxml import etree

from monitor.parse._common import MarkupText, RawEntry
from monitor.parse._feedparser import FeedparserResult, _ttl_seconds, _utc
from monitor.redact import link_base

__all__ = ["read_fast_rss"]

_CONTENT = "{http://purl.org/rss/1.0/modules/content/}encoded"
_DC = "{http://purl.org/dc/elements/1.1/}"
_MEDIA = "{http://search.yahoo.com/mrss/}"

#: Item children read as text: each at most once (content:encoded may repeat), no
#: attributes except guid's isPermaLink, no children.
_TEXT_ELEMENTS = frozenset({"title", "link", "description", "guid", "pubDate", _CONTENT, _DC + "date"})
#: Item children feedparser keeps in fields the monitor never reads (authors, tags,
#: enclosures, media): allowed with any attributes, but no child elements.
_INERT_ELEMENTS = frozenset(
    {
        "author", "category", "comments", "enclosure",
        _DC + "creator", _DC + "subject",
        _MEDIA + "content", _MEDIA + "thumbnail",
    }
)  # fmt: skip
#: What an inert media element may hold (media:title or media:description would stand
#: in for the item's own title and description in feedparser).
_INERT_CHILDREN = frozenset({_MEDIA + "credit", _MEDIA + "thumbnail", _MEDIA + "rating"})
_ATOM_LINK = "{http://www.w3.org/2005/Atom}link"
_DC_DATE = _DC + "date"

# feedparser maps C1 controls to cp1252 punctuation; rare enough to leave to it.
_C1 = re.compile("[\x80-\x9f]")
_XML_DECLARATION = re.compile(rb"""^<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")
_XML_MEDIA_TYPES = frozenset({"application/xml", "application/rss+xml", "application/rdf+xml", "application/atom+xml", "text/xml"})
_looks_like_html = _FeedParserMixin.looks_like_html

_PARSERS = threading.local()


def _xml_parser() -> etree.XMLParser:
    parser: etree.XMLParser | None = getattr(_PARSERS, "xml", None)
    if parser is None:
        parser = etree.XMLParser(
            resolve_entities=False,
            no_network=True,
            huge_tree=False,
            load_dtd=False,
            recover=False,
            remove_blank_text=False,
        )
        _PARSERS.xml = parser
    return parser


def read_fast_rss(data: bytes, feed_url: str, content_type: str | None) -> FeedparserResult | None:
    """Read plain RSS 2.0 with lxml; None when the document is not one this path claims."""
    if not _encoding_is_plain(data, content_type):
        return None
    head = data[:4096]
    if b"<!DOCTYPE" in head or b"xml:base" in data or b"xml:lang" in data:
        return None
    try:
        root = etree.fromstring(data, _xml_parser())
    except (etree.XMLSyntaxError, ValueError):
        return None
    if root.tag != "rss" or root.get("version") != "2.0":
        return None
    channels = [child for child in root if child.tag == "channel"]
    if len(channels) != 1:
        return None
    read = _channel(channels[0])
    if read is None:
        return None
    title, ttl, items, site_links, language = read
    if len(site_links) > 1 or sum(1 for _ in root.iter("item")) != len(items):
        return None
    # feedparser's base: the feed's http(s) URL without credentials, none for a file.
    base = link_base(feed_url)
    site = None
    if site_links:
        text = _text(site_links[0])
        if text is None or site_links[0].attrib or len(site_links[0]):
            return None
        site = _fix_link(_fix_utf8(_urljoin(base, text))) if text else None
    entries = []
    for item in items:
        entry = _entry(item, base)
        if entry is None:
            return None
        entries.append(entry)
    return FeedparserResult(
        entries=entries, title=title, ttl=ttl, warning=None, version="rss20", recognised=True, site=site, language=language
    )


def _channel(
    channel: etree._Element,
) -> tuple[MarkupText | None, float | None, list[etree._Element], list[etree._Element], str | None] | None:
    """The channel's title, ttl, items, site links and declared language; None for
    anything feedparser might read differently (a second title, an alternate atom:link,
    a dc:title)."""
    title: MarkupText | None = None
    ttl = None
    language = None
    items = []
    titles = 0
    site_links = []
    for child in channel:
        tag = child.tag
        if tag == "item":
            items.append(child)
        elif tag == "link":
            site_links.append(child)
        elif tag == _ATOM_LINK and child.get("rel", "alternate") == "alternate":
            return None  # an alternate atom:link competes with <link> for feedparser's feed.link
        elif tag == "title":
            titles += 1
            text = _text(child)
            if text is None:
                return None
            text = _fix_utf8(text)
            title = (text, _looks_like_html(text)) if text else None
        elif isinstance(tag, str) and tag.endswith("}title"):
            return None  # dc:title and the like stand in for the channel title in feedparser
        elif tag == "ttl":
            ttl = _ttl_seconds((child.text or "").strip())
        elif tag == "language":
            language = (child.text or "").strip() or None
    if titles > 1:
        return None
    return title, ttl, items, site_links, language


def _encoding_is_plain(data: bytes, content_type: str | None) -> bool:
    """True when feedparser would decode ``data`` as UTF-8 without complaint."""
    charset = None
    if content_type:
        media_type, _, params = content_type.partition(";")
        if media_type.strip().lower() not in _XML_MEDIA_TYPES:
            return False
        match = re.search(r"charset\s*=\s*[\"']?([^\s;\"']+)", params, re.IGNORECASE)
        charset = match.group(1).lower() if match else None
        # text/xml without a charset means us-ascii to feedparser (RFC 3023).
        if media_type.strip().lower() == "text/xml" and charset is None and not data.isascii():
            return False
    if charset not in (None, "utf-8"):
        return False
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    declared = _XML_DECLARATION.match(data)
    if declared is not None and declared.group(1).lower() != b"utf-8":
        return False
    return data[:1] == b"<"


def _entry(item: etree._Element, base: str) -> RawEntry | None:
    """One ``<item>`` as feedparser would read it; None when this path cannot tell."""
    if item.attrib:
        return None
    read = _item_values(item)
    if read is None:
        return None
    values, contents, permalink = read
    guid = values.get("guid")
    if guid is not None:
        guid = _fix_utf8(_urljoin(base, guid) if guid and permalink else guid)
    link = values.get("link")
    if link:
        link = _fix_link(_fix_utf8(_urljoin(base, link)))
    elif guid is not None and permalink:
        # feedparser: a permalink guid is the link when the item has no <link>.
        link = guid
    title = _fix_utf8(values.get("title", ""))
    summary = values.get("description")
    summary_is_html: bool | None = True
    if summary is not None:
        summary = _fix_utf8(summary)
    elif contents:
        # feedparser copies the first content value into a missing summary, without
        # its type: whether it is HTML is then guessed (None).
        summary_is_html = None
        summary = contents[0][0]
    published = _parse_date(values["pubDate"]) if values.get("pubDate") else None
    if published is None and values.get(_DC_DATE):
        # dc:date is feedparser's "updated", the fallback for a missing publication date.
        published = _parse_date(values[_DC_DATE])
    return RawEntry(
        guid=guid,
        link=link,
        title=(title, _looks_like_html(title)) if title else ("", None),
        summary=(summary, summary_is_html) if summary else ("", True),
        contents=contents,
        published=_utc(published),
    )


def _item_values(item: etree._Element) -> tuple[dict[str, str], list[MarkupText], bool] | None:
    """The text of each element of an item, its content:encoded values, and whether its
    guid is a permalink; None for anything feedparser might read differently."""
    values: dict[str, str] = {}
    contents: list[MarkupText] = []
    permalink = True
    for child in item:
        tag = child.tag
        if not isinstance(tag, str):
            continue  # comments and processing instructions between elements
        if tag in _INERT_ELEMENTS or tag == _ATOM_LINK:
            if not _ignorable(child, tag):
                return None
            continue
        if tag not in _TEXT_ELEMENTS or len(child):
            return None
        if tag == "guid":
            if any(name.lower() != "ispermalink" for name in child.attrib):
                return None
            permalink = next((value for name, value in child.attrib.items() if name.lower() == "ispermalink"), "true") == "true"
        elif child.attrib:
            return None
        text = _text(child)
        if text is None:
            return None
        if tag == _CONTENT:
            contents.append((_fix_utf8(text), True))
        elif tag in values:
            return None  # repeated: feedparser's choice between them depends on order and depth
        else:
            values[tag] = text
    return values, contents, permalink


def _ignorable(child: etree._Element, tag: str) -> bool:
    """Whether an element feedparser files away from the entry's text can be skipped."""
    if tag == _ATOM_LINK:
        # Only rel="self"/"enclosure"/... with an href: feedparser files those under
        # ``links``; an alternate (or href-less) one would become the item's link.
        return "href" in child.attrib and child.get("rel", "alternate") != "alternate" and not len(child)
    return not any(not isinstance(inner.tag, str) or inner.tag not in _INERT_CHILDREN or len(inner) for inner in child)


def _text(element: etree._Element) -> str | None:
    """The element's text as feedparser reports it; None when this path cannot tell."""
    text = (element.text or "").strip()
    if text.isascii():
        return text
    # feedparser maps C1 controls to cp1252 punctuation, also after its UTF-8 repair.
    if _C1.search(text) or _C1.search(_fix_utf8(text)):
        return None
    return text


def _fix_utf8(text: str) -> str:
    """feedparser's repair of UTF-8 that was decoded as Latin-1 ("Ã©" -> "é")."""
    if text.isascii():
        return text
    try:
        return text.encode("iso-8859-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


_BROKEN_QUERY = re.compile("&([A-Za-z0-9_]+);")


def _fix_link(link: str) -> str:
    """feedparser's undoing of ``?a=1&b;=2`` in links (query strings taken for entities)."""
    if "&" not in link:
        return link
    return _BROKEN_QUERY.sub(r"&\g<1>", link.replace("&amp;", "&"))
