"""Full article text: fetch the page an entry links to and match rules on its main text.

Enabled per feed (``fulltext = true``). For each article that needs matching (new, or
its feed text changed) the page at its link is fetched by the guarded page fetcher
(:class:`monitor.adapters.pages.PageFetcher`: non-public addresses refused unless
allowed, same size and time limits as feeds), its main text is extracted with
trafilatura in the CPU pool, and the article's ``body`` becomes that text with
``fulltext_field = "body"``, so a rule hit in it is reported in the ``body`` field.

Any failure (refused address, HTTP error, timeout, too large, nothing extractable)
leaves the article as the feed gave it and is logged as ``fulltext.failed`` with the
reason: the feed's own text is still matched, nothing is lost.

The extraction itself (:func:`extract_main_text`) is a pure function of the bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

from monitor.errors import FeedError, error_text
from monitor.log import get_logger
from monitor.model import Article
from monitor.parse.normalize import clean_text

__all__ = ["FulltextEnricher", "PageSource", "extract_main_text"]

log = get_logger("fulltext")

T = TypeVar("T")

#: Extracted text shorter than this is taken as a failed extraction (a paywall, a stub).
MIN_CHARS = 200


class PageSource(Protocol):
    """What the enricher needs from the page fetcher (see ``adapters.pages.PageFetcher``)."""

    async def fetch(self, url: str) -> Any:
        """Return an object with ``url``, ``body`` and ``content_type``; FeedError on failure."""


Runner = Callable[..., Awaitable[Any]]


def extract_main_text(body: bytes, url: str) -> str:
    """The main text of an HTML article page, as plain normalised text ("" if none).

    Module-level and pure so it can run in a worker process.
    """
    import trafilatura  # imported here: heavy, and only worker processes need it

    text = trafilatura.extract(
        body,
        url=url,
        include_comments=False,
        include_tables=False,
        include_images=False,
        favor_precision=True,
        deduplicate=True,
    )
    return clean_text(text) if text else ""


#: Content types trafilatura can read; anything else (PDF, images, JSON) is not tried.
_HTML_TYPES = ("text/html", "application/xhtml+xml", "application/xml", "text/xml")


def _looks_like_html(content_type: str | None) -> bool:
    """Whether a page's declared type is (X)HTML; an undeclared type is given a try."""
    if not content_type:
        return True
    return content_type.split(";", 1)[0].strip().lower() in _HTML_TYPES


@dataclass
class FulltextStats:
    fetched: int = 0
    failed: int = 0


class FulltextEnricher:
    """Replaces an article's body by its page's main text, or leaves it as it was."""

    def __init__(
        self,
        pages: PageSource,
        run: Runner,
        *,
        concurrency: int = 8,
        min_chars: int = MIN_CHARS,
    ) -> None:
        """``run(function, *args, label=..., what=...)`` runs CPU work (``ParserPool.run``)."""
        self._pages = pages
        self._run = run
        self._limit = asyncio.Semaphore(concurrency)
        self._min_chars = min_chars
        self.stats = FulltextStats()

    async def enrich_all(self, articles: list[Article]) -> list[Article]:
        """:meth:`enrich` for many articles, concurrently (within the concurrency limit)."""
        return list(await asyncio.gather(*(self.enrich(a) for a in articles)))

    async def enrich(self, article: Article) -> Article:
        """The article with its page's main text as ``body``; unchanged when that fails."""
        if not article.url:
            return article
        async with self._limit:
            try:
                page = await self._pages.fetch(article.url)
                if not _looks_like_html(page.content_type):
                    raise FeedError(f"{page.url}: not an HTML page ({page.content_type})")
                text = await self._run(extract_main_text, page.body, page.url, label=article.url, what="extracting text from")
            except FeedError as exc:
                self.stats.failed += 1
                log.warning("fulltext.failed", feed_url=article.feed_url, url=article.url, reason=str(exc))
                return article
            except Exception as exc:  # noqa: BLE001 - the extractor's own bugs on hostile HTML
                # Whatever the extractor trips over in a hostile page, the feed's text is
                # still there to match: log it with the page and fall back.
                self.stats.failed += 1
                log.warning("fulltext.failed", feed_url=article.feed_url, url=article.url, reason=error_text(exc))
                return article
        if len(text) < self._min_chars:
            self.stats.failed += 1
            reason = f"only {len(text)} characters of main text found"
            log.info("fulltext.failed", feed_url=article.feed_url, url=article.url, reason=reason)
            return article
        self.stats.fetched += 1
        log.debug("fulltext.ok", feed_url=article.feed_url, url=article.url, chars=len(text))
        return replace(article, body=text, fulltext_field="body")
