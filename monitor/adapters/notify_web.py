"""The notify process's HTTP endpoint (aiohttp), on ``[notify] listen``.

``/metrics``      Prometheus text format (``news_monitor_notify_*``, by destination)
``/healthz``      200 while the process runs (liveness)
``/readyz``       200 when the consumer runs, the broker answers and the state store works;
                  503 with the reasons otherwise
``/status.json``  one line per destination (sent, failed, retried, dead-lettered, pending,
                  queued in digests, last error), for scripts
``/``             the same as a page for people

Destination URLs never appear here: only names and counts.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from monitor.adapters.web import serve
from monitor.log import get_logger, redact

__all__ = ["NotifyWebServer"]

log = get_logger("notify.web")

_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


class NotifyWebServer:
    """Serves ``render_metrics()``, ``readiness()`` and ``status()`` on ``listen``."""

    def __init__(
        self,
        listen: str,
        *,
        render_metrics: Callable[[], bytes],
        readiness: Callable[[], tuple[bool, list[str]]],
        status: Callable[[], list[dict[str, Any]]],
    ) -> None:
        self.listen = listen
        self._metrics = render_metrics
        self._readiness = readiness
        self._status = status
        self._runner: web.AppRunner | None = None
        self.address: tuple[str, int] | None = None

    async def start(self) -> NotifyWebServer:
        """Bind and serve; :class:`ConfigError` naming ``[notify] listen`` when it cannot bind."""
        app = web.Application()
        app.router.add_get("/metrics", self._get_metrics)
        app.router.add_get("/healthz", self._get_healthz)
        app.router.add_get("/readyz", self._get_readyz)
        app.router.add_get("/status.json", self._get_status_json)
        app.router.add_get("/", self._get_page)
        self._runner, self.address = await serve(
            app,
            self.listen,
            setting="[notify] listen",
            hint='choose a free port with [notify] listen (NEWS_MONITOR_NOTIFY_LISTEN), or "" to turn the endpoint off',
        )
        bound = self.address
        log.info("notify.http.started", url=f"http://{bound[0]}:{bound[1]}")
        return self

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def _get_metrics(self, _request: web.Request) -> web.Response:
        return web.Response(body=self._metrics(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _get_healthz(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "alive"})

    async def _get_readyz(self, _request: web.Request) -> web.Response:
        ready, problems = self._readiness()
        return web.json_response({"ready": ready, "problems": problems}, status=200 if ready else 503)

    async def _get_status_json(self, _request: web.Request) -> web.Response:
        ready, problems = self._readiness()
        body = orjson.dumps(redact({"ready": ready, "problems": problems, "destinations": self._status()}))
        return web.Response(body=body, content_type="application/json", headers=_HEADERS)

    async def _get_page(self, _request: web.Request) -> web.Response:
        ready, problems = self._readiness()
        rows = self._status()
        columns = ("destination", "sent", "alerts_sent", "failed", "retried", "dead_lettered", "pending", "queued_in_digest",
                   "digest", "rate_limit", "quiet_hours", "last_error")  # fmt: skip
        head = "".join(f"<th>{escape(c.replace('_', ' '))}</th>" for c in columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{escape(_cell(redact(row.get(c))))}</td>" for c in columns) + "</tr>" for row in rows
        )
        state = "ready" if ready else "not ready: " + "; ".join(problems)
        html = (
            "<!doctype html><html><head><meta charset='utf-8'><meta http-equiv='refresh' content='10'>"
            "<title>news-monitor notify</title><style>body{font-family:sans-serif;margin:2em}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}</style></head>"
            f"<body><h1>news-monitor notify</h1><p>{escape(state)}</p>"
            f"<table><tr>{head}</tr>{body}</table></body></html>"
        )
        return web.Response(text=html, content_type="text/html", charset="utf-8", headers=_HEADERS)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return " ".join(str(value).split())
