"""Full article text: the guarded page fetcher and full-text matching in the daemon.

The page fetcher takes its urls from feed content anyone can write, so it must never be
steered to loopback, private, link-local, multicast or unspecified addresses: not by a
literal address, not by a name that resolves to one, not by a redirect. Every refusal
here is proved against a real page server on loopback that would answer if the guard
let the request through (it counts every request it receives).

The daemon tests run a feed with ``fulltext = true`` against a local feed server and a
local page server (allow-listed), with the real broker: a hit only the page has is
reported in ``body``; a page that fails leaves the feed's own text to match.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import pytest
from aiohttp import web

from monitor.adapters.pages import AddressPolicy, BlockedAddress, PageFetcher
from monitor.adapters.parser_pool import ParserPool
from monitor.enrich.fulltext import FulltextEnricher, extract_main_text
from monitor.errors import FeedError
from monitor.fetch import FeedHttpError, FeedTimeout
from monitor.model import Article
from monitor.worker import Monitor
from tests.support import DATA, make_settings, read_alerts

pytestmark = pytest.mark.integration

PAGES = DATA / "pages"
ARTICLE = (PAGES / "shipping-article.html").read_bytes()
#: Words only the article page has (the feed's teaser never mentions them).
PAGE_ONLY = "imposed sanctions on eleven tankers"


class PageServer:
    """A real aiohttp server answering on 127.0.0.1 and 127.0.0.2 (two ports, one app)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        self._runner: web.AppRunner | None = None
        self.ports: dict[str, int] = {}

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.ports[host]}{path}"

    def name_url(self, name: str, path: str, host: str = "127.0.0.1") -> str:
        """A url naming ``host``'s port through another host name (e.g. localhost)."""
        return f"http://{name}:{self.ports[host]}{path}"

    def hits(self, path: str) -> int:
        return sum(1 for _host, p in self.requests if p == path)

    async def start(self) -> PageServer:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        for host in ("127.0.0.1", "127.0.0.2"):
            site = web.TCPSite(self._runner, host, 0)
            await site.start()
            self.ports[host] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.host, request.path))
        path = request.path
        if path.startswith("/article"):
            return web.Response(body=ARTICLE, content_type="text/html", charset="utf-8")
        if path == "/redirect":
            raise web.HTTPFound(request.query["to"])
        if path == "/big":
            filler = b"<p>" + b"Filler paragraph about nothing at all. " * 40 + b"</p>\n"
            return web.Response(body=ARTICLE.replace(b"<footer>", filler * 200 + b"<footer>"), content_type="text/html")
        if path == "/slow":
            response = web.StreamResponse(headers={"Content-Type": "text/html"})
            await response.prepare(request)
            await response.write(b"<html><body><p>")
            while True:
                await asyncio.sleep(0.1)
                await response.write(b" ")
        if path == "/pdf":
            text = b"The Treasury imposed sanctions on eleven tankers carrying Iranian oil. " * 20
            return web.Response(body=b"%PDF-1.4\n" + text + b"\n%%EOF", content_type="application/pdf")
        if path == "/plain":
            text = "The Treasury imposed sanctions on eleven tankers carrying Iranian oil. " * 20
            return web.Response(text=text, content_type="text/plain")
        if path == "/stub":
            return web.Response(body=b"<html><body><p>Subscribe to read.</p></body></html>", content_type="text/html")
        return web.Response(status=404, text="not found")


@pytest.fixture
async def pages():
    server = await PageServer().start()
    try:
        yield server
    finally:
        await server.stop()


def _fetcher(*allow: str, **options) -> PageFetcher:
    options.setdefault("timeout", 3.0)
    options.setdefault("connect_timeout", 2.0)
    return PageFetcher(policy=AddressPolicy(allow), **options)


# -- the address guard --------------------------------------------------------------------

#: Literal addresses of every refused kind. None of them is ever connected to: the check
#: comes before the connection (10.0.0.1 and friends would hang until the connect timeout).
REFUSED_LITERALS = [
    "127.0.0.1",
    "127.8.9.10",
    "10.0.0.1",
    "10.255.255.254",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "224.0.0.1",
    "239.255.255.250",
    "0.0.0.0",
    "255.255.255.255",
    "[::1]",
    "[::]",
    "[fe80::1]",
    "[fc00::1]",
    "[ff02::1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:10.0.0.1]",
    "[::ffff:169.254.169.254]",
    # IPv4 embedded in IPv6 by NAT64, 6to4 and the deprecated IPv4-compatible form.
    "[64:ff9b::7f00:1]",
    "[2002:7f00:1::]",
    "[2002:a9fe:a9fe::]",
    "[::127.0.0.1]",
]


@pytest.mark.parametrize("host", REFUSED_LITERALS)
async def test_literal_non_public_addresses_are_refused_before_connecting(host):
    fetcher = _fetcher()
    try:
        with pytest.raises(BlockedAddress) as caught:
            await asyncio.wait_for(fetcher.fetch(f"http://{host}:8080/latest"), timeout=1.5)
    finally:
        await fetcher.close()
    message = str(caught.value)
    assert "refused" in message and "[fulltext] allow" in message


#: Names the system resolver turns into 127.0.0.1: the check must happen after resolution.
LOOPBACK_NAMES = ["localhost", "LOCALHOST", "0x7f.0.0.1"]


@pytest.mark.parametrize("name", LOOPBACK_NAMES)
async def test_host_names_resolving_to_loopback_are_refused(pages, name):
    fetcher = _fetcher()
    try:
        with pytest.raises(BlockedAddress) as caught:
            await fetcher.fetch(pages.name_url(name, "/article"))
    finally:
        await fetcher.close()
    assert "resolves only to refused addresses (127.0.0.1)" in str(caught.value)
    assert pages.requests == [], "the guarded fetcher reached the loopback server"


@pytest.mark.parametrize("name", ["2130706433", "127.1", "0177.0.0.1"])
async def test_non_canonical_loopback_numbers_never_reach_the_server(pages, name):
    # getaddrinfo would turn these into 127.0.0.1; aiohttp refuses them before that.
    fetcher = _fetcher()
    try:
        with pytest.raises(FeedError):
            await fetcher.fetch(pages.name_url(name, "/article"))
    finally:
        await fetcher.close()
    assert pages.requests == []


async def test_redirect_to_a_loopback_address_is_refused_after_an_allowed_first_hop(pages):
    # The operator allowed the name "localhost" (the first hop); the redirect's literal
    # 127.0.0.1 is a different, unallowed target and must be refused before connecting.
    fetcher = _fetcher("localhost")
    secret = pages.url("/article-secret")
    try:
        with pytest.raises(BlockedAddress) as caught:
            await fetcher.fetch(pages.name_url("localhost", f"/redirect?to={secret}"))
    finally:
        await fetcher.close()
    assert "127.0.0.1" in str(caught.value)
    assert pages.hits("/redirect") == 1
    assert pages.hits("/article-secret") == 0


async def test_redirect_to_a_name_resolving_to_loopback_is_refused_at_resolution(pages):
    # First hop: 127.0.0.2, allowed by address. The redirect names "localhost", which
    # resolves to 127.0.0.1 (not allowed): refused by the resolver the connection uses.
    fetcher = _fetcher("127.0.0.2")
    secret = pages.name_url("localhost", "/article-secret")
    try:
        with pytest.raises(BlockedAddress) as caught:
            await fetcher.fetch(pages.url(f"/redirect?to={secret}", host="127.0.0.2"))
    finally:
        await fetcher.close()
    assert "resolves only to refused addresses" in str(caught.value)
    assert pages.hits("/redirect") == 1
    assert pages.hits("/article-secret") == 0


async def test_redirect_to_another_scheme_is_refused(pages):
    fetcher = _fetcher("127.0.0.1")
    try:
        with pytest.raises(FeedError, match="not http"):
            await fetcher.fetch(pages.url("/redirect?to=file:///etc/passwd"))
    finally:
        await fetcher.close()


@pytest.mark.parametrize(
    ("allow", "host", "name"),
    [
        ("127.0.0.0/8", "127.0.0.1", "127.0.0.1"),
        ("127.0.0.1", "127.0.0.1", "127.0.0.1"),
        ("127.0.0.2", "127.0.0.2", "127.0.0.2"),
        ("localhost", "127.0.0.1", "localhost"),
    ],
)
async def test_allow_list_admits_the_named_network_address_or_host(pages, allow, host, name):
    fetcher = _fetcher(allow)
    try:
        page = await fetcher.fetch(pages.name_url(name, "/article", host=host))
    finally:
        await fetcher.close()
    assert page.body == ARTICLE
    assert pages.hits("/article") == 1


async def test_allowing_one_address_does_not_admit_its_neighbour(pages):
    fetcher = _fetcher("127.0.0.2")
    try:
        with pytest.raises(BlockedAddress):
            await fetcher.fetch(pages.url("/article"))
    finally:
        await fetcher.close()
    assert pages.requests == []


def test_address_policy_admits_public_addresses_only():
    policy = AddressPolicy()
    for public in ("93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:93.184.216.34"):
        assert policy.address_allowed(public), public
    for refused in ("127.0.0.1", "10.1.2.3", "fe80::1%eth0", "::ffff:192.168.0.1", "64:ff9b::a00:1", "not an address"):
        assert not policy.address_allowed(refused), refused


# -- page failures ---------------------------------------------------------------------------


async def test_page_errors_are_feed_errors_naming_the_url(pages):
    fetcher = _fetcher("127.0.0.1", timeout=1.0, max_bytes=64 * 1024)
    try:
        with pytest.raises(FeedHttpError) as missing:
            await fetcher.fetch(pages.url("/missing"))
        with pytest.raises(FeedError, match="limit") as big:
            await fetcher.fetch(pages.url("/big"))
        with pytest.raises(FeedTimeout) as slow:
            await fetcher.fetch(pages.url("/slow"))
    finally:
        await fetcher.close()
    assert missing.value.status == 404 and pages.url("/missing") in str(missing.value)
    assert pages.url("/big") in str(big.value)
    assert pages.url("/slow") in str(slow.value)


async def test_enricher_uses_page_text_and_falls_back_on_failure(pages):
    fetcher = _fetcher("127.0.0.1", timeout=1.0, max_bytes=64 * 1024)
    pool = ParserPool(workers=0, timeout=10.0)
    enricher = FulltextEnricher(fetcher, pool.run, min_chars=200)
    teaser = Article(id="a", feed_url="http://feeds.example/rss", title="Tanker network targeted", summary="Read the story.")
    try:
        articles = [
            replace(teaser, id=path, url=pages.url(path))
            for path in ("/article", "/missing", "/big", "/slow", "/pdf", "/plain", "/stub")
        ]
        enriched = await enricher.enrich_all(articles)
    finally:
        await fetcher.close()
        pool.close()
    by_id = {article.id: article for article in enriched}
    assert PAGE_ONLY in by_id["/article"].body and by_id["/article"].fulltext_field == "body"
    # Each failure leaves the article exactly as the feed gave it.
    for path in ("/missing", "/big", "/slow", "/pdf", "/plain", "/stub"):
        original = next(a for a in articles if a.id == path)
        assert by_id[path] == original, f"{path}: {by_id[path].body[:80]!r}"
    assert enricher.stats.fetched == 1 and enricher.stats.failed == 6


def test_extraction_keeps_the_article_and_drops_the_page_furniture():
    text = extract_main_text(ARTICLE, "https://gazette.example/world/tankers")
    assert PAGE_ONLY in text
    assert "Sign up for our morning briefing" not in text
    assert "Ten recipes for autumn" not in text
    assert "All rights reserved" not in text


# -- the daemon ------------------------------------------------------------------------------

FEED = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Gazette</title><link>https://gazette.example/</link>
{items}
</channel></rss>"""

ITEM = """<item><title>{title}</title><link>{link}</link><guid isPermaLink="false">{guid}</guid>
<pubDate>Thu, 14 Aug 2025 16:30:00 +0000</pubDate><description>{text}</description></item>"""


def _feed(items: list[tuple[str, str, str, str]]) -> str:
    return FEED.format(items="\n".join(ITEM.format(guid=g, title=t, link=link, text=x) for g, t, link, x in items))


async def test_fulltext_feed_alerts_on_text_only_the_page_has(broker, feed_server, pages, tmp_path):
    article = pages.url("/article/tankers")
    url = feed_server.serve(
        "/gazette.rss",
        _feed([("urn:gazette:1", "Tanker network targeted", article, "Officials acted on Thursday against a group of ships.")]),
    )
    settings = make_settings(
        tmp_path,
        broker.bootstrap_servers,
        [{"url": url, "fulltext": True}],
        overrides={"fulltext": {"allow": ("127.0.0.1",), "timeout": 5.0}},
    )

    summary = await Monitor(settings).run(once=True, handle_signals=False)

    assert not summary.failed
    assert dict(summary.alerts_by_topic) == {"alerts.sanctions": 1}
    assert pages.hits("/article/tankers") == 1
    (alert,) = await read_alerts(broker.bootstrap_servers, [url], ["alerts.sanctions"], expect=1)
    assert alert["rule_id"] == "sanctions"
    assert alert["matches"] and {hit["field"] for hit in alert["matches"]} == {"body"}
    assert any(hit["text"].lower() == "sanctions" for hit in alert["matches"])

    # A second run: the entry is unchanged in the feed, so its page is not fetched again.
    again = await Monitor(settings).run(once=True, handle_signals=False)
    assert sum(again.alerts_by_topic.values()) == 0
    assert pages.hits("/article/tankers") == 1


async def test_without_fulltext_the_teaser_alone_does_not_alert(broker, feed_server, pages, tmp_path):
    url = feed_server.serve(
        "/teaser.rss",
        _feed([("urn:gazette:2", "Tanker network targeted", pages.url("/article/t2"), "Officials acted on Thursday against a group of ships.")]),
    )
    settings = make_settings(tmp_path, broker.bootstrap_servers, [url], overrides={"fulltext": {"allow": ("127.0.0.1",)}})
    summary = await Monitor(settings).run(once=True, handle_signals=False)
    assert summary.new_articles == 1 and sum(summary.alerts_by_topic.values()) == 0
    assert pages.hits("/article/t2") == 0


async def test_failed_pages_fall_back_to_the_feed_text_and_still_alert(broker, feed_server, pages, tmp_path):
    # Six different stories (distinct texts, so the story index keeps them apart).
    teasers = [
        "The European Union agreed new sanctions against Russia on Friday, targeting oil exports and banks.",
        "Washington imposed sanctions on two Iranian oil brokers accused of evading export rules.",
        "Britain froze the assets of Belarus officials it blames for a crackdown on protesters.",
        "Canada announced sanctions on Venezuela's state oil company after the disputed vote.",
        "Japan joined partners in new sanctions on North Korea over its missile launches this week.",
        "Switzerland adopted the latest EU sanctions on Russia's diamond trade, its government said.",
    ]
    paths = ["/missing", "/big", "/slow", "/pdf", "/stub"]
    items = [(f"urn:gazette:fb{i}", f"Sanctions story {i}", pages.url(path), teasers[i]) for i, path in enumerate(paths)]
    # Only 127.0.0.1 is allowed here: the address guard's refusal is one more failure.
    refused = ("urn:gazette:refused", "Sanctions story refused", pages.url("/article/refused", host="127.0.0.2"), teasers[-1])
    url = feed_server.serve("/fallback.rss", _feed([*items, refused]))
    settings = make_settings(
        tmp_path,
        broker.bootstrap_servers,
        [{"url": url, "fulltext": True}],
        overrides={"fulltext": {"allow": ("127.0.0.1",), "timeout": 1.0, "max_bytes": 64 * 1024}},
    )

    summary = await Monitor(settings).run(once=True, handle_signals=False)

    assert not summary.failed
    assert summary.new_articles == len(paths) + 1
    assert dict(summary.alerts_by_topic) == {"alerts.sanctions": len(paths) + 1}
    alerts = await read_alerts(broker.bootstrap_servers, [url], ["alerts.sanctions"], expect=len(paths) + 1)
    assert len(alerts) == len(paths) + 1
    for alert in alerts:
        # Matched in the feed's own text: the page contributed nothing.
        assert {hit["field"] for hit in alert["matches"]} <= {"title", "summary"}
    assert pages.hits("/article/refused") == 0
