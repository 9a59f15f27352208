"""The poller's article stage, in place of :class:`monitor.matching.Matching`
(``run --role poller``, docs/scaling.md):

within-feed dedupe (against the feed's seen map, restored from the feed-state topic) ->
language detection (of the new and changed articles only) -> full text (for a ``fulltext``
feed) -> each new or changed article published to the articles topic, and every one
acknowledged before :meth:`PollerAdmission.admit` returns.

So the pipeline advances the feed's state (validators, body hash) only after Kafka has
the articles: when the broker is away, ``admit`` raises :class:`~monitor.errors.PublishError`,
the state stays as it was, and the next poll fetches the body again with the old
validators. An article record Kafka refuses for good (too large) goes to the
dead-letter topic with the reason, and the poll goes on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime

from monitor.cluster.feed_state import content_digest, seen_after
from monitor.dedupe import Admission, Verdict
from monitor.delivery.dead_letters import dead_letter
from monitor.delivery.records import article_record
from monitor.delivery.sender import Publisher
from monitor.enrich.fulltext import FulltextEnricher
from monitor.errors import RecordRejected
from monitor.log import get_logger
from monitor.matching import CpuPool, unique_articles, with_languages
from monitor.model import Article, Feed, Record

__all__ = ["PollerAdmission"]

log = get_logger("poller")


class PollerAdmission:
    """Publishes a feed's new and changed articles (see the module docstring).

    ``seen`` maps a feed URL to its seen map (article id -> content digest); it is shared
    with whoever writes the feed-state records, and replaced per feed only once the
    poll's articles were acknowledged.
    """

    def __init__(
        self,
        *,
        publisher: Publisher,
        seen: dict[str, dict[str, str]],
        articles_topic: str,
        dead_letter_topic: str,
        fulltext: FulltextEnricher | None = None,
        cpu: CpuPool | None = None,
    ) -> None:
        """``cpu``: where the languages of many new articles are detected (the parser pool)."""
        self._publisher = publisher
        self._cpu = cpu
        self.seen = seen
        self._articles_topic = articles_topic
        self._dead_letter_topic = dead_letter_topic
        self._fulltext = fulltext
        #: Articles acknowledged on the articles topic, and those dead-lettered instead.
        self.published = 0
        self.dead_lettered = 0
        #: Why the last publish failed (the broker is away), until one succeeds.
        self.last_error: str | None = None

    async def admit(
        self, articles: list[Article], feed: Feed | None = None, signatures: dict[int, bytes | None] | None = None
    ) -> Admission:
        """Publish what is new or changed in this feed's body; ``signatures`` are not used
        (stories are the matcher's)."""
        if feed is None:
            raise ValueError("the poller's admission needs the feed")
        unique = unique_articles(articles)
        known = self.seen.get(feed.url, {})
        verdicts: list[Verdict] = []
        todo: list[Article] = []
        for article in unique:
            digest = known.get(article.id)
            if digest == content_digest(article):
                verdicts.append(Verdict.DUPLICATE)
                continue
            verdicts.append(Verdict.NEW if digest is None else Verdict.UPDATED)
            todo.append(article)
        # Only what is published is worth a detection (the parse left it to us).
        todo = await with_languages(todo, self._cpu, feed.url)
        if todo and feed.fulltext and self._fulltext is not None:
            todo = await self._fulltext.enrich_all(todo)
        observed_at = datetime.now(UTC)
        records = [article_record(article, self._articles_topic, observed_at) for article in todo]
        await self._publish(records)
        # The feed's own text hashes (before full text): an unchanged entry is not fetched again.
        self.seen[feed.url] = seen_after(known, unique)
        # Entries repeated inside one body count as duplicates too.
        verdicts.extend([Verdict.DUPLICATE] * (len(articles) - len(unique)))
        return Admission(verdicts=verdicts, records=records)

    async def _publish(self, records: Sequence[Record]) -> None:
        """Every record acknowledged (or dead-lettered); the first outage raised."""
        results = await asyncio.gather(*(self._publisher.publish(record) for record in records), return_exceptions=True)
        outage: BaseException | None = None
        for record, result in zip(records, results):
            if isinstance(result, RecordRejected):
                await self._dead_letter(record, str(result))
                self.dead_lettered += 1
            elif isinstance(result, BaseException):
                outage = outage or result
            else:
                self.published += 1
        if outage is not None:
            self.last_error = str(outage)
            raise outage
        self.last_error = None

    async def _dead_letter(self, record: Record, reason: str) -> None:
        log.error("poller.article.dead_lettered", article_id=record.article_id, topic=record.topic, reason=reason)
        try:
            await self._publisher.publish(dead_letter(record, reason, self._dead_letter_topic))
        except RecordRejected as exc:
            log.critical(
                "poller.article.dead_letter.rejected",
                article_id=record.article_id,
                dead_letter_topic=self._dead_letter_topic,
                error=str(exc),
                hint="check the dead-letter topic's max.message.bytes",
            )
