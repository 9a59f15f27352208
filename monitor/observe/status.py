"""``news-monitor status``: the feed-health table, printed from a health tracker.

The command reads the tracker from the state store (:func:`monitor.app.feed_tracker`):
it works while the daemon runs (the store is SQLite in WAL mode, so readers never wait
for the writer) and after it stopped. Health is assessed exactly as the daemon does
(:mod:`monitor.feeds.health`), from the stored counters, cadence and times, so a feed
that went quiet since the daemon last looked shows as stale here too.

On a terminal the table is drawn with ``rich``; otherwise it is plain aligned text, one
feed per line, for ``grep`` and ``awk``; ``--json`` gives one JSON object per feed.

With WebSub (``[websub]`` on, or subscriptions stored) each feed also shows its push
state (none, pending, active, denied, failing, unsubscribing), until when an active
subscription runs and its last push: columns ``push``, ``push until`` and ``last push``
(plain: after the feed url, before the last error), keys ``push``, ``push_until`` and
``last_push`` in JSON.

It shows the first :data:`~monitor.feeds.health.PAGE_ROWS` feeds (``--limit N``; ``--all``
for every one) in the status page's order: worst health first, then the most recent new
item. A summary line comes first: the counts by health and how many feeds are shown, on
stderr for the plain and JSON formats (stdout stays the table), above the rich table.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any, TextIO

import orjson

from monitor.feeds.health import (
    HEALTH_STATES,
    OK,
    PAGE_ROWS,
    FeedHealthTracker,
    FeedPage,
    FeedQuery,
    FeedRow,
)
from monitor.redact import mask_url, scrub
from monitor.timefmt import relative, utc_iso

__all__ = ["render_json", "render_plain", "render_rich", "status", "summary_line"]

COLUMNS = ("feed", "health", "last success", "last error", "items", "polls", "next poll")
#: The plain format's column order: the spaceless columns first, the last error last.
_PLAIN_ORDER = ("health", "last success", "items", "polls", "next poll", "owner", "feed", "push", "push until", "last push", "last error")
PUSH_COLUMNS = ("push", "push until", "last push")

#: Feed url -> the instance that polls it (``status --cluster``), or None for one process.
Owners = Mapping[str, str] | None
#: Feed url -> its push state (:func:`monitor.websub.registry.describe`), or None without WebSub.
Push = Mapping[str, Mapping[str, Any]] | None
_NO_PUSH: Mapping[str, Any] = {"state": "none", "until": None, "last_push": None}


def _ago(moment: float | None, now: float) -> str:
    return "never" if moment is None else relative(moment, now)


def _iso(moment: float | None, _now: float) -> str:
    return "never" if moment is None else utc_iso(moment)


def _cells(
    row: FeedRow, now: float, when: Callable[[float | None, float], str] = _ago, owners: Owners = None, push: Push = None
) -> tuple[str, ...]:
    error = ""
    if row.last_error:
        error = f"{when(row.last_error_at, now)}: {' '.join(_printable(scrub(row.last_error), ' ').split())[:200]}"
    cells: tuple[str, ...] = (
        # A feed url may carry credentials (user:pw@, ?token=): shown masked.
        _printable(mask_url(row.url)),
        row.health,
        when(row.last_success, now),
        error or "-",
        str(row.items_seen),
        str(row.polls),
        when(row.next_poll, now) if row.next_poll is not None else "-",
    )
    if owners is not None:
        cells = (cells[0], _owner(row, owners), *cells[1:])
    if push is not None:
        shown = push.get(row.url, _NO_PUSH)
        cells += (str(shown["state"]), when(shown["until"], now) if shown["until"] else "-", when(shown["last_push"], now))
    return cells


def _owner(row: FeedRow, owners: Mapping[str, str]) -> str:
    return " ".join(_printable(owners.get(row.url, "")).split()) or "-"


def _printable(text: str, instead: str = "?") -> str:
    """``text`` without control characters: a terminal escape in a record of the cluster's
    topics (any producer can write them) must not reach the operator's terminal."""
    return text if text.isprintable() else "".join(c if c.isprintable() or c == " " else instead for c in text)


def _columns(owners: Owners, push: Push = None) -> tuple[str, ...]:
    columns = COLUMNS if owners is None else (COLUMNS[0], "owner", *COLUMNS[1:])
    return columns if push is None else columns + PUSH_COLUMNS


def render_plain(rows: list[FeedRow], out: TextIO, *, now: float, owners: Owners = None, push: Push = None) -> None:
    """Aligned columns, one feed per line, times in UTC ISO 8601, every column but the last
    (the last error, the longest) free of spaces, so ``awk`` can split them (the owner,
    with ``owners``, comes before the feed)."""
    columns = _columns(owners, push)
    order = tuple(columns.index(name) for name in _PLAIN_ORDER if name in columns)
    table = [tuple(columns[i].upper().replace(" ", "_") for i in order)]
    table += [tuple(cells[i] for i in order) for cells in (_cells(row, now, _iso, owners, push) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(order) - 1)]
    for line in table:
        out.write("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(line[:-1])) + "  " + line[-1] + "\n")


def render_rich(
    rows: list[FeedRow], out: TextIO, *, now: float, summary: str = "", owners: Owners = None, push: Push = None
) -> None:
    """A coloured table for a terminal, under the ``summary`` line."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    colours = {"ok": "green", "stale": "yellow", "failing": "red", "disabled": "red"}
    table = Table(title="news-monitor feeds", header_style="bold")
    columns = _columns(owners, push)
    for name in columns:
        table.add_column(name, overflow="fold", justify="right" if name in {"items", "polls"} else "left")
    health = columns.index("health")
    for row in rows:
        cells = [Text(cell) for cell in _cells(row, now, owners=owners, push=push)]
        cells[health].stylize(colours.get(row.health, ""))
        if row.reason:
            cells[health].append(f"\n{scrub(row.reason)}", style="dim")
        table.add_row(*cells)
    console = Console(file=out)
    if summary:
        console.print(summary, markup=False, highlight=False)
    console.print(table)


def render_json(rows: list[FeedRow], out: TextIO, owners: Owners = None, push: Push = None) -> None:
    """One JSON object per feed (url and last error masked, as everywhere); with
    ``owners``, its ``owner`` too (null when no poller has written its state); with
    ``push``, its ``push``, ``push_until`` and ``last_push``."""
    for row in rows:
        fields = asdict(row)
        if owners is not None:
            fields["owner"] = owners.get(row.url) or None
        if push is not None:
            shown = push.get(row.url, _NO_PUSH)
            fields.update(push=shown["state"], push_until=shown["until"], last_push=shown["last_push"])
        fields["url"] = mask_url(row.url)
        fields["reason"] = scrub(row.reason)
        if row.last_error:
            fields["last_error"] = scrub(row.last_error)
        out.write(orjson.dumps(fields).decode() + "\n")


def summary_line(counts: dict[str, int], page: FeedPage) -> str:
    """``50,000 feeds: 48,450 ok, 1,000 failing; showing 200 ...``: the counts by health,
    and how many feeds the table shows when it does not show them all."""
    by_health = ", ".join(f"{counts[h]:,} {h}" for h in HEALTH_STATES if counts.get(h))
    line = f"{page.total:,} feed{'s' if page.total != 1 else ''}" + (f": {by_health}" if by_health else "")
    if len(page.rows) < page.total:
        line += f"; showing the first {len(page.rows):,} (not ok first, then the most recent new item): --all or --limit N for more"
    return line


def status(
    tracker: FeedHealthTracker,
    out: TextIO,
    *,
    now: float,
    fmt: str = "auto",
    limit: int | None = PAGE_ROWS,
    err: TextIO | None = None,
    owners: Owners = None,
    push: Push = None,
) -> int:
    """Print the summary and the first ``limit`` feeds (None: every feed), worst first; 0 when
    every feed is ok, 1 when any is not, shown or not (usable as a check). ``owners``
    (feed url -> the poller that polls it) adds an owner column (``status --cluster``),
    ``push`` (feed url -> its WebSub push state) the push columns."""
    page = tracker.page(FeedQuery(limit=limit))
    counts = tracker.counts()
    summary = summary_line(counts, page)
    if fmt == "table" or (fmt == "auto" and out.isatty()):
        render_rich(page.rows, out, now=now, summary=summary, owners=owners, push=push)
    else:
        (err or sys.stderr).write(summary + "\n")
        if fmt == "json":
            render_json(page.rows, out, owners, push)
        else:
            render_plain(page.rows, out, now=now, owners=owners, push=push)
    return 0 if counts[OK] == page.total else 1
