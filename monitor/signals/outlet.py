"""The outlet of an article: who published it, as one comparable name.

The outlet is the *registrable domain* of the article's link (``bbc.co.uk`` for
``https://www.bbc.co.uk/news/...``): the public suffix and one label more, by the Public
Suffix List, private suffixes included (``foo.blogspot.com`` and ``bar.blogspot.com``
are two outlets). The list is the snapshot bundled with ``tldextract``: nothing is
downloaded, at start-up or ever.

Fallbacks, in order (docs/signals.md): the link's registrable domain; the feed's
registrable domain; the feed's host as it is (an IP address, ``localhost``: no
registrable domain); the link's host; for a feed read from a file, None.
"""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlsplit

import tldextract

__all__ = ["outlet_of", "registrable_domain"]

# suffix_list_urls=(): the bundled snapshot only, never a download; cache_dir=None: no
# cache files written next to the state.
_EXTRACT = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, include_psl_private_domains=True)


def _host(url: str | None) -> str:
    if not url:
        return ""
    if url.startswith(("https://", "http://")):
        # The common case without urlsplit (a third of the bookkeeping per alert otherwise).
        authority = url.split("/", 3)[2]
        if "@" not in authority and "[" not in authority:
            return authority.partition(":")[0].rstrip(".").lower()
    return _parsed_host(url)


def _parsed_host(url: str) -> str:
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return ""
    return host.rstrip(".").lower()


@lru_cache(maxsize=4096)
def registrable_domain(host: str) -> str:
    """The registrable domain of a host name ("" for an IP address, a bare name, a suffix)."""
    if not host:
        return ""
    result = _EXTRACT.extract_str(host)
    return result.top_domain_under_public_suffix.lower() if result.domain and result.suffix else ""


def outlet_of(url: str | None, feed_url: str) -> str | None:
    """The outlet of an article with link ``url`` read from ``feed_url`` (see the module docstring)."""
    if url and url.startswith("https://"):
        # The common case: one split and one cached look-up of the link's authority.
        outlet = _authority_domain(url.split("/", 3)[2])
        if outlet:
            return outlet
    link_host = _host(url)
    outlet = registrable_domain(link_host)
    if outlet:
        return outlet
    feed_host = _host(feed_url)
    return registrable_domain(feed_host) or feed_host or link_host or None


@lru_cache(maxsize=4096)
def _authority_domain(authority: str) -> str:
    """The registrable domain of an https link's authority (``""`` if it has none)."""
    return registrable_domain(_host(f"https://{authority}/"))
