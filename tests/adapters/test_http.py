"""The HTTP feed transport against a real local server: conditional GET, encodings,
redirects, limits, timeouts and error statuses."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
import time

import pytest

from monitor import USER_AGENT
from monitor.adapters.http import HttpTransport
from monitor.errors import FeedError
from monitor.fetch import FeedHttpError, FeedTimeout, Validators
from tests.hostile_app import HostileServer

pytestmark = pytest.mark.integration

NONE = Validators()


@pytest.fixture
async def server():
    running = await HostileServer().start()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
async def transport():
    client = HttpTransport(timeout=3.0, connect_timeout=2.0, read_timeout=1.0, max_bytes=2 * 1024 * 1024, max_redirects=4)
    try:
        yield client
    finally:
        await client.close()


async def test_conditional_get_sends_validators_and_304_costs_no_body(server, transport):
    first = await transport.fetch(server.url("/conditional"), NONE, {})
    assert first.status == 200 and b"First item" in first.body
    assert first.etag == '"v1"' and first.last_modified

    second = await transport.fetch(server.url("/conditional"), first.validators, {})
    assert second.not_modified and second.body is None
    assert second.etag == '"v1"' and second.max_age == 600
    sent = server.headers["/conditional"][-1]
    assert sent["If-None-Match"] == '"v1"'
    assert sent["If-Modified-Since"] == first.last_modified


async def test_a_304_to_an_unconditional_request_is_an_error(server, transport):
    # Taken as "unchanged", such a feed was never read, and its health said all was well.
    with pytest.raises(FeedError, match="304 Not Modified to a request without If-None-Match"):
        await transport.fetch(server.url("/always-304"), NONE, {})
    answer = await transport.fetch(server.url("/always-304"), Validators(etag='"v1"'), {})
    assert answer.not_modified
    answer = await transport.fetch(server.url("/always-304"), NONE, {"if-none-match": '"v0"'})
    assert answer.not_modified


async def test_user_agent_names_product_and_url(server, transport):
    await transport.fetch(server.url("/conditional"), NONE, {})
    agent = server.headers["/conditional"][-1]["User-Agent"]
    assert agent == USER_AGENT and "news-monitor" in agent and "https://" in agent


async def test_per_feed_headers_are_sent(server, transport):
    await transport.fetch(server.url("/conditional"), NONE, {"Authorization": "Bearer x", "X-Feed": "1"})
    assert server.headers["/conditional"][-1]["X-Feed"] == "1"


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
async def test_compressed_bodies_are_decoded(server, transport, encoding):
    result = await transport.fetch(server.url(f"/encoded?with={encoding}"), NONE, {})
    assert b"Compressed item" in result.body
    assert encoding in server.headers["/encoded"][-1]["Accept-Encoding"]


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
@pytest.mark.parametrize("how", ["truncated", "garbage"])
async def test_a_corrupt_compressed_body_is_reported_as_such(server, transport, encoding, how):
    # aiohttp handed back the first half of a cut-off gzip or brotli stream without a word
    # (a lenient parser took it for the whole feed), and a garbage one as "cut off or malformed".
    url = server.url(f"/corrupt?with={encoding}&how={how}")
    with pytest.raises(FeedError) as caught:
        await transport.fetch(url, NONE, {})
    message = str(caught.value)
    assert message.startswith(f"{url}: the compressed body is corrupt (Content-Encoding: {encoding}): ")
    name = {"br": "brotli"}.get(encoding, encoding)
    if how == "truncated":
        assert f"it ends before its {name} stream does" in message
    else:
        assert f"not a valid {name} stream" in message
    assert "tell the feed's operator" in message


async def test_concatenated_gzip_members_are_one_body_and_bytes_after_the_stream_are_ignored(server, transport):
    members = await transport.fetch(server.url("/gzip-members"), NONE, {})
    assert b"First member" in members.body and members.body.endswith(b"<!-- second member -->")
    trailing = await transport.fetch(server.url("/gzip-members?tail=1"), NONE, {})
    assert b"First member" in trailing.body and trailing.body.endswith(b"</rss>")


async def test_permanent_redirect_reports_new_address(server, transport):
    result = await transport.fetch(server.url("/moved"), NONE, {})
    assert result.moved_to == server.url("/conditional")


async def test_temporary_redirect_keeps_old_address(server, transport):
    result = await transport.fetch(server.url("/temporary"), NONE, {})
    assert result.status == 200 and result.moved_to is None


async def test_redirect_loop_is_bounded(server, transport):
    with pytest.raises(FeedError, match="more than 4 redirects") as caught:
        await transport.fetch(server.url("/loop"), NONE, {})
    assert server.url("/loop") in str(caught.value)
    assert server.hits["/loop"] + server.hits["/loop-b"] == 5


async def test_redirect_to_another_scheme_is_refused(server, transport):
    with pytest.raises(FeedError, match="not http"):
        await transport.fetch(server.url("/to-file"), NONE, {})


async def test_gone_is_reported(server, transport):
    with pytest.raises(FeedHttpError) as caught:
        await transport.fetch(server.url("/gone"), NONE, {})
    assert caught.value.gone and "disabled" in str(caught.value)


async def test_retry_after_is_read_on_429_and_503(server, transport):
    with pytest.raises(FeedHttpError) as limited:
        await transport.fetch(server.url("/rate-limited"), NONE, {})
    assert limited.value.status == 429 and limited.value.retry_after == 120
    with pytest.raises(FeedHttpError) as unavailable:
        await transport.fetch(server.url("/unavailable"), NONE, {})
    assert unavailable.value.status == 503 and unavailable.value.retry_after is not None
    assert unavailable.value.retry_after <= 1


def test_a_retry_after_of_other_digits_is_no_retry_after_not_an_error():
    # aiohttp hands the header's UTF-8 over as text: '²' passes str.isdigit(), not float().
    from monitor.fetch import retry_after_seconds

    assert retry_after_seconds("\u00b2") is None and retry_after_seconds(" 120 ") == 120.0


def test_a_retry_after_of_hundreds_of_digits_is_a_long_wait_not_a_crash():
    # float() made it infinity and the error's hint raised OverflowError: the poll crashed,
    # nothing was recorded, and the feed was polled again at its interval, not backed off.
    from monitor.fetch import retry_after_seconds

    seconds = retry_after_seconds("9" * 400)
    assert seconds is not None and 86_400 < seconds < float("inf")
    error = FeedHttpError("https://example.org/feed", 429, "Too Many Requests", retry_after=seconds)
    assert "the next poll is in 24h00m" in str(error)


def test_retry_after_hint_reads_as_a_duration_and_names_the_cap():
    """An operator reads the hint at 3 a.m.: '1157d09h', never '1e+08s', and how long the
    monitor will really wait (docs/polling.md: Retry-After is honoured up to 24 h)."""
    polite = FeedHttpError("https://example.org/feed", 429, "Too Many Requests", retry_after=120.0)
    assert "come back in 2m00s)" in str(polite)
    absurd = FeedHttpError("https://example.org/feed", 503, "Service Unavailable", retry_after=99_999_999.0)
    assert "e+" not in str(absurd)
    assert "come back in 1157d09h; the next poll is in 24h00m" in str(absurd)


async def test_declared_huge_body_is_refused_before_reading(server, transport):
    started = time.monotonic()
    with pytest.raises(FeedError, match="over the 2097152-byte limit"):
        await transport.fetch(server.url("/huge"), NONE, {})
    assert time.monotonic() - started < 2


async def test_undeclared_huge_body_is_aborted_while_streaming(server, transport):
    with pytest.raises(FeedError, match="exceeds the 2097152-byte limit"):
        await transport.fetch(server.url("/huge-chunked"), NONE, {})


async def test_gzip_bomb_stops_at_the_limit(server):
    # Time limits far off: the size limit is under test, not how fast a busy machine inflates.
    client = HttpTransport(timeout=60.0, connect_timeout=10.0, read_timeout=30.0, max_bytes=2 * 1024 * 1024, max_redirects=4)
    try:
        with pytest.raises(FeedError, match="exceeds the 2097152-byte limit"):
            await client.fetch(server.url("/gzip-bomb"), NONE, {})
    finally:
        await client.close()


async def test_never_ending_body_times_out(server, transport):
    started = time.monotonic()
    with pytest.raises(FeedTimeout) as caught:
        await transport.fetch(server.url("/slow"), NONE, {})
    assert 2.5 <= time.monotonic() - started < 15
    assert server.url("/slow") in str(caught.value)


@pytest.mark.parametrize(("path", "silence"), [("/silent", 2.0), ("/mute-body", 1.0)])
async def test_a_silent_server_is_abandoned_at_the_read_timeout(server, transport, path, silence):
    """No answer at all, or headers and then nothing: abandoned after read_timeout (1 s;
    the first byte may take connect_timeout, 2 s), well before the total timeout (3 s),
    saying how long it heard nothing; the transport goes on working."""
    started = time.monotonic()
    with pytest.raises(FeedTimeout, match=r"nothing from the server for \d+\.\ds") as caught:
        await transport.fetch(server.url(path), NONE, {})
    elapsed = time.monotonic() - started
    assert silence <= elapsed < 10  # the message tells the read timeout from the total one
    said = float(re.search(r"for (\d+\.\d)s", str(caught.value)).group(1))  # type: ignore[union-attr]
    assert silence <= said <= elapsed + 0.05
    assert server.url(path) in str(caught.value)
    again = await transport.fetch(server.url("/conditional"), NONE, {})
    assert again.status == 200


async def test_a_fetch_cancelled_by_its_caller_stays_cancelled(server, transport):
    """The read-timeout watch turns only its own cancellations into FeedTimeout."""
    fetch = asyncio.ensure_future(transport.fetch(server.url("/silent"), NONE, {}))
    await asyncio.sleep(0.3)
    fetch.cancel()
    with pytest.raises(asyncio.CancelledError):
        await fetch


async def test_unreachable_port_names_the_url(transport):
    from monitor.adapters.broker import free_port

    url = f"http://127.0.0.1:{free_port()}/feed"
    with pytest.raises(FeedError) as caught:
        await transport.fetch(url, NONE, {})
    assert url in str(caught.value)


async def test_the_daemon_transport_routes_by_scheme(tmp_path, server):
    """http(s) goes to aiohttp, a path or file:// to the disk, anything else is refused by name."""
    from monitor.adapters.http import FileTransport, RoutingTransport

    feed = tmp_path / "feed.rss"
    feed.write_bytes(b"<rss version='2.0'><channel><title>t</title></channel></rss>")
    routing = RoutingTransport(HttpTransport(), FileTransport(max_bytes=1_000_000))
    try:
        for location in (str(feed), feed.as_uri()):
            result = await routing.fetch(location, Validators(None, None), {})
            assert result.body == feed.read_bytes()
        address = server.url("/conditional")
        # The usual spelling, an upper-case scheme, and a stray leading space (urlsplit's rules).
        for location in (address, "HTTP" + address[4:], " " + address):
            web = await routing.fetch(location, Validators(None, None), {})
            assert web.status == 200 and web.body, location
        with pytest.raises(FeedError, match="unsupported scheme 'ftp'"):
            await routing.fetch("ftp://example.org/feed.rss", Validators(None, None), {})
    finally:
        await routing.close()


async def _raw_server(answer):
    """A loopback TCP server that reads a request's head and does ``answer(writer)``."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            await reader.readuntil(b"\r\n\r\n")
            answer(writer)
            await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def _reset(writer: asyncio.StreamWriter) -> None:
    # SO_LINGER 0: closing sends a TCP reset rather than a clean end.
    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (None, "cannot connect to 127.0.0.1:{port}: Connection refused"),
        (lambda w: w.close(), "the server closed the connection before it answered"),
        (_reset, "Connection reset by peer"),
        (
            lambda w: w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nabc"),
            "the body was cut off or malformed: Not enough data to satisfy content length header (received 3 of 1000 bytes)",
        ),
        (
            lambda w: w.write(b"NOT HTTP AT ALL\r\n\r\n"),
            "invalid HTTP answer: Bad status line: Expected HTTP/, RTSP/ or ICE/: b'NOT HTTP AT ALL'",
        ),
    ],
    ids=["refused", "closed", "reset", "cut off", "not http"],
)
async def test_a_failed_fetch_says_what_failed_in_words(transport, answer, expected):
    # Before: aiohttp's class and nested reprs, e.g. "ClientConnectorError: Cannot connect to host
    # 127.0.0.1:P ssl:default [Connect call failed ('127.0.0.1', P)]", "ClientOSError: [Errno 104] ...",
    # or a "ClientResponseError: 400, message=..." spread over five lines.
    from monitor.adapters.broker import free_port

    running = await _raw_server(answer) if answer is not None else None
    port = running.sockets[0].getsockname()[1] if running is not None else free_port()
    url = f"http://127.0.0.1:{port}/feed"
    try:
        with pytest.raises(FeedError) as caught:
            await transport.fetch(url, NONE, {})
    finally:
        if running is not None:
            running.close()
    assert str(caught.value) == f"{url}: {expected.format(port=port)} (the server is unreachable or answered badly; it is retried later)"


async def test_a_tls_failure_says_what_failed_without_python_source_lines(transport):
    # An https url to a server that answers in plain HTTP: OpenSSL's words, not CPython's
    # "(_ssl.c:1006)" after them (docs/operations.md: never Python's vocabulary).
    async def plain(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
            await reader.read(1)
        writer.close()

    running = await asyncio.start_server(plain, "127.0.0.1", 0)
    port = running.sockets[0].getsockname()[1]
    url = f"https://127.0.0.1:{port}/feed"
    try:
        with pytest.raises(FeedError) as caught:
            await transport.fetch(url, NONE, {})
    finally:
        running.close()
    assert str(caught.value).startswith(f"{url}: TLS with 127.0.0.1:{port} failed: [SSL: WRONG_VERSION_NUMBER] wrong version number (")
    assert "_ssl.c" not in str(caught.value)
