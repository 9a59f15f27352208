"""Transports that fetch a feed location (:class:`monitor.fetch.Transport`): aiohttp for
http(s), the disk for files.

The HTTP transport makes conditional GETs, follows a bounded number of redirects itself
(so it can tell a permanent move from a temporary one), and enforces the body-size
limit while streaming: a 1 GB answer is aborted, never buffered. Compressed answers
(gzip, deflate, brotli) are inflated here, not by aiohttp, in steps of at most 64 KiB,
and the limit counts inflated bytes, so a gzip bomb stops at the limit too. A compressed
body that is corrupt or ends before its stream does is an error naming the encoding:
aiohttp hands back the part it could inflate of a cut-off gzip or brotli stream (or
nothing) without a word, which a lenient parser took for the whole feed.

The redirect loop and the mapping of aiohttp's exceptions to :class:`FeedError` are
shared with the article-page fetcher (:mod:`monitor.adapters.pages`): :class:`SessionClient`.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, ClassVar, TypeVar
from urllib.parse import unquote, urljoin, urlsplit

import aiohttp
import brotli
from yarl import URL

from monitor import USER_AGENT
from monitor.errors import FeedError, error_text
from monitor.fetch import FeedHttpError, FeedTimeout, FetchResult, Validators, cache_max_age, retry_after_seconds

__all__ = [
    "FileTransport",
    "HttpTransport",
    "RoutingTransport",
    "SessionClient",
    "client_error_text",
    "local_path",
    "payload_error_text",
    "read_bounded",
]

T = TypeVar("T")
#: What a fetch does with the final (non-redirect) response: (response, its url, the
#: address of a permanent move or None, when the fetch started) -> the result.
Answer = Callable[[aiohttp.ClientResponse, str, "str | None", float], Awaitable[T]]

_REDIRECTS = {301, 302, 303, 307, 308}
_PERMANENT = {301, 308}
_ACCEPT = "application/rss+xml, application/atom+xml, application/feed+json, application/xml;q=0.9, text/xml;q=0.9, */*;q=0.5"
#: The Content-Encodings asked for: those :class:`_Inflater` decodes (aiohttp's default
#: list would name zstd wherever a zstd module is installed).
_ACCEPT_ENCODING = "gzip, deflate, br"


def local_path(url: str) -> Path | None:
    """The file a feed location names, or None when it is not local."""
    parts = urlsplit(url)
    if parts.scheme == "file":
        return Path(unquote(parts.path))
    if parts.scheme in ("", ) or (len(parts.scheme) == 1 and url[1:3] == ":\\"):
        return Path(url)
    return None


class SessionClient:
    """One lazily created aiohttp session with our timeouts, User-Agent and limits.

    Subclasses say what the session accepts and how it connects (:meth:`_connector`).
    """

    _accept = "*/*"

    def __init__(
        self,
        *,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        read_timeout: float | None = None,
        max_bytes: int = 20 * 1024 * 1024,
        max_redirects: int = 5,
        user_agent: str = "",
        connection_limit: int = 100,
    ) -> None:
        self.max_bytes = max_bytes
        self.max_redirects = max_redirects
        self._timeout = aiohttp.ClientTimeout(
            total=timeout, sock_connect=connect_timeout, sock_read=read_timeout if read_timeout else timeout
        )
        self._user_agent = user_agent or USER_AGENT
        self._connection_limit = connection_limit
        self._session: aiohttp.ClientSession | None = None

    def _connector(self) -> aiohttp.TCPConnector:
        return aiohttp.TCPConnector(limit=self._connection_limit, ttl_dns_cache=300)

    def _session_options(self) -> dict[str, object]:
        return {}

    def _session_or_new(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=self._connector(),
                headers={"User-Agent": self._user_agent, "Accept": self._accept, "Accept-Encoding": _ACCEPT_ENCODING},
                **self._session_options(),  # type: ignore[arg-type]
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- one GET, redirects followed -----------------------------------------------------

    #: Hints for a timeout, an unreachable server and a redirect loop (None: no hint).
    _hints: ClassVar[dict[str, str | None]] = {"timeout": None, "error": None, "loop": None}

    def _target(self, url: str) -> Any:
        """What ``session.get`` is given for ``url`` (the string, or a parsed URL)."""
        return url

    def _check(self, url: str) -> None:
        """Refuse to fetch ``url`` (raise a FeedError); called before every hop."""

    def _client_error(self, url: str, current: str, exc: aiohttp.ClientError) -> FeedError:
        """The FeedError for an aiohttp failure while fetching ``current`` (asked for ``url``)."""
        return FeedError(f"{url}: {client_error_text(exc)}", hint=self._hints["error"])

    async def _get(
        self, url: str, headers: Mapping[str, str] | None, answer: Answer[T], heard: Callable[[], None] | None = None
    ) -> T:
        """GET ``url``, following redirects one hop at a time (each checked and bounded),
        then ``answer`` the final response; every failure is a :class:`FeedError` naming ``url``.

        ``heard`` is called as each response's headers arrive.
        """
        session = self._session_or_new()
        started = time.monotonic()
        current = url
        moved_to: str | None = None
        still_permanent = True
        try:
            for _hop in range(self.max_redirects + 1):
                self._check(current)
                # read_bounded inflates the body, so that a corrupt or cut-off stream is an error.
                async with session.get(self._target(current), headers=headers, allow_redirects=False, auto_decompress=False) as response:
                    if heard is not None:
                        heard()
                    if response.status not in _REDIRECTS:
                        return await answer(response, current, moved_to, started)
                    location = response.headers.get("Location")
                    if not location:
                        raise FeedError(f"{url}: HTTP {response.status} redirect without a Location header")
                    current = _redirect_target(url, current, location)
                    still_permanent = still_permanent and response.status in _PERMANENT
                    if still_permanent:
                        moved_to = current
            raise FeedError(f"{url}: more than {self.max_redirects} redirects", hint=self._hints["loop"])
        except FeedError:
            raise
        except TimeoutError as exc:
            raise FeedTimeout(f"{url}: timed out after {time.monotonic() - started:.1f}s", hint=self._hints["timeout"]) from exc
        except aiohttp.ClientError as exc:
            raise self._client_error(url, current, exc) from exc
        except ValueError as exc:
            # yarl/aiohttp reject some malformed urls and headers with a bare ValueError.
            raise FeedError(f"{url}: invalid request or answer: {exc}") from exc


def client_error_text(exc: aiohttp.ClientError) -> str:
    """Why an HTTP request failed, in one line: which host could not be reached and why,
    or what was wrong with the answer; aiohttp's class names and nested reprs left out."""
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cause = exc.certificate_error
        why = getattr(cause, "verify_message", None) or getattr(cause, "reason", None) or error_text(cause)
        return f"the TLS certificate of {exc.host}:{exc.port} is not trusted: {_SSL_SOURCE.sub('', why)}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        if isinstance(exc, aiohttp.ClientSSLError):
            why = getattr(exc, "reason", None) or error_text(exc.os_error)
            # OpenSSL's words stay; CPython's source line after them ("(_ssl.c:1006)") goes.
            return f"TLS with {exc.host}:{exc.port} failed: {_SSL_SOURCE.sub('', why)}"
        if isinstance(exc.os_error, socket.gaierror):
            return f"cannot resolve the host name {exc.host}: {error_text(exc.os_error)}"
        return f"cannot connect to {exc.host}:{exc.port}: {error_text(exc.os_error)}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection before it answered"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return payload_error_text(exc)
    if isinstance(exc, aiohttp.InvalidURL):
        return f"invalid url {str(exc.url)[:200]!r}"
    if isinstance(exc, aiohttp.ClientResponseError):
        # Raised by the response parser: a server that does not speak HTTP, or a broken answer.
        # Its message is several lines, the last a caret under the bad byte.
        return "invalid HTTP answer: " + " ".join(word for word in exc.message.split() if word != "^")
    return error_text(exc)


_SSL_SOURCE = re.compile(r"\s*\(_ssl\.c:\d+\)")


def payload_error_text(exc: Exception) -> str:
    """Why a body could not be read (a client's ClientPayloadError, a server's
    RequestPayloadError), in one line: aiohttp puts the parser's error, e.g. "received 3
    of 1000 bytes", in the exception's cause."""
    parser_error = exc.__cause__
    detail = str(getattr(parser_error, "message", None) or parser_error or "").rstrip(".")
    return " ".join(f"the body was cut off or malformed{': ' + detail if detail else ''}".split())


class _SilenceWatch:
    """The read timeout of feed fetches: abandons a fetch that hears nothing from its server
    for ``timeout`` seconds.

    aiohttp's own ``sock_read`` timeout re-arms a loop timer at every read of every
    request, and the loop's timer heap fills with the cancelled ones (a noticeable share
    of a 304 poll, see docs/polling.md). Here a
    fetch notes when it last heard from its server (a dict store), and one periodic check
    cancels the fetches silent for too long, which the fetch turns into a
    :class:`FeedTimeout`. The check runs every ``timeout / 8`` seconds (at most every
    second), so a silent fetch ends at most that much after its timeout.

    Silence counts from the start of the request, connecting included; the first byte
    may take ``first`` seconds (``connect_timeout`` when that is the longer: connecting
    has its own limit).
    """

    def __init__(self, timeout: float, first: float = 0.0) -> None:
        self.timeout = timeout
        self._grace = max(0.0, first - timeout)
        self._period = min(1.0, timeout / 8)
        #: Fetches in flight -> when they last heard from their server (monotonic; at the
        #: start, the start plus the first byte's grace), and when that really was.
        self._heard: dict[asyncio.Task[Any], float] = {}
        self._since: dict[asyncio.Task[Any], float] = {}
        #: Fetches this watch cancelled -> the seconds they had heard nothing.
        self._expired: dict[asyncio.Task[Any], float] = {}
        self._checker: asyncio.Task[None] | None = None

    def begin(self, task: asyncio.Task[Any]) -> None:
        """``task`` starts a fetch: the clock of its silence starts now."""
        now = time.monotonic()
        self._heard[task] = now + self._grace
        self._since[task] = now
        loop = asyncio.get_running_loop()
        if self._checker is None or self._checker.done() or self._checker.get_loop() is not loop:
            self._checker = loop.create_task(self._check(), name="feed read timeout")

    def heard(self, task: asyncio.Task[Any]) -> None:
        """``task``'s server sent something (headers, a chunk of body)."""
        self._heard[task] = self._since[task] = time.monotonic()

    def end(self, task: asyncio.Task[Any]) -> None:
        """``task``'s fetch is over, however it ended."""
        self._heard.pop(task, None)
        self._since.pop(task, None)
        self._expired.pop(task, None)

    def silenced(self, task: asyncio.Task[Any]) -> float | None:
        """The seconds ``task`` heard nothing, if a CancelledError in it is this watch's
        doing alone (the cancellation is then taken back, and the fetch must raise
        FeedTimeout instead); None otherwise."""
        silent = self._expired.pop(task, None)
        # Someone else (a shutdown) may have cancelled it too: theirs still stands.
        return silent if silent is not None and task.uncancel() == 0 else None

    async def _check(self) -> None:
        # Ends when no fetch is in flight; the next fetch starts another.
        while self._heard:
            await asyncio.sleep(self._period)
            now = time.monotonic()
            deadline = now - self.timeout
            for task, heard in list(self._heard.items()):
                if heard < deadline and task not in self._expired:
                    self._expired[task] = now - self._since[task]
                    task.cancel()

    async def close(self) -> None:
        checker, self._checker = self._checker, None
        # A checker of an earlier event loop (closed since) is not ours to wait for.
        if checker is not None and checker.get_loop() is asyncio.get_running_loop():
            checker.cancel()
            await asyncio.gather(checker, return_exceptions=True)


class HttpTransport(SessionClient):
    """Fetches http(s) feeds with one shared aiohttp session."""

    _accept = _ACCEPT

    def __init__(self, **options: Any) -> None:
        """``options``: those of :class:`SessionClient`."""
        super().__init__(**options)
        # The read timeout is kept by a _SilenceWatch (see there), not by aiohttp.
        timeout = self._timeout
        self._silence = _SilenceWatch(timeout.sock_read or timeout.total or 30.0, first=timeout.sock_connect or 0.0)
        self._timeout = aiohttp.ClientTimeout(total=timeout.total, sock_connect=timeout.sock_connect)

    async def fetch(self, url: str, validators: Validators, headers: Mapping[str, str]) -> FetchResult:
        """One conditional GET of ``url``; raises :class:`FeedError` with the url and reason."""
        task = asyncio.current_task()
        assert task is not None, "fetch runs in a task"
        self._silence.begin(task)
        try:
            return await self._fetch(url, validators, headers, task)
        except asyncio.CancelledError as exc:
            silent = self._silence.silenced(task)
            if silent is None:
                raise
            # The time it really waited: the first byte may take connect_timeout.
            raise FeedTimeout(
                f"{url}: nothing from the server for {silent:.1f}s",
                hint="the server is slow or unreachable; it is retried later",
            ) from exc
        finally:
            self._silence.end(task)

    async def close(self) -> None:
        await self._silence.close()
        await super().close()

    _hints: ClassVar[dict[str, str | None]] = {
        "timeout": "the server is slow or unreachable; it is retried later",
        "error": "the server is unreachable or answered badly; it is retried later",
        "loop": "the feed redirects in a loop; check its url",
    }

    def _target(self, url: str) -> Any:
        return _feed_url(url)

    async def _fetch(self, url: str, validators: Validators, headers: Mapping[str, str], task: asyncio.Task[Any]) -> FetchResult:
        request_headers = validators.request_headers()
        request_headers.update(headers)

        async def answer(response: aiohttp.ClientResponse, current: str, moved_to: str | None, started: float) -> FetchResult:
            if response.status == 304:
                if not any(name.lower() in _CONDITIONAL for name in request_headers):
                    # Nothing was cached to reuse: taken as "unchanged", the feed would never be read.
                    raise FeedError(
                        f"{url}: HTTP 304 Not Modified to a request without If-None-Match or If-Modified-Since",
                        hint="the server answers 304 to every request; tell its operator",
                    )
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
                retry_after = retry_after_seconds(response.headers.get("Retry-After")) if response.status in (429, 503) else None
                raise FeedHttpError(url, response.status, response.reason or "", retry_after=retry_after)
            body = await read_bounded(response, url, self.max_bytes, "[feeds] max_bytes", on_chunk=lambda: self._silence.heard(task))
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
                links=", ".join(response.headers.getall("Link", ())) or None,
            )

        return await self._get(url, request_headers, answer, heard=lambda: self._silence.heard(task))


@lru_cache(maxsize=1 << 15)
def _feed_url(url: str) -> URL:
    """``url`` parsed, once per feed location rather than once per poll (yarl's own cache
    holds only a few hundred urls; parsing one is a noticeable share of a 304 poll)."""
    return URL(url)


#: The request headers that make a GET conditional (a 304 answers only those).
_CONDITIONAL = frozenset({"if-none-match", "if-modified-since"})


async def read_bounded(
    response: aiohttp.ClientResponse, url: str, max_bytes: int, setting: str, *, on_chunk: Callable[[], None] | None = None
) -> bytes:
    """The response body, inflated as its Content-Encoding says, or :class:`FeedError` as
    soon as it passes ``max_bytes``, or when its compressed stream is corrupt or cut off.

    Counted after decompression, step by step, so neither a huge body nor a gzip bomb
    is ever held in memory beyond the limit plus one step. ``on_chunk`` is called as
    each chunk arrives. An encoding other than gzip (x-gzip), deflate and br is passed
    through as it came, as aiohttp does; so is an empty body, whatever its encoding.
    """
    declared = response.content_length
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if declared is not None and declared > max_bytes and encoding in ("", "identity"):
        raise FeedError(
            f"{url}: body of {declared} bytes is over the {max_bytes}-byte limit", hint=f"raise {setting} if it is really that large"
        )
    inflater = _Inflater(encoding) if encoding in _INFLATED else None
    chunks: list[bytes] = []
    size = 0

    def over() -> FeedError:
        response.close()
        return FeedError(f"{url}: body exceeds the {max_bytes}-byte limit", hint=f"raise {setting} if it is really that large")

    try:
        async for chunk in response.content.iter_chunked(_STEP):
            if on_chunk is not None:
                on_chunk()
            for piece in inflater.feed(chunk) if inflater is not None else (chunk,):
                size += len(piece)
                if size > max_bytes:
                    raise over()
                chunks.append(piece)
            # The compressed bytes count too: a stream of empty blocks inflates to nothing, for ever.
            if inflater is not None and inflater.compressed > max_bytes:
                raise over()
        if inflater is not None and not inflater.complete():
            raise _CorruptStream(f"it ends before its {inflater.name} stream does, after {inflater.compressed} compressed bytes")
    except _CorruptStream as exc:
        response.close()
        raise FeedError(
            f"{url}: the compressed body is corrupt (Content-Encoding: {encoding}): {exc}",
            hint="nothing of the body was used and the poll counts as failed; tell the feed's operator if it lasts",
        ) from exc
    return b"".join(chunks)


#: The size of a step: of the chunks read from the socket, and of the output of one inflate call.
_STEP = 65536
#: The gzip members one body may concatenate (aiohttp's cap too; real bodies have one or a few).
_MAX_MEMBERS = 1024
#: Content-Encoding -> the name of the stream format, for those :class:`_Inflater` decodes.
_INFLATED = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate", "br": "brotli"}


class _CorruptStream(Exception):
    """A compressed body that cannot be inflated; the message says why, in one line."""


class _Inflater:
    """Inflates one body of a Content-Encoding of :data:`_INFLATED`, at most :data:`_STEP`
    bytes of output per call, and tells whether the stream it was fed is complete.

    Concatenated gzip members are one body (as ``gzip -d`` reads them); other bytes after
    a complete gzip or deflate stream are ignored, as browsers ignore them (aiohttp
    refused the body; the brotli decoder refuses them too).
    """

    def __init__(self, encoding: str) -> None:
        self.name = _INFLATED[encoding]
        #: The compressed bytes fed so far.
        self.compressed = 0
        self._brotli = brotli.Decompressor() if self.name == "brotli" else None
        # Made at the first byte: a deflate body is zlib-wrapped or raw (servers send both).
        self._zlib: Any = None
        self._members = 0

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The output of ``data``, piece by piece; raises _CorruptStream."""
        self.compressed += len(data)
        try:
            if self._brotli is not None:
                yield from self._feed_brotli(data)
            else:
                yield from self._feed_zlib(data)
        except (zlib.error, brotli.error) as exc:
            # zlib's "Error -3 while decompressing data: " says nothing to an operator.
            raise _CorruptStream(f"not a valid {self.name} stream ({str(exc).rpartition(': ')[2]})") from exc

    def complete(self) -> bool:
        """Whether the stream ended (or nothing at all was fed: an empty body)."""
        if self.compressed == 0:
            return True
        if self._brotli is not None:
            return bool(self._brotli.is_finished())
        return self._zlib is not None and self._zlib.eof

    def _feed_zlib(self, data: bytes) -> Iterator[bytes]:
        while data:
            if self._zlib is None or (self._zlib.eof and self.name == "gzip" and data[:1] == b"\x1f"):
                self._members += 1
                if self._members > _MAX_MEMBERS:
                    # Each member costs a copy of the rest of its chunk: a stream of tiny ones is quadratic.
                    raise _CorruptStream(f"more than {_MAX_MEMBERS} concatenated gzip members")
                self._zlib = zlib.decompressobj(self._wbits(data))
            elif self._zlib.eof:
                return
            inflater = self._zlib
            while True:
                out = inflater.decompress(data, _STEP)
                data = inflater.unconsumed_tail
                if out:
                    yield out
                # A full step may leave output inside zlib: ask again until one falls short.
                if not data and len(out) < _STEP:
                    break
            data = inflater.unused_data if inflater.eof else b""

    def _wbits(self, data: bytes) -> int:
        if self.name == "gzip":
            return 16 + zlib.MAX_WBITS
        # RFC 1950's header names method 8; a raw deflate stream has no header.
        return zlib.MAX_WBITS if data[0] & 0x0F == 8 else -zlib.MAX_WBITS

    def _feed_brotli(self, data: bytes) -> Iterator[bytes]:
        inflater = self._brotli
        assert inflater is not None
        if inflater.is_finished():
            return
        out = inflater.process(data, output_buffer_limit=_STEP)
        # Brotli keeps input it has not inflated yet: ask again until it gives nothing more.
        while out or not inflater.can_accept_more_data():
            if out:
                yield out
            if inflater.is_finished():
                break
            out = inflater.process(b"", output_buffer_limit=_STEP)


def _redirect_target(url: str, current: str, location: str) -> str:
    target = urljoin(current, location.strip())
    if urlsplit(target).scheme.lower() not in ("http", "https"):
        raise FeedError(f"{url}: redirected to {target[:200]!r}, which is not http(s)", hint="only http(s) redirects are followed")
    return target


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
        # The web first: nearly every poll, and an http(s) location is never a local one.
        # A prefix test for the usual spelling: urlsplit's cache is small, and a miss per
        # poll costs more than the test.
        if url[:8].lower().startswith(("http://", "https://")) or urlsplit(url).scheme.lower() in ("http", "https"):
            return await self.http.fetch(url, validators, headers)
        if local_path(url) is not None:
            return await self.files.fetch(url, validators, headers)
        scheme = urlsplit(url).scheme.lower()
        raise FeedError(f"{url}: unsupported scheme {scheme!r}", hint="use http(s)://, file:// or a path")

    async def close(self) -> None:
        await self.http.close()
