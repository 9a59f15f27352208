"""WebSub's network side (aiohttp): the callback listener hubs reach, and the client that
asks hubs for subscriptions. The decisions are the core's (:mod:`monitor.websub`).

The listener (``[websub] listen``, apart from ``[http] listen``) serves one path per
subscription, ``<any prefix>/<token>``; what it answers:

=====================================  =========================================================
``GET`` verification of intent         ``200`` and the challenge for a subscription waiting for
                                       it (token, topic and mode match), ``404`` otherwise
``POST`` content distribution          ``202`` once the body is read and its signature checked
                                       (ignored, but still ``202``, when unsigned or badly signed)
unknown token                          ``404`` (before the body is read)
over ``rate_limit`` / ``feed_rate_limit``  ``429`` with ``Retry-After: 1``
body over ``[feeds] max_bytes``        ``413`` (counted inflated: a gzip bomb stops at the limit)
body not sent within ``[feeds] timeout``   ``408``
body that cannot be read               ``400`` (a broken gzip, deflate or br encoding)
push queue full                        ``503`` with ``Retry-After: 5``
any other method                       ``405``
=====================================  =========================================================

The hub client POSTs forms through the same address guard as article pages
(:class:`~monitor.adapters.pages.AddressPolicy`, with ``[websub] hub_allow``): a hub URL
comes from feed content, so it may not point at loopback or private addresses unless
the operator allows them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError
from yarl import URL

from monitor.adapters.http import client_error_text, payload_error_text
from monitor.adapters.pages import AddressPolicy, BlockedAddress, PageFetcher
from monitor.adapters.web import serve
from monitor.errors import FeedError, error_text
from monitor.fetch import FeedTimeout, retry_after_seconds
from monitor.log import get_logger
from monitor.websub.inbox import PushInbox
from monitor.websub.ratelimit import Buckets, TokenBucket
from monitor.websub.subscriptions import HubAnswer

__all__ = ["CallbackServer", "HttpHubClient"]

log = get_logger("websub")

#: Bursts a subscription may send at once, in seconds' worth of ``feed_rate_limit``.
FEED_BURST_SECONDS = 10.0


class CallbackServer:
    """The callback listener (see the module docstring)."""

    def __init__(
        self,
        inbox: PushInbox,
        listen: str,
        *,
        max_bytes: int,
        read_timeout: float,
        rate_limit: float,
        feed_rate_limit: float,
    ) -> None:
        self.inbox = inbox
        self.listen = listen
        self.max_bytes = max_bytes
        self.read_timeout = read_timeout
        self._all = TokenBucket(rate_limit, max(1.0, rate_limit))
        self._each = Buckets(feed_rate_limit, max(1.0, feed_rate_limit * FEED_BURST_SECONDS))
        self._runner: web.AppRunner | None = None
        self.address: tuple[str, int] | None = None

    async def start(self) -> CallbackServer:
        """Bind and serve; :class:`ConfigError` naming the address when it cannot be bound."""
        app = web.Application(client_max_size=self.max_bytes)
        app.router.add_route("GET", "/{path:.*}", self._verify)
        app.router.add_route("POST", "/{path:.*}", self._push)
        self._runner, self.address = await serve(
            app, self.listen, setting="[websub] listen",
            hint="choose a free port with [websub] listen (NEWS_MONITOR_WEBSUB_LISTEN), apart from [http] listen",
        )
        log.info("websub.listening", listen=f"{self.address[0]}:{self.address[1]}")
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> CallbackServer:
        return await self.start()

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    def _limited(self, token: str) -> web.Response | None:
        """429 when the listener, or this token, is over its rate."""
        if self._all.take() and self._each.take(token):
            return None
        self.inbox.stats.count("rate_limited")
        return web.Response(status=429, text="slow down\n", headers={"Retry-After": "1"})

    async def _verify(self, request: web.Request) -> web.Response:
        token = _token(request)
        limited = self._limited(token)
        if limited is not None:
            return limited
        status, text = await self.inbox.subscriber.verify(token, request.query)
        self.inbox.stats.count("verified" if status == 200 else "verify_refused")
        return web.Response(status=status, text=text, content_type="text/plain")

    async def _push(self, request: web.Request) -> web.Response:
        token = _token(request)
        limited = self._limited(token)
        if limited is not None:
            return limited
        if not self.inbox.known(token):
            self.inbox.stats.count("unknown_token")
            return web.Response(status=404, text="not found\n")
        try:
            async with asyncio.timeout(self.read_timeout):
                body = await _read_body(request, self.max_bytes)
        except TimeoutError:
            self.inbox.stats.count("bad_request")
            return web.Response(status=408, text="body not sent in time\n")
        except FeedError as exc:
            self.inbox.stats.count("too_large")
            log.warning("websub.push.refused", reason=exc.message)
            return web.Response(status=413, text="body too large\n")
        except (RequestPayloadError, aiohttp.ClientPayloadError, web.HTTPException, ValueError) as exc:
            # RequestPayloadError: the server's own word for a body it cannot read (bad
            # gzip, broken chunks); uncaught, it was a 500 and a traceback in the log.
            self.inbox.stats.count("bad_request")
            log.warning("websub.push.refused", reason=_unreadable(exc))
            return web.Response(status=400, text="unreadable body\n")
        verdict = self.inbox.push(token, body, request.headers.get("X-Hub-Signature"), request.headers.get("Content-Type"))
        headers = {"Retry-After": "5"} if verdict.status == 503 else None
        return web.Response(status=verdict.status, text=f"{verdict.reason}\n", headers=headers)


def _token(request: web.Request) -> str:
    """The last path segment: a reverse proxy may keep or strip the callback URL's prefix."""
    return request.path.rstrip("/").rpartition("/")[2]


def _unreadable(exc: Exception) -> str:
    """Why a push's body could not be read, in words (aiohttp's parser error is the cause)."""
    if isinstance(exc, web.HTTPException):
        return f"HTTP {exc.status}: {exc.reason}"
    if isinstance(exc, aiohttp.ClientError):
        return client_error_text(exc)
    if isinstance(exc, RequestPayloadError):
        return payload_error_text(exc)
    return f"unreadable body: {error_text(exc)}"


async def _read_body(request: web.Request, max_bytes: int) -> bytes:
    """The request body, inflated, or FeedError past ``max_bytes`` (never held beyond it plus a chunk)."""
    declared = request.content_length
    if declared is not None and declared > max_bytes and request.headers.get("Content-Encoding", "identity").lower() == "identity":
        raise FeedError(f"push of {declared} bytes is over the {max_bytes}-byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(65536):
        size += len(chunk)
        if size > max_bytes:
            raise FeedError(f"push exceeds the {max_bytes}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


class HttpHubClient(PageFetcher):
    """POSTs subscription requests to hubs, through the page fetcher's address guard."""

    def __init__(self, *, allow: tuple[str, ...] = (), timeout: float = 30.0, **options: Any) -> None:
        super().__init__(policy=AddressPolicy(allow), max_bytes=65536, timeout=timeout, **options)

    async def post(self, url: str, form: Mapping[str, str]) -> HubAnswer:
        """One POST (redirects are the subscriber's to follow); FeedError when the hub is not reached."""
        try:
            self.check_url(url)
            session = self._session_or_new()
            async with session.post(url, data=dict(form), allow_redirects=False) as response:
                detail = ""
                if response.status >= 300:
                    detail = " ".join((await response.content.read(2048))[:300].decode("utf-8", "replace").split())
                retry_after = retry_after_seconds(response.headers.get("Retry-After")) if response.status in (429, 503) else None
                location = response.headers.get("Location")
                moved = str(response.url.join(URL(location))) if location else None
                return HubAnswer(response.status, moved, retry_after, detail)
        except BlockedAddress as exc:
            raise FeedError(exc.message, hint=_BLOCKED_HINT) from exc
        except TimeoutError as exc:
            raise FeedTimeout(f"{url}: the hub did not answer in time") from exc
        except aiohttp.ClientError as exc:
            error = self._client_error(url, url, exc)
            if isinstance(error, BlockedAddress):
                raise FeedError(error.message, hint=_BLOCKED_HINT) from exc
            raise error from exc
        except ValueError as exc:
            raise FeedError(f"{url}: invalid hub url or answer: {exc}") from exc


_BLOCKED_HINT = "hubs on loopback, private or other non-public addresses need [websub] hub_allow"
