"""The feed-health table of ``news-monitor status``, read from the state store.

Kept apart from the daemon's components so the command starts in a fraction of the time
(it imports no Kafka, HTTP or parsing library).
"""

from __future__ import annotations

import time

from monitor.adapters.store import Store
from monitor.errors import MonitorError
from monitor.feeds.health import FeedHealthTracker, HealthPolicy
from monitor.feeds.sources import configured_and_opml_feeds
from monitor.model import Feed, SourceLocation
from monitor.settings import Settings
from monitor.websub.registry import describe

__all__ = ["feed_tracker", "health_policy", "push_states"]


def health_policy(settings: Settings) -> HealthPolicy:
    """The ``[health]`` thresholds."""
    health = settings.health
    return HealthPolicy(health.failing_after, health.stale_factor, health.stale_min_age)


def feed_tracker(settings: Settings, *, now: float | None = None) -> FeedHealthTracker:
    """Every configured feed (and any other feed the store knows), its health assessed at
    ``now`` exactly as the daemon does, for ``news-monitor status``."""
    path = settings.state_dir / Store.FILENAME
    if not path.exists():
        raise MonitorError(
            f"no state store at {path}: the monitor has not run with this configuration yet",
            location=SourceLocation(str(settings.source or "<defaults>")),
            hint="run 'news-monitor run --once', or pass the daemon's --config",
        )
    # A config without feeds is fine here: the store still knows them.
    feeds = list({feed.url: feed for feed in reversed(configured_and_opml_feeds(settings)) if feed.enabled}.values())[::-1]
    store = Store(settings.state_dir)
    try:
        states = store.all_feed_states()
    finally:
        store.close()
    known = {feed.url for feed in feeds}
    feeds += [Feed(url=state.url) for state in states if state.url not in known]
    now = time.time() if now is None else now
    tracker = FeedHealthTracker(feeds, health_policy(settings), started=now)
    tracker.load_all(states)
    tracker.sweep(now)
    return tracker


def push_states(settings: Settings) -> dict[str, dict[str, object]] | None:
    """Each feed's WebSub push state from the store (:func:`monitor.websub.registry.describe`),
    when ``[websub]`` is on or subscriptions are stored; None otherwise (no push columns)."""
    path = settings.state_dir / Store.FILENAME
    if not path.exists():
        return None
    store = Store(settings.state_dir)
    try:
        subscriptions = store.subscriptions()
    finally:
        store.close()
    if not subscriptions and not settings.websub.enabled:
        return None
    return {subscription.feed_url: describe(subscription) for subscription in subscriptions}
