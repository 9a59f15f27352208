"""``news-monitor backtest``: a candidate rule set over the articles topic, publishing
nothing (docs/scaling.md, "Backtest"). Which topic (:func:`articles_topic`), the reading
(:class:`monitor.adapters.replay.SpanReader`), the matching
(:class:`monitor.cluster.backtest.Backtest`); the command line prints the result.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from typing import TextIO

from monitor.adapters.replay import SpanReader
from monitor.cluster.backtest import Backtest, BacktestResult, RuleMatcher
from monitor.errors import ConfigError
from monitor.model import SourceLocation
from monitor.settings import Settings

__all__ = ["articles_topic", "run_backtest"]

_CLUSTER_ENV = "NEWS_MONITOR_CLUSTER_"


def articles_topic(settings: Settings, environ: Mapping[str, str]) -> str:
    """The topic to read: ``[cluster] articles_topic`` when the config file has a
    ``[cluster]`` table or a ``NEWS_MONITOR_CLUSTER_*`` variable is set (a cluster is
    configured), else ``[kafka] articles_topic``; :class:`ConfigError` when neither is."""
    if _cluster_configured(settings, environ):
        return settings.cluster.articles_topic
    if settings.kafka.articles_topic:
        return settings.kafka.articles_topic
    raise ConfigError(
        "backtest: no articles topic: no [cluster] section and [kafka] articles_topic is empty",
        location=SourceLocation(str(settings.source or "<defaults>")),
        hint="set [kafka] articles_topic (a single process publishes its articles there) or add a [cluster] section, "
        "or pass --topic",
    )


def _cluster_configured(settings: Settings, environ: Mapping[str, str]) -> bool:
    if any(name.startswith(_CLUSTER_ENV) for name in environ):
        return True
    if settings.source is None:
        return False
    # load_settings already read and checked this file; only the table's presence is asked.
    with settings.source.open("rb") as handle:
        return "cluster" in tomllib.load(handle)


async def run_backtest(
    settings: Settings,
    topic: str,
    ruleset: RuleMatcher,
    *,
    since: float | None,
    until: float | None,
    errors: TextIO,
) -> tuple[BacktestResult, dict[int, str]]:
    """Read ``topic`` from ``since`` to its end and match what lies in ``[since, until]``;
    each record that is not an article gets a line on ``errors``. The result, and how each
    partition's start was found."""
    reader = SpanReader(settings.kafka, settings.kafka.bootstrap_servers, topic)
    backtest = Backtest(ruleset, since=since, until=until)
    since_ms = None if since is None else int(since * 1000)
    async for record in reader.records(since_ms):
        problem = backtest.add(record.value, record.timestamp / 1000, record.key)
        if problem is not None:
            errors.write(f"news-monitor: skipped {topic} partition {record.partition} offset {record.offset}: {problem}\n")
    return backtest.result(), reader.starts
