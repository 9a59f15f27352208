"""The daemon's periodic tasks, each run by one helper, :func:`every`:

* write the feed-state cache back to the store (``[state] flush_interval``);
* forget old article ids and story members (``[state] retention_check``);
* check that the broker answers and re-assess feed health (``[health] check_interval``):
  a feed that went silent grows stale between its polls.

A round that fails is logged and tried again at the next one: a full disk or a broker
away must not end the task.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from monitor.dedupe.stories import StoryIndex
from monitor.errors import StoreError, error_text
from monitor.feeds.state import FeedStates
from monitor.lifecycle import Shutdown
from monitor.log import get_logger

__all__ = [
    "RetentionStore",
    "every",
    "flush_feed_states",
    "forget_old",
    "health_check_failed",
    "state_upkeep_failed",
    "watch_broker",
]

log = get_logger("worker")


async def every(interval: float, step: Callable[[], Awaitable[Any]], shutdown: Shutdown, failed: Callable[[Exception], None]) -> None:
    """Run ``step`` now and then every ``interval`` seconds until a stop; a round that
    raises is reported to ``failed`` and the next round comes as usual."""
    while not shutdown.asked:
        try:
            await step()
        except Exception as exc:  # noqa: BLE001 - one failed round must not end the task
            failed(exc)
        await shutdown.wait(interval)


def state_upkeep_failed(exc: Exception) -> None:
    """A failed write-back or retention round (disk full, locked): retried next round."""
    log.error("state.upkeep.failed", error=error_text(exc), hint="check the state dir's disk")


def health_check_failed(exc: Exception) -> None:
    """A failed broker check or health sweep: retried next round."""
    log.error("monitor.health_check.failed", error=error_text(exc))


async def flush_feed_states(feed_states: FeedStates) -> None:
    """The last write-back of the feed-state cache, at shutdown: a failure is logged (only
    validators and counters are lost: the next start re-fetches those feeds)."""
    try:
        written = await feed_states.flush()
    except StoreError as exc:
        log.error("feed.state.unsaved", feeds=feed_states.dirty, error=str(exc))
        return
    log.debug("feed.state.flushed", feeds=written)


class RetentionStore(Protocol):
    """The part of the state store retention needs (``monitor.adapters.store.AsyncStore``)."""

    async def forget_articles_before(self, cutoff: float) -> int: ...

    async def forget_stories_before(self, cutoff: float) -> int: ...


async def forget_old(store: RetentionStore, stories: StoryIndex | None, retention_days: float) -> None:
    """Forget article ids not seen for ``retention_days``, and story members past the window."""
    now = time.time()
    articles = await store.forget_articles_before(now - retention_days * 86400.0)
    members = 0
    if stories is not None:
        stories.expire(now)
        members = await store.forget_stories_before(now - stories.window)
    log.info("state.retention.pruned", articles=articles, story_members=members, retention_days=retention_days)


#: A broker check: (reachable, the error when not).
Probe = Callable[[], Awaitable[tuple[bool, "str | None"]]]


async def watch_broker(probe: Probe, broker_checked: Callable[[bool, str | None], None], sweep: Callable[[], Awaitable[Any]]) -> None:
    """One health round: ask the broker (readiness), then re-assess every feed's health."""
    reachable, error = await probe()
    broker_checked(reachable, error)
    await sweep()
