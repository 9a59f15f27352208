"""Parse stage: response body bytes -> :class:`ParsedFeed` of normalised Articles.

:func:`parse_feed` is a short dispatch in the style of miniflux's ``parser.ParseFeed``:
sniff the body, defuse XML entity declarations, hand the document to one format
adapter (lxml for plain well-formed RSS 2.0, feedparser for every other RSS/RDF/Atom
document, orjson for JSON Feed), and turn every raw entry into an
:class:`~monitor.model.Article` the same way (:func:`_common.build_article`).

Links: a relative entry link resolves against ``xml:base`` and the feed's own http(s)
URL, else against the site link the feed declares (a feed read from a file has no web
location); only http(s) links are kept, and the dropped ones are counted in
:attr:`ParsedFeed.links_dropped`.

The lxml fast path (:mod:`._fastrss`) gives the same Articles as feedparser at a
fraction of the cost, and claims only documents it is sure about; anything unusual
falls through to feedparser.

Pure and CPU-bound: no network, no files. The daemon runs it in a process pool, so its
arguments and result are picklable and it is a plain module-level function.
"""

from __future__ import annotations

import heapq
from collections import Counter
from datetime import UTC, datetime
from typing import Any

from monitor.errors import FeedError
from monitor.language import AUTO, language_tag
from monitor.model import Article
from monitor.parse._common import ParsedFeed, RawEntry, build_article, link_resolver, one_line
from monitor.parse._fastrss import read_fast_rss
from monitor.parse._feedparser import FeedparserFailed, read_feedparser
from monitor.parse._jsonfeed import NotAJsonFeed, read_json_feed
from monitor.parse._sniff import BodyKind, gunzip, looks_like_html_page, sniff
from monitor.parse._xmlguard import UnsafeDoctype, defuse_doctype
from monitor.parse.normalize import markup_to_text

__all__ = ["MAX_ENTRIES", "ParsedFeed", "parse_feed"]

_DOCTYPE_WARNING = "DOCTYPE entity declarations ignored (only short literal entities are expanded)"

#: Most entries read from one document: the newest by published date (undated ones count
#: as older than any dated one, earlier in the feed as newer), kept in feed order. Each
#: entry costs the daemon's event loop when the parsed feed comes back from the worker
#: (docs/polling.md: 250,000 tiny items held it ~0.5 s and the process ~500 MB).
MAX_ENTRIES = 10_000


def parse_feed(
    body: bytes, feed_url: str, content_type: str | None = None, language: str | None = None, detect_languages: bool = True
) -> ParsedFeed:
    """Parse one fetched feed body into normalised Articles, in feed order.

    ``content_type`` is the HTTP ``Content-Type`` header (its charset is honoured for
    XML). ``language`` is the feed's configured language (:attr:`Feed.language`): an ISO
    639-1 code gives every article that language; ``"auto"`` detects each article's
    language, ignoring what the feed declares; None takes the language the entry or the
    feed declares (Atom ``xml:lang``, RSS ``<language>``, JSON Feed ``language``), else
    detects it. ``detect_languages=False`` skips that detection: an article with no
    configured or declared language gets ``lang`` None, for the caller to detect
    (:func:`monitor.language.with_language`) once it knows the article is new or changed
    (the pipeline does: detection costs more than the rest of a parse of most bodies).
    Returns a :class:`ParsedFeed`; when the feed was malformed but entries could
    still be read, they are returned and ``warning`` says what was wrong.

    Raises :class:`~monitor.errors.FeedError` naming ``feed_url`` when nothing usable
    could be read: an empty body, an HTML page, JSON that is not a JSON Feed, or XML that
    is not a feed.
    """
    kind = sniff(body, content_type)
    if kind is BodyKind.GZIP:
        try:
            body = gunzip(body)
        except ValueError as error:
            raise _error(feed_url, f"not a feed: {error}") from error
        kind = sniff(body, content_type)
    if kind is BodyKind.EMPTY:
        raise _error(feed_url, "empty body")
    if kind is BodyKind.HTML:
        raise _error(feed_url, "not a feed: got an HTML page", hint="is the feed URL right?")
    if kind is BodyKind.JSON:
        return _parse_json(body, feed_url, _Languages(language, None, detect_languages))
    return _parse_xml(body, feed_url, content_type, languages=_Languages(language, None, detect_languages))


def _parse_xml(
    body: bytes, feed_url: str, content_type: str | None, *, fast: bool = True, languages: _Languages | None = None
) -> ParsedFeed:
    """XML feeds; ``fast=False`` skips the lxml fast path (the tests compare the two)."""
    try:
        data, defused = defuse_doctype(body)
    except UnsafeDoctype as error:
        raise _error(feed_url, f"not parsed: {error}") from error
    result = read_fast_rss(data, feed_url, content_type) if fast else None
    if result is None:
        try:
            result = read_feedparser(data, feed_url, content_type)
        except FeedparserFailed as error:
            raise _error(
                feed_url, f"not parsed: feedparser failed on this document ({error})", hint="the feed is malformed; tell its publisher"
            ) from error
    if not result.entries and (result.warning or not result.recognised):
        # Nothing usable: either not a feed at all, or a feed so broken no entry survived.
        if looks_like_html_page(body):
            raise _error(feed_url, "not a feed: got an HTML page", hint="is the feed URL right?")
        if result.recognised:
            raise _error(feed_url, f"malformed {result.version} feed, no entries could be read: {result.warning}")
        raise _error(feed_url, f"not a feed: {result.warning or 'no RSS, Atom or RDF root element'}")
    warning = result.warning
    if defused:
        warning = _join(warning, _DOCTYPE_WARNING)
    entries, capped = _newest(result.entries)
    return ParsedFeed(
        **_articles(entries, feed_url, result.site, (languages or _Languages(None, None)).declared(result.language)),
        title=_title(result.title),
        ttl=result.ttl,
        warning=_join(warning, capped),
        format=result.version or "unknown",
    )


def _parse_json(body: bytes, feed_url: str, languages: _Languages) -> ParsedFeed:
    try:
        result = read_json_feed(body)
    except NotAJsonFeed as error:
        raise _error(feed_url, f"not a feed: {error}") from error
    entries, capped = _newest(result.entries)
    return ParsedFeed(
        **_articles(entries, feed_url, result.site, languages.declared(result.language)),
        title=_title((result.title, False) if result.title else None),
        warning=_join(result.warning, capped),
        format=result.version,
    )


class _Languages:
    """Which language an entry is declared in: the configured one, else (unless that is
    "auto") the entry's own, else the feed's; None: detect it (now, or by the caller when
    ``detect`` is False)."""

    __slots__ = ("configured", "detect", "feed")

    def __init__(self, configured: str | None, feed: str | None, detect: bool = True) -> None:
        self.configured = configured
        self.feed = None if configured == AUTO else language_tag(feed)
        self.detect = detect

    def declared(self, feed: str | None) -> _Languages:
        """The same, with the language the feed itself declares."""
        return _Languages(self.configured, feed, self.detect)

    def of(self, entry: RawEntry) -> str | None:
        if self.configured is not None:
            return None if self.configured == AUTO else self.configured
        return language_tag(entry.language) or self.feed


def _articles(entries: list[RawEntry], feed_url: str, site: str | None, languages: _Languages | None = None) -> dict[str, Any]:
    """The articles, and the links dropped on the way (see :func:`build_article`)."""
    base = link_resolver(feed_url, site)
    dropped: Counter[str] = Counter()
    articles: list[Article] = []
    example = None
    languages = languages or _Languages(None, None)
    for entry in entries:
        article = build_article(entry, feed_url, base, dropped, languages.of(entry), detect_language=languages.detect)
        if example is None and article.url is None and entry.link and entry.link.strip():
            example = one_line(entry.link, 200)
        articles.append(article)
    return {"articles": articles, "links_dropped": dict(dropped), "dropped_link": example}


def _newest(entries: list[RawEntry], limit: int = MAX_ENTRIES) -> tuple[list[RawEntry], str | None]:
    """At most ``limit`` entries (see :data:`MAX_ENTRIES`), and the warning saying so when some were left out."""
    if len(entries) <= limit:
        return entries, None
    oldest = datetime.min.replace(tzinfo=UTC)

    def newness(index: int) -> tuple[datetime, int]:
        published = entries[index].published
        return (published or oldest, -index)

    kept = sorted(heapq.nlargest(limit, range(len(entries)), key=newness))
    return [entries[index] for index in kept], f"{len(entries):,} entries: only the {limit:,} newest were read"


def _join(warning: str | None, more: str | None) -> str | None:
    return f"{warning}; {more}" if warning and more else warning or more


def _title(title: tuple[str, bool | None] | None) -> str | None:
    if title is None:
        return None
    return markup_to_text(title[0], is_html=title[1]) or None


def _error(feed_url: str, problem: str, hint: str | None = None) -> FeedError:
    return FeedError(f"{feed_url}: {one_line(problem)}", hint=hint)
