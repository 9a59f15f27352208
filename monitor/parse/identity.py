"""Article identity: the canonical form of a link and the stable id of an entry.

The dedupe store keys on both :attr:`Article.id` and :attr:`Article.url`, so two rules
hold here:

* :func:`canonical_url` maps the many spellings of one article link (tracking
  parameters, ``#fragments``, ``HTTP://Example.COM:80``, shuffled query parameters) to
  one string. The same story carried by an RSS and an Atom feed therefore gets the same
  ``url`` even when the feeds' guids differ.
* :func:`article_id` is a fallback chain in the spirit of miniflux's entry hash: the
  entry's own guid/id, else the canonical link, else a digest of title and date.

:func:`article_link` decides which link an article is published with: only absolute
http(s) links. A relative link is resolved against a base (the feed's own http(s) URL,
else the site link the feed declares); one with nothing http(s) to resolve against,
and any other scheme (``javascript:``, ``data:``, ``file:``, ``mailto:``...), is
dropped with its reason, and the article goes on without a link.

Pure functions, standard library only.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from urllib.parse import SplitResult, unquote_plus, urljoin, urlsplit, urlunsplit

__all__ = [
    "LINK_NOT_HTTP",
    "LINK_RELATIVE",
    "TRACKING_PARAMS",
    "TRACKING_PREFIXES",
    "article_id",
    "article_link",
    "canonical_url",
    "feed_host",
    "http_base",
]

#: Why :func:`article_link` dropped a link: a scheme other than http(s)...
LINK_NOT_HTTP = "not_http"
#: ...or a relative link with no http(s) base to resolve it against.
LINK_RELATIVE = "relative"

#: Query parameters (compared case-insensitively) that only say where a click came from,
#: never which page to show. Dropped by :func:`canonical_url`.
TRACKING_PARAMS: frozenset[str] = frozenset(
    {
        # Ad click ids: Facebook, Google (gclid/dclid/gclsrc/gbraid/wbraid), Microsoft,
        # Yandex, Instagram, TikTok, Twitter/X.
        "fbclid", "gclid", "dclid", "gclsrc", "gbraid", "wbraid", "msclkid", "yclid",
        "igshid", "ttclid", "twclid",
        # Mailchimp, HubSpot, Marketo, Vero, Oracle Eloqua.
        "mc_cid", "mc_eid", "_hsenc", "_hsmi", "mkt_tok", "vero_id", "vero_conv", "elqtrackid",
        # Google Analytics cross-domain linker.
        "_ga", "_gl",
        # Publisher campaign/referral tags (CNN/WaPo "cmpid", NYT/Guardian "smid"/"CMP",
        # BBC/Reuters "at_*", AT Internet "xtor", Adobe "s_cid", "icid"/"ocid"/"ncid",
        # Webtrends "wt.mc_id" and heise's "wt_mc", comScore "ns_*", Outbrain/Taboola "obOrigUrl").
        "cmpid", "cmp", "smid", "smtyp", "icid", "ocid", "ncid", "s_cid", "xtor",
        "wt.mc_id", "wt.mc_ev", "wt_mc", "wt_zmc", "ns_mchannel", "ns_source", "ns_campaign", "ns_linkname",
        "ns_fee", "at_medium", "at_campaign", "at_custom1", "at_custom2", "at_custom3",
        "at_custom4", "oborigurl", "sr_share",
        # Generic referral markers. "ref" can in principle select content (a git ref), but
        # on article links it is overwhelmingly a referrer tag, and a false merge of two
        # such links is rarer than the duplicate alerts keeping it would cause.
        # Names like "source" or "src" are left alone: too often they do select content.
        "ref", "ref_src", "ref_url", "referrer",
    }
)  # fmt: skip

#: Query parameter prefixes that mark tracking parameters: Google Analytics campaign
#: tags (``utm_source``, ``utm_medium``...), Piwik/Matomo (``pk_``), Matomo (``mtm_``).
TRACKING_PREFIXES: tuple[str, ...] = ("utm_", "pk_", "mtm_")

_DEFAULT_PORTS = {"http": 80, "https": 443}


def canonical_url(url: str) -> str:
    """Return the canonical spelling of an http(s) article link.

    Lower-cases scheme and host, drops the default port, the ``#fragment``, empty
    ``?``, and tracking parameters (:data:`TRACKING_PARAMS`, :data:`TRACKING_PREFIXES`);
    sorts the remaining query parameters by name (stable, so repeated names keep their
    order) without re-encoding them; keeps the path's case, since paths are
    case-sensitive on most servers. An empty path becomes ``/``. Strings that are not
    absolute http(s) URLs (``tag:`` URIs, relative paths) are returned stripped but
    otherwise unchanged.
    """
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # an invalid port or IPv6 literal: not a URL we can rewrite
        return url
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        return url
    host = parts.hostname  # already lower-cased by urllib
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    if parts.username is not None or parts.password is not None:
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{netloc}"
    return urlunsplit(SplitResult(scheme, netloc, parts.path or "/", _clean_query(parts.query), ""))


def _clean_query(query: str) -> str:
    """Drop tracking parameters and sort the rest by name, keeping their raw encoding."""
    if not query:
        return ""
    kept: list[tuple[str, str]] = []
    for pair in query.split("&"):
        if not pair:
            continue
        name = unquote_plus(pair.partition("=")[0]).lower()
        if name in TRACKING_PARAMS or name.startswith(TRACKING_PREFIXES):
            continue
        kept.append((name, pair))
    kept.sort(key=lambda item: item[0])
    return "&".join(pair for _, pair in kept)


def http_base(url: str | None) -> str:
    """``url`` when it is an absolute http(s) URL with a host (a base links can resolve
    against), else ""."""
    if not url:
        return ""
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return ""
    return url if parts.scheme.lower() in _DEFAULT_PORTS and parts.hostname else ""


def article_link(link: str | None, base: str = "") -> tuple[str | None, str | None]:
    """The link an article is published with, and why it was dropped when it was.

    Returns ``(canonical http(s) link, None)``; ``(None, LINK_RELATIVE)`` for a relative
    link when ``base`` is not an http(s) URL; ``(None, LINK_NOT_HTTP)`` for any other
    scheme; ``(None, None)`` when there was no link.
    """
    link = link.strip() if link else ""
    if not link:
        return None, None
    try:
        parts = urlsplit(link)
        if not parts.scheme:
            base = http_base(base)
            if not base:
                return None, LINK_RELATIVE
            link = urljoin(base, link)
            parts = urlsplit(link)
        hostname = parts.hostname
    except ValueError:  # an invalid port or IPv6 literal
        return None, LINK_NOT_HTTP
    if parts.scheme.lower() not in _DEFAULT_PORTS or not hostname:
        return None, LINK_NOT_HTTP
    return canonical_url(link), None


def feed_host(feed_url: str) -> str:
    """Return the lower-cased host of a feed URL, or the stripped URL when it has none."""
    try:
        host = urlsplit(feed_url.strip()).hostname
    except ValueError:
        host = None
    return host or feed_url.strip()


def article_id(
    guid: str | None,
    link: str | None,
    title: str,
    published: datetime | None,
    *,
    feed_url: str | None = None,
) -> str:
    """Return the stable id of a feed entry: the first of guid, canonical link, digest.

    1. The entry's guid (RSS ``<guid>``, Atom ``<id>``, JSON Feed ``id``), stripped. A guid
       with a ``:`` in it (a URL, ``urn:uuid:...``, ``tag:...``) is taken as globally
       unique. One without (CMS counters like ``"12345"``) is only unique within its site,
       so it is prefixed with the host of ``feed_url``: two sites' item ``"1"`` must not
       collide, while two feeds of the same site (``/news.rss``, ``/sports.rss``) that
       carry the same post keep the same id and are deduplicated.
    2. Else the :func:`canonical_url` of the entry's link; a relative one (no ``:``) is
       prefixed with the feed's host like a guid without one.
    3. Else ``"sha256:"`` and the hex SHA-256 of the title and the ISO publication date,
       so an entry with neither guid nor link is still stable across polls.
    """
    if guid is not None and (guid := guid.strip()):
        if ":" in guid or not feed_url:
            return guid
        return f"{feed_host(feed_url)}:{guid}"
    if link is not None and (link := link.strip()):
        if ":" not in link and feed_url:
            return f"{feed_host(feed_url)}:{link}"
        return canonical_url(link)
    stamp = published.isoformat() if published is not None else ""
    digest = hashlib.sha256(f"{title}\x1f{stamp}".encode("utf-8", "surrogatepass")).hexdigest()
    return f"sha256:{digest}"
