"""Transports that fetch a feed location: aiohttp for http(s), the disk for files.

The HTTP transport makes conditional GETs, follows a bounded number of redirects itself
(so it can tell a permanent move from a temporary one), and enforces the body-size
limit while streaming: a 1 GB answer is aborted, never buffered.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Mapping
from urllib.parse import unquote, urljoin, urlsplit

import aiohttp

from monitor import USER_AGENT
from monitor.errors import FeedError
from monitor.fetch import FeedHttpError, FetchResult, Validators, cache_max_age, retry_after_seconds

__all__ = ["FileTransport", "HttpTransport", "RoutingTransport", "local_path"]

_REDIRECTS = {301, 302, 303, 307, 308}
_PERMANENT = {301, 308}
_ACCEPT = "application/rss+xml, application/atom+xml, application/feed+json, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"


def local_path(url: str) -> Path | None:
    """The file a feed location names, or None when it is not local."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if parts.scheme in ("", ) or (len(parts.scheme) == 1 and url[1:3] == ":\\"):
        return Path(url)
    return None


class HttpTransport:
    """Fetches http(s) feeds with one shared aiohttp session."""

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        max_bytes: int = 20 * 1024 * 1024,
        max_redirects: int = 5,
        user_agent: str = "",
        connection_limit: int = 100,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self._timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=connect_timeout, sock_read=timeout)
        self._user_agent = user_agent or USER_AGENT
        self._connection_limit = connection_limit
        self._session: aiohttp.ClientSession | None = None

    def _session_or_new(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self._connection_limit, ttl_dns_cache=300),
                headers={"User-Agent": self._user_agent, "Accept": _ACCEPT},
                auto_decompress=True,
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def fetch(self, url: str, validators: Validators, headers: Mapping[str, str]) -> FetchResult:
        """One conditional GET of ``url``; raises :class:`FeedError` with the url and reason."""
        session = self._session_or_new()
        request_headers = {**validators.request_headers(), **headers}
        started = time.monotonic()
        current = url
        moved_to: str | None = None
        still_permanent = True
        try:
            for _hop in range(self.max_redirects + 1):
                async with session.get(current, headers=request_headers, allow_redirects=False) as response:
                    if response.status in _REDIRECTS:
                        location = response.headers.get("Location")
                        if not location:
                            raise FeedError(f"{url}: HTTP {response.status} redirect without a Location header")
                        current = urljoin(current, location)
                        still_permanent = still_permanent and response.status in _PERMANENT
                        if still_permanent:
                            moved_to = current
                        continue
                    if response.status == 304:
                        return FetchResult(
                            url=current,
                            status=304,
                            body=None,
                            etag=response.headers.get("ETag") or validators.etag,
                            last_modified=response.headers.get("Last-Modified") or validators.last_modified,
                            moved_to=moved_to,
                            max_age=cache_max_age(response.headers),
                            elapsed=time.monotonic() - started,
                        )
                    if response.status >= 400:
                        raise FeedHttpError(
                            url,
                            response.status,
                            response.reason or "",
                            retry_after=retry_after_seconds(response.headers.get("Retry-After"))
                            if response.status in (429, 503)
                            else None,
                        )
                    body = await self._read_bounded(response, url)
                    return FetchResult(
                        url=current,
                        status=response.status,
                        body=body,
                        content_type=response.headers.get("Content-Type"),
                        etag=response.headers.get("ETag"),
                        last_modified=response.headers.get("Last-Modified"),
                        moved_to=moved_to,
                        max_age=cache_max_age(response.headers),
                        elapsed=time.monotonic() - started,
                    )
            raise FeedError(f"{url}: more than {self.max_redirects} redirects", hint="the feed redirects in a loop; check its url")
        except FeedError:
            raise
        except asyncio.TimeoutError as exc:
            raise FeedError(f"{url}: timed out after {time.monotonic() - started:.1f}s", hint="the server is slow or unreachable; it is retried later") from exc
        except aiohttp.ClientError as exc:
            raise FeedError(f"{url}: {type(exc).__name__}: {exc}", hint="the server is unreachable or answered badly; it is retried later") from exc

    async def _read_bounded(self, response: aiohttp.ClientResponse, url: str) -> bytes:
        declared = response.content_length
        if declared is not None and declared > self.max_bytes:
            raise FeedError(f"{url}: body of {declared} bytes is over the {self.max_bytes}-byte limit", hint="raise [feeds] max_bytes if the feed is really that large")
        chunks: list[bytes] = []
        size = 0
        # Counted after decompression, so a gzip bomb stops at the limit too.
        async for chunk in response.content.iter_chunked(65536):
            size += len(chunk)
            if size > self.max_bytes:
                raise FeedError(f"{url}: body exceeds the {self.max_bytes}-byte limit", hint="raise [feeds] max_bytes if the feed is really that large")
            chunks.append(chunk)
        return b"".join(chunks)


class FileTransport:
    """Reads a feed from a local file (``file://`` URL or a path); mtime acts as Last-Modified."""

    def __init__(self, max_bytes: int = 20 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes

    async def fetch(self, url: str, validators: Validators, headers: Mapping[str, str]) -> FetchResult:
        path = local_path(url)
        if path is None:
            raise FeedError(f"{url}: not a local file location")
        started = time.monotonic()
        try:
            body, mtime = await asyncio.to_thread(self._read, path)
        except FileNotFoundError as exc:
            raise FeedError(f"{url}: no such file", hint="check the feed path; relative paths are relative to the config file") from exc
        except OSError as exc:
            raise FeedError(f"{url}: cannot read: {exc.strerror or exc}") from exc
        stamp = repr(mtime)
        if validators.last_modified == stamp:
            return FetchResult(url=url, status=304, body=None, last_modified=stamp, elapsed=time.monotonic() - started)
        return FetchResult(url=url, status=200, body=body, last_modified=stamp, elapsed=time.monotonic() - started)

    def _read(self, path: Path) -> tuple[bytes, float]:
        stat = path.stat()
        if stat.st_size > self.max_bytes:
            raise OSError(f"file of {stat.st_size} bytes is over the {self.max_bytes}-byte limit")
        return path.read_bytes(), stat.st_mtime_ns / 1e9


class RoutingTransport:
    """Sends each location to the transport for its scheme."""

    def __init__(self, http: HttpTransport, files: FileTransport) -> None:
        self.http = http
        self.files = files

    async def fetch(self, url: str, validators: Validators, headers: Mapping[str, str]) -> FetchResult:
        if local_path(url) is not None:
            return await self.files.fetch(url, validators, headers)
        scheme = urlsplit(url).scheme.lower()
        if scheme not in ("http", "https"):
            raise FeedError(f"{url}: unsupported scheme {scheme!r}", hint="use http(s)://, file:// or a path")
        return await self.http.fetch(url, validators, headers)

    async def close(self) -> None:
        await self.http.close()
