"""A real aiohttp server on 127.0.0.1 that serves what broken and hostile feed servers serve.

Used by the HTTP transport tests and the hostile-server poll test. Every answer is made
by streaming, so a 200 MB body or a gzip bomb costs the server almost no memory.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from email.utils import formatdate
from functools import lru_cache

import brotli
from aiohttp import web

from tests.support import LocalServer

RSS = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>{title}</title><link>https://example.net/</link>
{items}
</channel></rss>"""

ITEM = """<item><title>{title}</title><link>https://example.net/{slug}</link><guid>urn:hostile:{slug}</guid>
<description>{text}</description></item>"""

ENTITY_BOMB = b"""<?xml version="1.0"?>
<!DOCTYPE rss [
<!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">
<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">
<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">
<!ENTITY d "&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;&c;">
<!ENTITY e "&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;&d;">
<!ENTITY f "&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;&e;">
<!ENTITY g "&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;&f;">
]>
<rss version="2.0"><channel><title>bomb</title>
<item><title>&g;</title><link>https://example.net/bomb</link><description>&g;</description></item>
</channel></rss>"""

HTML_PAGE = b"<!DOCTYPE html><html><head><title>Welcome</title></head><body><p>This is not a feed.</p></body></html>"

BAD_UTF8 = (
    b'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>bad \xff\xfe bytes</title>'
    b"<item><title>Caf\xe9 \xc3\x28 talks</title><link>https://example.net/bad-utf8</link>"
    b"<description>Ministers \x80\x81 met.</description></item></channel></rss>"
)

HUGE_BYTES = 200 * 1024 * 1024
BOMB_INFLATED = 256 * 1024 * 1024


def rss(title: str, items: list[tuple[str, str, str]]) -> bytes:
    """An RSS document with (slug, title, text) items."""
    body = "\n".join(ITEM.format(slug=slug, title=t, text=text) for slug, t, text in items)
    return RSS.format(title=title, items=body).encode()


@lru_cache(maxsize=1)
def gzip_bomb() -> bytes:
    """256 MiB of zeros as a ~250 KB gzip stream (made once per process)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1024 * 1024)
    parts = [compressor.compress(block) for _ in range(BOMB_INFLATED // len(block))]
    parts.append(compressor.flush())
    return b"".join(parts)


class HostileServer(LocalServer):
    """Serves the hostile paths below, plus healthy feeds the test registers in ``feeds``."""

    def __init__(self) -> None:
        self.feeds: dict[str, bytes] = {}
        #: Paths of feeds that publish a new item on every request (busy feeds).
        self.ticking: set[str] = set()
        self.hits: dict[str, int] = {}
        #: Monotonic times of the requests for each path.
        self.times: dict[str, list[float]] = {}
        self.headers: dict[str, list[dict[str, str]]] = {}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.hits[path] = self.hits.get(path, 0) + 1
        self.times.setdefault(path, []).append(asyncio.get_running_loop().time())
        self.headers.setdefault(path, []).append(dict(request.headers))
        if path in self.feeds:
            return web.Response(body=self.feeds[path], content_type="application/rss+xml")
        if path in self.ticking:
            count = self.hits[path]
            items = [(f"tick-{n}", f"Tick {n}", f"Item number {n} of a feed that never stops publishing.") for n in range(count)]
            return web.Response(body=rss("ticker", items[-20:]), content_type="application/rss+xml")
        handler = getattr(self, "_" + path.strip("/").replace("-", "_"), None)
        if handler is None:
            return web.Response(status=404, text="not found")
        return await handler(request)

    # -- the hostile answers ----------------------------------------------------------

    async def _slow(self, request: web.Request) -> web.StreamResponse:
        """A never-ending body, one byte every 100 ms."""
        response = web.StreamResponse(headers={"Content-Type": "application/rss+xml"})
        await response.prepare(request)
        await response.write(b'<?xml version="1.0"?><rss version="2.0"><channel><title>slow</title>')
        while True:
            await asyncio.sleep(0.1)
            await response.write(b" ")

    async def _silent(self, request: web.Request) -> web.StreamResponse:
        """Takes the request and never answers."""
        await asyncio.sleep(3600)
        return web.Response(status=204)

    async def _mute_body(self, request: web.Request) -> web.StreamResponse:
        """Headers and the start of a body, then silence."""
        response = web.StreamResponse(headers={"Content-Type": "application/rss+xml"})
        await response.prepare(request)
        await response.write(b'<?xml version="1.0"?><rss version="2.0"><channel>')
        await asyncio.sleep(3600)
        return response

    async def _huge(self, request: web.Request) -> web.StreamResponse:
        """200 MB, declared in Content-Length."""
        return await self._stream(request, HUGE_BYTES, declare=True)

    async def _huge_chunked(self, request: web.Request) -> web.StreamResponse:
        """200 MB, chunked: no length to refuse up front."""
        return await self._stream(request, HUGE_BYTES, declare=False)

    async def _stream(self, request: web.Request, size: int, *, declare: bool) -> web.StreamResponse:
        headers = {"Content-Type": "application/rss+xml"}
        if declare:
            headers["Content-Length"] = str(size)
        response = web.StreamResponse(headers=headers)
        if not declare:
            response.enable_chunked_encoding()
        await response.prepare(request)
        chunk = b"<!-- " + b"x" * (64 * 1024 - 9) + b" -->"
        sent = 0
        while sent < size:
            await response.write(chunk)
            sent += len(chunk)
        await response.write_eof()
        return response

    async def _gzip_bomb(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=gzip_bomb(), headers={"Content-Encoding": "gzip", "Content-Type": "application/rss+xml"})

    async def _entity_bomb(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=ENTITY_BOMB, content_type="application/rss+xml")

    async def _loop(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/loop-b")

    async def _loop_b(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPMovedPermanently("/loop")

    async def _rate_limited(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=429, text="slow down", headers={"Retry-After": "120"})

    async def _unavailable(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=503, text="maintenance", headers={"Retry-After": formatdate(usegmt=True)})

    async def _html(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=HTML_PAGE, content_type="text/html")

    async def _bad_utf8(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=BAD_UTF8, headers={"Content-Type": "application/rss+xml; charset=utf-8"})

    async def _empty(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=b"", content_type="application/rss+xml")

    async def _gone(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=410, text="gone")

    async def _always_304(self, request: web.Request) -> web.StreamResponse:
        """304 Not Modified to every request, conditional or not."""
        return web.Response(status=304, headers={"ETag": '"v1"'})

    async def _to_file(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("file:///etc/passwd")

    # -- well-behaved answers for the transport tests -----------------------------------

    async def _conditional(self, request: web.Request) -> web.StreamResponse:
        etag, modified = '"v1"', "Wed, 21 Oct 2026 07:28:00 GMT"
        if request.headers.get("If-None-Match") == etag or request.headers.get("If-Modified-Since") == modified:
            return web.Response(status=304, headers={"ETag": etag, "Cache-Control": "max-age=600"})
        body = rss("conditional", [("c1", "One", "First item")])
        return web.Response(body=body, headers={"ETag": etag, "Last-Modified": modified, "Content-Type": "application/rss+xml"})

    async def _encoded(self, request: web.Request) -> web.StreamResponse:
        body = rss("encoded", [("e1", "Encoded", "Compressed item")])
        encoding = request.query.get("with", "gzip")
        data = {"gzip": gzip.compress, "deflate": zlib.compress, "br": brotli.compress}[encoding](body)
        return web.Response(body=data, headers={"Content-Encoding": encoding, "Content-Type": "application/rss+xml"})

    async def _corrupt(self, request: web.Request) -> web.StreamResponse:
        """A feed whose compressed body is cut off (the HTTP answer itself is whole) or is not
        of its encoding at all."""
        body = rss("corrupt", [(f"k{n}", f"Corrupt {n}", "An item of a feed with a broken compressed body.") for n in range(40)])
        encoding = request.query.get("with", "gzip")
        data = {"gzip": gzip.compress, "deflate": zlib.compress, "br": brotli.compress}[encoding](body)
        data = data[: len(data) // 2] if request.query.get("how") == "truncated" else b"no compression here, " * 50
        return web.Response(body=data, headers={"Content-Encoding": encoding, "Content-Type": "application/rss+xml", "ETag": '"c1"'})

    async def _gzip_members(self, request: web.Request) -> web.StreamResponse:
        """Two gzip members (one body, as ``gzip -d`` reads them), or one and trailing bytes."""
        first = rss("members", [("m1", "Member", "First member")])
        after = b"\0\0\n" if request.query.get("tail") else gzip.compress(b"<!-- second member -->")
        return web.Response(body=gzip.compress(first) + after, headers={"Content-Encoding": "gzip", "Content-Type": "application/rss+xml"})

    async def _moved(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPMovedPermanently("/conditional")

    async def _temporary(self, request: web.Request) -> web.StreamResponse:
        raise web.HTTPTemporaryRedirect("/conditional")
