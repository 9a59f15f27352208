"""The feed list: the config file's ``[[feeds.feed]]`` tables and the OPML file it names."""

from __future__ import annotations

from monitor.errors import ConfigError
from monitor.feeds.opml import feeds_from_opml
from monitor.model import Feed, SourceLocation
from monitor.settings import Settings

__all__ = ["configured_and_opml_feeds", "load_feeds"]


def configured_and_opml_feeds(settings: Settings) -> list[Feed]:
    """Every feed the config file lists, then every feed of its OPML file, as written."""
    feeds = settings.configured_feeds()
    if settings.feeds.opml:
        feeds.extend(feeds_from_opml(settings.resolve(settings.feeds.opml), settings.feeds.interval))
    return feeds


def load_feeds(settings: Settings) -> list[Feed]:
    """Every enabled feed from the config file and the OPML file it names, deduplicated by url."""
    unique: dict[str, Feed] = {}
    for feed in configured_and_opml_feeds(settings):
        unique.setdefault(feed.url, feed)
    enabled = [f for f in unique.values() if f.enabled]
    if not enabled:
        raise ConfigError(
            "no feeds to poll",
            location=SourceLocation(str(settings.source or "<defaults>")),
            hint="list feeds as [[feeds.feed]] tables or name an OPML file in [feeds] opml",
        )
    return enabled
