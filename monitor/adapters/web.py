"""The daemon's own HTTP endpoint (aiohttp): metrics, probes and a status page for people.

``/metrics``      Prometheus text format
``/healthz``      200 while the process is alive (liveness)
``/readyz``       200 when rules are loaded and the broker is reachable, else 503 with the reasons
``/status.json``  the status page's data, for scripts
``/``             the status page: feeds, rules, latest alerts; refreshes itself

Both show one page of feeds (:func:`parse_feed_query`: ``health``, ``q``, ``order``,
``offset``, ``limit``; at most :data:`~monitor.feeds.health.MAX_PAGE_ROWS`), problems first,
with the counts by health and the number of feeds that match; an invalid parameter is a
400 naming it. A page costs O(page), not O(feeds), so a large feed list does not stall the loop.
The rules with matches in the last 48 hours get a chart each (:mod:`monitor.adapters.charts`),
:data:`~monitor.observe.snapshot.CHARTS_PER_PAGE` to a page (``charts``: the offset).

The page is server-rendered HTML without scripts. Everything shown comes from feeds
and operators, so all of it is escaped, and only http(s) links are made clickable.
"""

from __future__ import annotations

import dataclasses
import errno
from html import escape
from typing import Any
from urllib.parse import urlencode, urlsplit

import orjson
from aiohttp import web
from multidict import MultiMapping
from prometheus_client import CONTENT_TYPE_LATEST

from monitor import __version__
from monitor.adapters.charts import render_chart
from monitor.adapters.processes import describe_holders
from monitor.errors import ConfigError, MonitorError
from monitor.feeds.health import (
    DISABLED,
    FAILING,
    FEED_ORDERS,
    HEALTH_STATES,
    MAX_PAGE_ROWS,
    OK,
    PAGE_ROWS,
    STALE,
    FeedQuery,
)
from monitor.log import get_logger, redact
from monitor.model import SourceLocation
from monitor.observe.observer import Observer
from monitor.observe.snapshot import CHARTS_PER_PAGE, StatusSnapshot
from monitor.timefmt import format_duration, relative, utc_iso

__all__ = ["WebServer", "parse_feed_query", "parse_listen", "render_status_page", "serve"]

log = get_logger("web")

#: No scripts, no remote anything: the page is static HTML with inline styles.
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def parse_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:8765"`` -> ``("127.0.0.1", 8765)``; ``"[::1]:8765"`` -> ``("::1", 8765)``."""
    host, _, port = listen.strip().rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"[http] listen = {listen!r} is not host:port", hint='e.g. "127.0.0.1:8765"')
    return host.strip("[]"), int(port)


#: The longest ``q`` a status request may carry.
MAX_QUERY_TEXT = 200


def parse_feed_query(params: MultiMapping[str]) -> FeedQuery:
    """The page of feeds a status request asks for; :class:`MonitorError` naming the first
    invalid parameter. Missing and empty parameters take their defaults; others are ignored.

    ``health``  comma-separated healths (``ok``, ``stale``, ``failing``, ``disabled``), may repeat
    ``q``       case-insensitive substring of the url (as shown) or the name
    ``order``   ``health`` (problems first, then the most recent new item) or ``url``
    ``offset``  feeds to skip (0)
    ``limit``   feeds on the page (:data:`PAGE_ROWS`, at most :data:`MAX_PAGE_ROWS`)
    """
    healths = {part.strip().lower() for value in params.getall("health", []) for part in value.split(",") if part.strip()}
    unknown = sorted(healths.difference(HEALTH_STATES))
    if unknown:
        raise MonitorError(f"health={unknown[0]!r} is not a health", hint=f"one or more of {', '.join(HEALTH_STATES)}, comma-separated")
    text = params.get("q", "").strip()
    if len(text) > MAX_QUERY_TEXT:
        raise MonitorError(f"q is {len(text)} characters long", hint=f"at most {MAX_QUERY_TEXT}")
    order = params.get("order", "").strip().lower() or FEED_ORDERS[0]
    if order not in FEED_ORDERS:
        raise MonitorError(f"order={order!r} is not an order", hint=f"one of {', '.join(FEED_ORDERS)}")
    return FeedQuery(
        health=tuple(h for h in HEALTH_STATES if h in healths),
        text=text,
        order=order,
        offset=_whole(params, "offset", 0, 0, None),
        limit=_whole(params, "limit", PAGE_ROWS, 1, MAX_PAGE_ROWS),
    )


def _whole(params: MultiMapping[str], name: str, default: int, low: int, high: int | None) -> int:
    raw = params.get(name, "").strip()
    if not raw:
        return default
    value = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 12 else None
    if value is None or value < low or (high is not None and value > high):
        span = f"from {low} to {high}" if high is not None else f"{low} or more"
        raise MonitorError(f"{name}={raw[:40]!r} is not a whole number {span}", hint=f"e.g. {name}={default}")
    return value


class WebServer:
    """Serves the observer's metrics, probes and status page on ``listen``."""

    def __init__(self, observer: Observer, listen: str, *, refresh: float = 10.0) -> None:
        self.observer = observer
        self.listen = listen
        self.refresh = refresh
        self._runner: web.AppRunner | None = None
        #: The address actually bound (the port is chosen by the OS when ``listen`` says 0).
        self.address: tuple[str, int] | None = None

    @property
    def url(self) -> str:
        """Base url of the endpoint, e.g. ``http://127.0.0.1:8765``."""
        if self.address is None:
            raise RuntimeError("the web server is not started")
        host, port = self.address
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{port}"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._status_page)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/status.json", self._status_json)
        return app

    async def start(self) -> WebServer:
        """Bind and serve; :class:`ConfigError` naming the address when it cannot be bound."""
        self._runner, self.address = await serve(
            self.app(),
            self.listen,
            setting="[http] listen",
            hint="choose a free port with [http] listen (NEWS_MONITOR_HTTP_LISTEN), or set [http] enabled = false",
        )
        log.info("http.started", url=self.url)
        return self

    async def stop(self) -> None:
        """Stop serving; safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> WebServer:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- handlers ------------------------------------------------------------------------

    async def _metrics(self, _request: web.Request) -> web.Response:
        body = self.observer.metrics.render()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _readyz(self, _request: web.Request) -> web.Response:
        ready, problems = self.observer.readiness.check()
        return web.json_response({"ready": ready, "problems": problems}, status=200 if ready else 503)

    async def _status_json(self, request: web.Request) -> web.Response:
        try:
            query = parse_feed_query(request.query)
            charts = _whole(request.query, "charts", 0, 0, None)
        except MonitorError as exc:
            body = orjson.dumps({"error": exc.message, "hint": exc.hint})
            return web.Response(status=400, body=body, content_type="application/json", headers=_SECURITY_HEADERS)
        data = orjson.loads(orjson.dumps(self.observer.status.snapshot(query, charts), default=_jsonable))
        data["feeds_query"] = _query_params(query, defaults=True)
        body = orjson.dumps(redact(data))
        return web.Response(body=body, content_type="application/json", headers=_SECURITY_HEADERS)

    async def _status_page(self, request: web.Request) -> web.Response:
        try:
            query = parse_feed_query(request.query)
            charts = _whole(request.query, "charts", 0, 0, None)
        except MonitorError as exc:
            html = _error_page(str(exc))
            return web.Response(status=400, text=html, content_type="text/html", charset="utf-8", headers=_SECURITY_HEADERS)
        html = render_status_page(self.observer.status.snapshot(query, charts), refresh=self.refresh)
        return web.Response(text=html, content_type="text/html", charset="utf-8", headers=_SECURITY_HEADERS)


def _query_params(query: FeedQuery, *, defaults: bool) -> dict[str, Any]:
    """``query`` as request parameters: every one (``defaults``), or only those that differ
    from the defaults (for links)."""
    params: dict[str, Any] = {
        "health": ",".join(query.health),
        "q": query.text,
        "order": query.order,
        "offset": query.offset,
        "limit": query.limit,
    }
    if defaults:
        return params | {"health": list(query.health)}
    blank = {"health": "", "q": "", "order": FEED_ORDERS[0], "offset": 0, "limit": PAGE_ROWS}
    return {name: value for name, value in params.items() if value != blank[name]}


def _href(query: FeedQuery, **changes: Any) -> str:
    """A link to the page of ``query`` with ``changes`` to its fields (``offset=200``)."""
    params = _query_params(dataclasses.replace(query, **changes), defaults=False)
    return "?" + urlencode(params) if params else "./"


def _jsonable(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return {name: getattr(value, name) for name in value.__dataclass_fields__}
    raise TypeError(type(value).__name__)


# -- the status page ----------------------------------------------------------------------

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;background:#fff}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.6em 0 .4em}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #ddd;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.h-ok{color:#176f2c}.h-stale{color:#9a6700}.h-failing,.h-disabled{color:#b42318;font-weight:600}
.badge{display:inline-block;padding:.1em .5em;border-radius:.8em;background:#eee;margin-right:.4em}
.bad{background:#fde2e1}.good{background:#dcf5e3}.muted{color:#777}.err{color:#b42318;max-width:40em;overflow-wrap:anywhere}
td.url{max-width:32em;overflow-wrap:anywhere}
figure.rule-chart{display:inline-block;margin:.3em 1em .6em 0}figure.rule-chart figcaption{font-weight:600}
"""


def _t(text: object) -> str:
    return escape(str(text), quote=True)


def _iso(moment: float | None) -> str:
    return "" if moment is None else utc_iso(moment)


def _when(moment: float | None, now: float) -> str:
    """A <time> element: relative text, absolute UTC in the title."""
    if moment is None:
        return '<span class="muted">never</span>'
    return f'<time datetime="{_iso(moment)}" title="{_iso(moment)}">{_t(relative(moment, now))}</time>'


def _link(url: str | None, label: str) -> str:
    """A link only for http(s) urls: a feed could carry ``javascript:`` or ``data:`` links."""
    if url and urlsplit(url).scheme.lower() in {"http", "https"}:
        return f'<a href="{_t(url)}" rel="noopener noreferrer nofollow" target="_blank">{_t(label)}</a>'
    return _t(label)


def render_status_page(snapshot: StatusSnapshot, *, refresh: float = 10.0) -> str:
    """The status page as one HTML document (every value escaped)."""
    s = snapshot
    parts: list[str] = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width,initial-scale=1">',
    ]
    if refresh > 0:
        parts.append(f'<meta http-equiv="refresh" content="{refresh:g}">')
    parts += [f"<title>news-monitor: {_t(_summary_word(s))}</title>", f"<style>{_STYLE}</style></head><body>"]
    parts.append(f"<h1>news-monitor {_t(__version__)}</h1>")
    parts += _summary(s)
    parts += _roles_table(s)
    parts += _feeds_header(s)
    parts.append(_pager(s, ids=True))
    parts += _feeds_table(s)
    parts.append(_pager(s, ids=False))
    parts += _push_table(s)
    parts += _rules_table(s)
    parts += _charts_section(s)
    parts += _alerts_table(s)
    refresh_note = f"refreshes every {refresh:g}s; " if refresh > 0 else ""
    json_href = "status.json" + _href(s.feeds_query).removeprefix("./")
    parts.append(
        f'<p class="muted">{refresh_note}machine-readable: <a href="{_t(json_href)}">status.json</a>, '
        '<a href="metrics">metrics</a>, <a href="readyz">readyz</a></p></body></html>'
    )
    return "\n".join(parts)


def _summary(s: StatusSnapshot) -> list[str]:
    """Readiness and the run's counts as badges, then why the daemon is not ready."""
    ready_class = "good" if s.ready else "bad"
    parts = [
        f'<p id="summary"><span class="badge {ready_class}" id="ready">{"ready" if s.ready else "not ready"}</span>'
        f'<span class="badge">up {_t(format_duration(s.now - s.started))}</span>'
        f'<span class="badge">polls <b id="polls">{s.polls}</b></span>'
        f'<span class="badge">alerts raised <b id="alerts-raised">{s.alerts_raised}</b></span>'
        f'<span class="badge">published <b id="alerts-published">{s.alerts_published}</b></span>'
        f'<span class="badge">pending <b id="pending">{s.pending}</b></span>'
        f'<span class="badge">publish errors <b id="publish-errors">{s.publish_errors}</b></span>'
        f'<span class="muted">as of {_t(_iso(s.now))}</span></p>'
    ]
    if s.not_ready:
        parts.append('<ul class="err" id="not-ready">' + "".join(f"<li>{_t(p)}</li>" for p in s.not_ready) + "</ul>")
    if s.last_reload_error:
        parts.append(f'<p class="err" id="reload-error">last rule reload failed: {_t(s.last_reload_error)}</p>')
    if s.ruleset_version is not None and not any(rule.enabled for rule in s.rules):
        # Only reachable with [rules] allow_empty = true: the monitor runs but alerts on nothing.
        parts.append('<p class="err" id="no-rules">no enabled rule: no article is matched and no alert is raised</p>')
    return parts


def _feeds_table(s: StatusSnapshot) -> list[str]:
    """One page of feeds, one row each."""
    now = s.now
    parts = [
        f'<table id="feeds" data-total="{s.feeds_total}" data-matched="{s.feeds_matched}" '
        f'data-offset="{s.feeds_query.offset}"><thead><tr><th>feed</th><th>health</th><th>last success</th>'
        "<th>last error</th><th>items seen</th><th>polls</th><th>last new item</th><th>next poll</th></tr></thead><tbody>"
    ]
    for row in s.feeds:
        # Feed urls may carry credentials (user:pw@, ?token=): the page shows them masked.
        shown_url = redact(row.url)
        label = row.name or shown_url
        reason = f'<div class="muted">{_t(redact(row.reason))}</div>' if row.reason else ""
        error = ""
        if row.last_error:
            error = f'<div class="err">{_t(redact(row.last_error)[:500])}</div>{_when(row.last_error_at, now)}'
        parts.append(
            f'<tr data-url="{_t(shown_url)}" data-health="{_t(row.health)}">'
            f'<td class="url">{_link(shown_url, label)}</td>'
            f'<td class="health h-{_t(row.health)}">{_t(row.health)}{reason}</td>'
            f'<td class="last-success">{_when(row.last_success, now)}</td>'
            f'<td class="last-error">{error or "<span class=muted>none</span>"}</td>'
            f'<td class="num items-seen">{row.items_seen}</td>'
            f'<td class="num polls">{row.polls}</td>'
            f'<td class="last-new-item">{_when(row.last_new_item, now)}</td>'
            f'<td class="next-poll">{_when(row.next_poll, now)}</td></tr>'
        )
    if not s.feeds:
        parts.append('<tr><td colspan="8" class="muted">no feed on this page</td></tr>')
    parts.append("</tbody></table>")
    return parts


def _roles_table(s: StatusSnapshot) -> list[str]:
    """Each role's part (``run --role``): one row per role, its figures as name: value."""
    roles = s.extra.get("roles") or {}
    if not roles:
        return []
    parts = [f"<h2>Roles ({len(roles)})</h2>", '<table id="roles"><thead><tr><th>role</th><th>state</th></tr></thead><tbody>']
    for name, figures in roles.items():
        cells = "; ".join(
            f"{_t(key)}: {_t(value if isinstance(value, str) else orjson.dumps(value, default=str).decode())}"
            for key, value in figures.items()
        )
        parts.append(f'<tr data-role="{_t(name)}"><td class="rule-id">{_t(name)}</td><td>{cells}</td></tr>')
    parts.append("</tbody></table>")
    return parts


def _push_table(s: StatusSnapshot) -> list[str]:
    """The WebSub push state of the page's feeds, when ``[websub]`` is on."""
    websub = s.extra.get("websub")
    if not websub:
        return []
    counts = ", ".join(f"{count} {state}" for state, count in websub["subscriptions"].items() if count)
    parts = [
        f'<h2>Push (WebSub)</h2><p class="muted" id="push-counts">{_t(counts or "no feed")}</p>',
        '<table id="push"><thead><tr><th>feed</th><th>push</th><th>active until</th><th>last push</th>'
        "<th>pushes</th><th>hub</th><th>last error</th></tr></thead><tbody>",
    ]
    for row in websub["feeds"]:
        shown_url = redact(row["url"])
        parts.append(
            f'<tr data-url="{_t(shown_url)}" data-push="{_t(row["state"])}"><td class="url">{_link(shown_url, shown_url)}</td>'
            f'<td class="push">{_t(row["state"])}</td><td>{_when(row["until"], s.now)}</td>'
            f'<td class="last-push">{_when(row["last_push"], s.now)}</td><td class="num">{row["pushes"]}</td>'
            f'<td class="url">{_t(redact(row["hub"] or "-"))}</td><td class="err">{_t(redact(row["error"] or ""))}</td></tr>'
        )
    parts.append("</tbody></table>")
    return parts


def _rules_table(s: StatusSnapshot) -> list[str]:
    version = f" version {_t(s.ruleset_version)}" if s.ruleset_version else ""
    parts = [
        f"<h2>Rules ({len(s.rules)}{version})</h2>",
        '<table id="rules"><thead><tr><th>rule</th><th>topic</th><th>severity</th><th>mode</th>'
        "<th>alerts</th><th>signals</th></tr></thead><tbody>",
    ]
    for rule in s.rules:
        state = "" if rule.enabled else ' <span class="muted">(disabled)</span>'
        signals = sum(rule.signals.values())
        kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(rule.signals.items()))
        parts.append(
            f'<tr data-rule="{_t(rule.id)}"><td class="rule-id">{_t(rule.id)}{state}</td><td class="topic">{_t(rule.topic)}</td>'
            f'<td>{_t(rule.severity)}</td><td>{_t(rule.mode)}</td><td class="num alerts">{rule.alerts}</td>'
            f'<td class="num signals" title="{_t(kinds)}">{signals}</td></tr>'
        )
    parts.append("</tbody></table>")
    return parts


def _charts_section(s: StatusSnapshot) -> list[str]:
    """A chart per rule with matches in the last 48 hours, a page of them (most matches first)."""
    if not s.charts_total:
        return []
    first, last = s.charts_offset + 1, s.charts_offset + len(s.charts)
    links = []
    if s.charts_offset > 0:
        links.append(f'<a id="charts-prev" href="{_t(_charts_href(s, max(0, s.charts_offset - CHARTS_PER_PAGE)))}">previous</a>')
    if s.charts_next_offset is not None:
        links.append(f'<a id="charts-next" href="{_t(_charts_href(s, s.charts_next_offset))}">next</a>')
    shown = f"{first:,}-{last:,} of {s.charts_total:,}" if s.charts else f"none of {s.charts_total:,}"
    parts = [
        f'<h2 id="charts">Matches per hour, last 48 hours ({s.charts_total:,} rules)</h2>',
        f'<p class="muted" id="charts-page">rules {shown}, most matches first; bars: matching articles an hour, '
        f'dashed: the baseline, red: signals (B burst, S spike, E escalation) {" ".join(links)}</p>',
    ]
    for chart in s.charts:
        parts.append(f'<figure class="rule-chart" data-rule="{_t(chart.rule_id)}"><figcaption>{_t(chart.rule_id)}</figcaption>')
        parts.append(render_chart(chart))
        parts.append("</figure>")
    return parts


def _charts_href(s: StatusSnapshot, offset: int) -> str:
    """A link to the page of charts from ``offset``, keeping the feeds' filter."""
    params = _query_params(s.feeds_query, defaults=False)
    if offset:
        params["charts"] = offset
    return ("?" + urlencode(params) if params else "./") + "#charts"


def _alerts_table(s: StatusSnapshot) -> list[str]:
    parts = [
        f"<h2>Latest alerts ({len(s.alerts)})</h2>",
        '<table id="alerts"><thead><tr><th>detected</th><th>rule</th><th>severity</th><th>title</th>'
        "<th>feed</th><th>delivered</th></tr></thead><tbody>",
    ]
    for alert in s.alerts:
        parts.append(
            f'<tr data-alert="{_t(alert.alert_id)}"><td>{_when(alert.detected_at, s.now)}</td>'
            f'<td class="rule-id">{_t(alert.rule_id)}</td><td>{_t(alert.severity)}</td>'
            f'<td class="title">{_link(alert.url, alert.title or alert.url or "(untitled)")}</td>'
            f'<td class="url">{_t(redact(alert.feed_url))}</td>'
            f'<td class="delivered">{"yes" if alert.delivered else "pending"}</td></tr>'
        )
    if not s.alerts:
        parts.append('<tr><td colspan="6" class="muted">no alerts since start-up</td></tr>')
    parts.append("</tbody></table>")
    return parts


_HEALTH_CHOICES = (("", "any health"), (",".join(h for h in HEALTH_STATES if h != OK), "not ok"), *((h, h) for h in HEALTH_STATES))
_ORDER_LABELS = {"health": "problems first, then most recent new item", "url": "by url"}


def _feeds_header(s: StatusSnapshot) -> list[str]:
    """The feeds' heading (counts by health, each a link to those feeds) and the filter form."""
    query = s.feeds_query
    # The counts are of every feed: each links to all the feeds in that health, unfiltered.
    every = FeedQuery(order=query.order, limit=query.limit)
    counts = ", ".join(
        f'<a class="h-{_t(h)}" id="count-{_t(h)}" href="{_t(_href(every, health=(h,)))}">{n:,} {_t(h)}</a>'
        for h, n in s.health_counts.items()
        if n
    )
    current = ",".join(query.health)
    health_options = "".join(
        f'<option value="{_t(value)}"{" selected" if value == current else ""}>{_t(label)}</option>'
        for value, label in _HEALTH_CHOICES
    )
    order_options = "".join(
        f'<option value="{_t(value)}"{" selected" if value == query.order else ""}>{_t(label)}</option>'
        for value, label in _ORDER_LABELS.items()
    )
    limit = f'<input type="hidden" name="limit" value="{query.limit}">' if query.limit != PAGE_ROWS else ""
    return [
        f'<h2 id="feeds-heading">Feeds ({s.feeds_total:,}: {counts or "none"})</h2>',
        f'<form id="feed-filter" method="get"><label>health <select name="health">{health_options}</select></label> '
        f'<label>url or name contains <input type="search" name="q" value="{_t(query.text)}" maxlength="{MAX_QUERY_TEXT}"></label> '
        f'<label>order <select name="order">{order_options}</select></label>{limit} '
        '<button type="submit">show</button> <a href="./">reset</a></form>',
    ]


def _pager(s: StatusSnapshot, *, ids: bool) -> str:
    """Which feeds the page shows, of how many, and links to the pages around it (above the
    table, with ids for scripts and tests, and again below it)."""
    query = s.feeds_query
    first = query.offset + 1
    last = query.offset + len(s.feeds)
    filtered = " matching" if query.health or query.text else ""
    shown = f"{first:,}-{last:,} of {s.feeds_matched:,}{filtered}" if s.feeds else f"none of {s.feeds_matched:,}{filtered}"
    links = []
    if query.offset > 0:
        previous = max(0, query.offset - (query.limit or PAGE_ROWS))
        links.append(f'<a{" id=prev-page" if ids else ""} href="{_t(_href(query, offset=previous))}">previous</a>')
    if s.feeds_next_offset is not None:
        links.append(f'<a{" id=next-page" if ids else ""} href="{_t(_href(query, offset=s.feeds_next_offset))}">next</a>')
    where = ' id="feeds-page"' if ids else ""
    return f'<p{where} class="muted">feeds {shown} ({_t(_ORDER_LABELS[query.order])}) {" ".join(links)}</p>'


def _error_page(message: str) -> str:
    """The page for a request whose parameters are invalid (400)."""
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>news-monitor: bad request</title>'
        f'<style>{_STYLE}</style></head><body><h1>news-monitor</h1><p class="err" id="error">{_t(message)}</p>'
        '<p><a href="./">the status page</a></p></body></html>'
    )


def _summary_word(snapshot: StatusSnapshot) -> str:
    counts = snapshot.health_counts
    bad = counts.get(FAILING, 0) + counts.get(DISABLED, 0)
    if not snapshot.ready:
        return "not ready"
    if bad:
        return f"{bad} feed(s) failing"
    if counts.get(STALE, 0):
        return f"{counts[STALE]} feed(s) stale"
    return OK


async def serve(app: web.Application, listen: str, *, setting: str, hint: str) -> tuple[web.AppRunner, tuple[str, int]]:
    """Serve ``app`` on ``listen`` (``host:port``); the runner (``cleanup()`` stops it) and
    the bound address. :class:`ConfigError` located at ``setting`` when it cannot bind,
    naming the process that holds the port when there is one."""
    host, port = parse_listen(listen)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        holders = describe_holders(port) if exc.errno == errno.EADDRINUSE and port else ""
        raise ConfigError(
            f"cannot listen on {listen}: {exc.strerror or exc}" + (f" ({holders})" if holders else ""),
            location=SourceLocation(setting),
            hint=f"stop that process, or {hint}" if holders else hint,
        ) from exc
    sockets = getattr(site._server, "sockets", None) or []  # aiohttp keeps the bound sockets here
    bound = sockets[0].getsockname() if sockets else (host, port)
    return runner, (bound[0], bound[1])
