"""``news-monitor status``: the feed-health table, read from the state store.

It works while the daemon runs (the store is SQLite in WAL mode, so readers never wait
for the writer) and after it stopped. Health is assessed exactly as the daemon does
(:mod:`monitor.health`), from the stored counters, cadence and times, so a feed that went
quiet since the daemon last looked shows as stale here too.

On a terminal the table is drawn with ``rich``; otherwise it is plain aligned text, one
feed per line, for ``grep`` and ``awk``; ``--json`` gives one JSON object per feed.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Callable, TextIO

import orjson

from monitor.errors import MonitorError
from monitor.health import OK, FeedHealthTracker, FeedRow, HealthPolicy, format_duration
from monitor.model import Feed, SourceLocation
from monitor.settings import Settings

__all__ = ["feed_rows", "render_json", "render_plain", "render_rich", "status"]

COLUMNS = ("feed", "health", "last success", "last error", "items", "polls", "next poll")


def feed_rows(settings: Settings, *, now: float | None = None) -> list[FeedRow]:
    """Every configured feed (and any other feed the store knows) with its health, worst first."""
    from monitor.adapters.store import Store
    from monitor.opml import feeds_from_opml

    path = settings.state_dir / Store.FILENAME
    if not path.exists():
        raise MonitorError(
            f"no state store at {path}: the monitor has not run with this configuration yet",
            location=SourceLocation(str(settings.source or "<defaults>")),
            hint="run 'news-monitor run --once', or pass the daemon's --config",
        )
    # The daemon's feed list (not monitor.worker.load_feeds: importing the worker costs
    # seconds, and a config without feeds is fine here: the store still knows them).
    feeds = settings.configured_feeds()
    if settings.feeds.opml:
        feeds += feeds_from_opml(settings.resolve(settings.feeds.opml), settings.feeds.interval)
    feeds = list({feed.url: feed for feed in reversed(feeds) if feed.enabled}.values())[::-1]
    store = Store(settings.state_dir)
    try:
        states = store.all_feed_states()
    finally:
        store.close()
    known = {feed.url for feed in feeds}
    feeds += [Feed(url=state.url) for state in states if state.url not in known]
    now = time.time() if now is None else now
    health = settings.health
    tracker = FeedHealthTracker(
        feeds, HealthPolicy(health.failing_after, health.stale_factor, health.stale_min_age), started=now
    )
    for state in states:
        tracker.load(state)
    tracker.sweep(now)
    return tracker.rows()


def _ago(moment: float | None, now: float) -> str:
    if moment is None:
        return "never"
    delta = moment - now
    return f"in {format_duration(delta)}" if delta > 0.5 else f"{format_duration(-delta)} ago"


def _iso(moment: float | None, _now: float) -> str:
    if moment is None:
        return "never"
    return datetime.fromtimestamp(moment, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _cells(row: FeedRow, now: float, when: Callable[[float | None, float], str] = _ago) -> tuple[str, ...]:
    error = ""
    if row.last_error:
        error = f"{when(row.last_error_at, now)}: {' '.join(row.last_error.split())[:200]}"
    return (
        row.url,
        row.health,
        when(row.last_success, now),
        error or "-",
        str(row.items_seen),
        str(row.polls),
        when(row.next_poll, now) if row.next_poll is not None else "-",
    )


def render_plain(rows: list[FeedRow], out: TextIO, *, now: float) -> None:
    """Aligned columns, one feed per line, times in UTC ISO 8601, every column but the last
    (the last error, the longest) free of spaces, so ``awk`` can split them."""
    order = (1, 2, 4, 5, 6, 0, 3)
    table = [tuple(COLUMNS[i].upper().replace(" ", "_") for i in order)]
    table += [tuple(cells[i] for i in order) for cells in (_cells(row, now, _iso) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(order) - 1)]
    for line in table:
        out.write("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line[:-1])) + "  " + line[-1] + "\n")


def render_rich(rows: list[FeedRow], out: TextIO, *, now: float) -> None:
    """A coloured table for a terminal."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    colours = {"ok": "green", "stale": "yellow", "failing": "red", "disabled": "red"}
    table = Table(title="news-monitor feeds", header_style="bold")
    for name in COLUMNS:
        table.add_column(name, overflow="fold", justify="right" if name in {"items", "polls"} else "left")
    for row in rows:
        cells = [Text(cell) for cell in _cells(row, now)]
        cells[1].stylize(colours.get(row.health, ""))
        if row.reason:
            cells[1].append(f"\n{row.reason}", style="dim")
        table.add_row(*cells)
    Console(file=out).print(table)


def render_json(rows: list[FeedRow], out: TextIO) -> None:
    """One JSON object per feed."""
    for row in rows:
        out.write(orjson.dumps(asdict(row)).decode() + "\n")


def status(settings: Settings, out: TextIO, *, fmt: str = "auto") -> int:
    """Print the feed-health table; 0 when every feed is ok, 1 when any is not (usable as a check)."""
    now = time.time()
    rows = feed_rows(settings, now=now)
    if fmt == "json":
        render_json(rows, out)
    elif fmt == "table" or (fmt == "auto" and out.isatty()):
        render_rich(rows, out, now=now)
    else:
        render_plain(rows, out, now=now)
    return 0 if all(row.health == OK for row in rows) else 1
