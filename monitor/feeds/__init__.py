"""Feeds: which feeds to poll, when, and how each one is doing.

:mod:`monitor.feeds.sources`   the feed list: the config file's tables and its OPML file
:mod:`monitor.feeds.opml`      feed lists from OPML
:mod:`monitor.feeds.schedule`  when each feed is due (adaptive intervals, back-off, hints)
:mod:`monitor.feeds.state`     per-feed state (validators, counters), cached and written back in batches
:mod:`monitor.feeds.health`    feed health: failing, stale, the events that say so, pages of feeds
"""
