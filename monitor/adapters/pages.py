"""The guarded fetcher of article pages, whose URLs come from (untrusted) feed content.

:class:`PageFetcher` fetches article pages for full-text matching. Their URLs come from
feed content anyone can write, so it refuses loopback, private, link-local, multicast
and other non-public addresses after DNS resolution (the check sits in the resolver the
connection itself uses, so a second lookup cannot swap the address) and again on every
redirect hop, unless the operator's allow-list names them (:class:`AddressPolicy`).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from monitor.adapters.http import SessionClient, read_bounded
from monitor.errors import FeedError
from monitor.fetch import FeedHttpError

__all__ = ["AddressPolicy", "BlockedAddress", "Page", "PageFetcher"]


class BlockedAddress(FeedError):
    """A page url resolved to an address the operator did not allow (SSRF guard)."""


_NOT_PUBLIC = "loopback, private, link-local, multicast, reserved and unspecified addresses"


class AddressPolicy:
    """Which IP addresses page fetches may connect to: public ones, plus the allow-list.

    ``allow`` holds networks (``10.1.0.0/16``), single addresses (``127.0.0.1``) or host
    names (``intranet.example``; the name as written in the url, any port).
    """

    def __init__(self, allow: Iterable[str] = ()) -> None:
        self.networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        self.hosts: set[str] = set()
        for entry in allow:
            entry = entry.strip()
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.hosts.add(entry.lower().rstrip("."))

    def host_allowed(self, host: str) -> bool:
        """The operator named this host itself: any address it resolves to is fine."""
        return host.lower().rstrip(".") in self.hosts

    def address_allowed(self, address: str) -> bool:
        """True for a public unicast address, or one inside an allowed network."""
        try:
            ip = ipaddress.ip_address(address.split("%", 1)[0])
        except ValueError:
            return False
        if any(ip in network for network in self.networks):
            return True
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
            if any(ip in network for network in self.networks):
                return True
        if not ip.is_global or ip.is_multicast or any(ip in network for network in _REFUSED):
            return False
        # NAT64, 6to4 and IPv4-compatible addresses reach the IPv4 address inside them.
        embedded = _embedded_ipv4(ip)
        return embedded is None or self.address_allowed(str(embedded))


#: Not public although some Python versions' ``is_global`` says otherwise.
_REFUSED = tuple(
    ipaddress.ip_network(n)
    for n in ("0.0.0.0/8", "100.64.0.0/10", "192.0.0.0/24", "198.18.0.0/15", "240.0.0.0/4", "::/96", "2001::/23", "2001:db8::/32")
)
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))


def _embedded_ipv4(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address a NAT64 or 6to4 IPv6 address leads to, if any."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.sixtofour is not None:
        return ip.sixtofour
    if any(ip in network for network in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


class _GuardedResolver(AbstractResolver):
    """Resolves through the system resolver and drops every address the policy refuses.

    The connector connects only to what this returns, so the address checked is the
    address used: no window for a rebinding DNS server to answer differently.
    """

    def __init__(self, policy: AddressPolicy) -> None:
        self._policy = policy
        self._inner = ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        if self._policy.host_allowed(host):
            return results
        allowed = [r for r in results if self._policy.address_allowed(r["host"])]
        if not allowed:
            refused = ", ".join(sorted({r["host"] for r in results}))
            raise OSError(f"{host} resolves only to refused addresses ({refused})")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


@dataclass(frozen=True, slots=True)
class Page:
    """One fetched article page."""

    url: str
    body: bytes
    content_type: str | None


class PageFetcher(SessionClient):
    """Fetches article pages for full-text matching, refusing non-public addresses."""

    _accept = "text/html,application/xhtml+xml;q=0.9,*/*;q=0.5"

    def __init__(
        self,
        *,
        policy: AddressPolicy | None = None,
        max_bytes: int = 5 * 1024 * 1024,
        connection_limit: int = 32,
        **options: Any,
    ) -> None:
        """``options``: the timeouts, ``max_redirects`` and ``user_agent`` of :class:`SessionClient`."""
        super().__init__(max_bytes=max_bytes, connection_limit=connection_limit, **options)
        self.policy = policy or AddressPolicy()

    def _connector(self) -> aiohttp.TCPConnector:
        # Every address is checked inside the resolver the connection itself uses.
        return aiohttp.TCPConnector(limit=self._connection_limit, ttl_dns_cache=60, resolver=_GuardedResolver(self.policy))

    def _session_options(self) -> dict[str, object]:
        # Proxies from the environment would make the address check meaningless.
        return {"trust_env": False}

    def check_url(self, url: str) -> None:
        """Refuse a url that is not http(s) or names a refused IP address literally.

        Host names are checked when they resolve (see :class:`_GuardedResolver`);
        literal addresses never reach a resolver, so they are checked here.
        """
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("http", "https"):
            raise BlockedAddress(f"{url[:200]}: not an http(s) url", hint="only http(s) article pages are fetched")
        host = parts.hostname
        if not host:
            raise BlockedAddress(f"{url[:200]}: no host in the url")
        if self.policy.host_allowed(host):
            return
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return
        if not self.policy.address_allowed(host):
            raise BlockedAddress(
                f"{url[:200]}: refused address {host}",
                hint=f"{_NOT_PUBLIC} are refused; name it in [fulltext] allow to permit it",
            )

    def _check(self, url: str) -> None:
        self.check_url(url)

    def _client_error(self, url: str, current: str, exc: aiohttp.ClientError) -> FeedError:
        cause = exc.os_error if isinstance(exc, aiohttp.ClientConnectorError) else None
        if isinstance(cause, OSError) and "refused addresses" in str(cause):
            return BlockedAddress(f"{current[:200]}: {cause}", hint=f"{_NOT_PUBLIC} are refused; name it in [fulltext] allow to permit it")
        return super()._client_error(url, current, exc)

    async def fetch(self, url: str) -> Page:
        """GET an article page, following redirects one hop at a time, every hop checked."""

        async def answer(response: aiohttp.ClientResponse, current: str, _moved_to: str | None, _started: float) -> Page:
            if response.status >= 400:
                raise FeedHttpError(url, response.status, response.reason or "")
            body = await read_bounded(response, url, self.max_bytes, "[fulltext] max_bytes")
            return Page(url=current, body=body, content_type=response.headers.get("Content-Type"))

        return await self._get(url, None, answer)
