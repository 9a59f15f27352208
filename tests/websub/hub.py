"""A WebSub hub written to the W3C Recommendation (sections 5-8), on loopback, for tests.

Subscription requests (``POST /hub``) are checked, answered ``202 Accepted``, then
verified asynchronously with a ``GET`` to the callback carrying ``hub.mode``,
``hub.topic``, ``hub.challenge`` and (for subscribe) ``hub.lease_seconds``; the
subscription holds only when the callback echoes the challenge with a 2xx. A topic the
test denies gets ``hub.mode=denied`` instead. :meth:`Hub.publish` distributes content to
every verified subscriber of a topic, signed with ``X-Hub-Signature`` from the
subscription's secret, as section 7 and 8 say. Leases expire: a subscription past its
lease gets nothing.

Knobs for the tests: ``fail`` (statuses to answer the next requests with), ``redirect``
(a 307/308 to another path), ``lease`` (the lease the hub grants), ``deny``, ``sign``
(the HMAC method, or None for unsigned).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from tests.support import LocalServer

SIGNATURES = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}


@dataclass
class HubSubscription:
    callback: str
    topic: str
    secret: str | None
    expires: float


@dataclass
class Request:
    path: str
    form: dict[str, str]
    status: int
    at: float = field(default_factory=time.monotonic)


@dataclass
class Hub(LocalServer):
    """See the module docstring."""

    lease: int | None = None
    sign: str | None = "sha256"
    fail: list[int] = field(default_factory=list)
    redirect: tuple[int, str] | None = None
    deny: set[str] = field(default_factory=set)
    subscriptions: dict[tuple[str, str], HubSubscription] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    verifications: list[tuple[str, int, str]] = field(default_factory=list)
    verified: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self):  # -> Self
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._session = aiohttp.ClientSession()
        return self

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._session.close()
        await super().stop()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        if self.fail:
            status = self.fail.pop(0)
            self.requests.append(Request(request.path, form, status))
            return web.Response(status=status, text="hub trouble", headers={"Retry-After": "1"} if status == 503 else None)
        if self.redirect is not None and request.path != self.redirect[1]:
            status, target = self.redirect
            self.requests.append(Request(request.path, form, status))
            return web.Response(status=status, headers={"Location": self.url(target)})
        mode, callback, topic = form.get("hub.mode"), form.get("hub.callback"), form.get("hub.topic")
        if mode not in ("subscribe", "unsubscribe") or not callback or not topic:
            self.requests.append(Request(request.path, form, 400))
            return web.Response(status=400, text="hub.mode, hub.callback and hub.topic are required")
        self.requests.append(Request(request.path, form, 202))
        task = asyncio.create_task(self._verify(mode, callback, topic, form))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.Response(status=202)

    async def _verify(self, mode: str, callback: str, topic: str, form: dict[str, str]) -> None:
        """Section 5.3: verification of intent (or a denial, 5.2)."""
        if topic in self.deny and mode == "subscribe":
            params = {"hub.mode": "denied", "hub.topic": topic, "hub.reason": "not on this hub"}
            async with self._session.get(callback, params=params) as response:
                self.verifications.append(("denied", response.status, ""))
            self.verified.set()
            return
        challenge = secrets.token_hex(16)
        lease = self.lease or int(form.get("hub.lease_seconds") or 864000)
        params = {"hub.mode": mode, "hub.topic": topic, "hub.challenge": challenge}
        if mode == "subscribe":
            params["hub.lease_seconds"] = str(lease)
        async with self._session.get(callback, params=params) as response:
            text = await response.text()
        self.verifications.append((mode, response.status, text))
        if 200 <= response.status < 300 and text == challenge:
            if mode == "subscribe":
                self.subscriptions[callback, topic] = HubSubscription(callback, topic, form.get("hub.secret"), time.time() + lease)
            else:
                self.subscriptions.pop((callback, topic), None)
        self.verified.set()

    def active(self, topic: str) -> list[HubSubscription]:
        now = time.time()
        return [s for s in self.subscriptions.values() if s.topic == topic and s.expires > now]

    async def publish(self, topic: str, body: bytes, content_type: str = "application/rss+xml", *, secret: str | None = None) -> list[int]:
        """Section 7: POST ``body`` to every subscriber of ``topic``; their statuses.
        ``secret`` signs with that secret instead of the subscription's (a forgery)."""
        statuses = []
        for subscription in self.active(topic):
            headers = {"Content-Type": content_type}
            key = secret if secret is not None else subscription.secret
            if self.sign and key is not None:
                digest = hmac.new(key.encode(), body, SIGNATURES[self.sign]).hexdigest()
                headers["X-Hub-Signature"] = f"{self.sign}={digest}"
            async with self._session.post(subscription.callback, data=body, headers=headers) as response:
                statuses.append(response.status)
        return statuses
