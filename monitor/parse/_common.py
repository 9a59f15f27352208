"""What every format adapter produces: raw entries, and the one way they become Articles."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from monitor.language import language_of
from monitor.model import Article
from monitor.parse.identity import article_id, article_link, http_base
from monitor.parse.normalize import markup_to_text
from monitor.redact import link_base

__all__ = ["MarkupText", "ParsedFeed", "RawEntry", "build_article", "link_resolver", "one_line"]

#: A feed value and whether the format says it is HTML (None: unknown, sniff it).
MarkupText = tuple[str, "bool | None"]


@dataclass(frozen=True, slots=True)
class ParsedFeed:
    """The result of :func:`monitor.parse.parse_feed`; picklable across processes."""

    #: The entries in feed order, as normalised Articles.
    articles: list[Article]
    #: The feed's own title (plain text), or None.
    title: str | None = None
    #: RSS ``<ttl>`` in seconds: how long the publisher asks clients to cache the feed.
    ttl: float | None = None
    #: None, or a one-line reason the feed was malformed although entries were read.
    warning: str | None = None
    #: The format: "rss20", "rss10", "atom10", "json11"... (feedparser's version names).
    format: str = "unknown"
    #: Entries whose link was dropped (not http(s), or relative with nothing to resolve
    #: it against), by reason (:data:`monitor.parse.identity.LINK_NOT_HTTP`, ``LINK_RELATIVE``).
    links_dropped: dict[str, int] = field(default_factory=dict)
    #: The first dropped link, cut to 200 characters, for the log.
    dropped_link: str | None = None


@dataclass(slots=True)
class RawEntry:
    """One entry as an adapter read it, before normalisation and identity."""

    guid: str | None = None
    link: str | None = None
    title: MarkupText = ("", None)
    summary: MarkupText = ("", True)
    #: Every full-content value (``content:encoded``, Atom ``<content>``, ``content_html``).
    contents: list[MarkupText] = field(default_factory=list)
    published: datetime | None = None
    #: The language the entry declares (Atom ``xml:lang`` in effect on it), as written.
    language: str | None = None


def link_resolver(feed_url: str, site: str | None) -> str:
    """The base a feed's relative links resolve against: the feed's own http(s) URL
    (credentials removed), else the http(s) site link it declares, else "" (none: a
    feed read from a file never lends its file location to links)."""
    return link_base(feed_url) or http_base(site)


def build_article(
    raw: RawEntry,
    feed_url: str,
    base: str = "",
    dropped: Counter[str] | None = None,
    language: str | None = None,
    *,
    detect_language: bool = True,
) -> Article:
    """Normalise one raw entry's text and give it its identity, its published link and
    its language.

    Only an absolute http(s) link is published (:func:`monitor.parse.identity.article_link`,
    relative ones resolved against ``base``); a dropped one is counted in ``dropped`` by
    reason, and still identifies the entry when it has no guid. The language is
    ``language`` (an ISO 639-1 code, what the operator or the feed declared) when given,
    else detected from the text (:func:`monitor.language.language_of`); with
    ``detect_language=False`` it is left None for the caller to detect
    (:func:`monitor.language.with_language`).
    """
    title = markup_to_text(raw.title[0], is_html=raw.title[1])
    summary = markup_to_text(raw.summary[0], is_html=raw.summary[1])
    body = ""
    if raw.contents:
        # The longest raw value is the fullest version; only that one is normalised.
        value, is_html = max(raw.contents, key=lambda content: len(content[0]))
        body = markup_to_text(value, is_html=is_html)
        if body == summary:
            body = ""
    link = raw.link.strip() if raw.link else None
    url, reason = article_link(link, base)
    if reason is not None and dropped is not None:
        dropped[reason] += 1
    guid = raw.guid if raw.guid and raw.guid.strip() else None
    return Article(
        id=article_id(guid, url or link, title, raw.published, feed_url=feed_url),
        feed_url=feed_url,
        title=title,
        summary=summary,
        body=body,
        url=url,
        published=raw.published,
        guid=guid,
        lang=language_of(language, title, summary, body) if detect_language else language,
    )


def one_line(text: str, limit: int = 240) -> str:
    """Collapse ``text`` to one line of at most ``limit`` characters, for warnings and errors."""
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"
