"""Secrets in URLs: what of a feed URL may leave the process, and how the rest is masked.

A feed URL can carry credentials: user-info (``https://user:password@host/feed``) or a
secret query parameter (``?token=...``, ``&apikey=...``). The real URL is only ever
used to fetch the feed; everywhere it leaves the process (alerts and their
``ce_source`` header, the articles and feed-health topics, log lines, metric labels,
the status page and ``/status.json``, ``news-monitor status``, the ``run --once``
summary) it is shown masked, by one rule:

* user-info becomes ``***`` (``https://***@host/feed``);
* the value of every secret-looking query parameter becomes ``***``
  (``?token=***&page=2``); the parameter's name and every other parameter stay, so a
  masked URL still says which feed it is.

A parameter is secret when its name (percent-decoded, case-insensitive) is on the list
(:data:`DEFAULT_SECRET_PARAMS`, or ``[feeds] redact_params``), or one of the words in
its name is, or ends with a listed name: words are split at ``_``, ``-``, ``.`` and at
a lower-to-upper case change, so ``access_token``, ``X-Amz-Signature``, ``apiKey``
and ``authtoken`` are secret and ``author``, ``keyword`` and ``page`` are not.

A secret elsewhere in a URL (in its path: ``/feeds/<key>/rss``) cannot be recognised:
send it in a header instead (``[[feeds.feed]] headers``), which never leaves the process.

Pure, standard library only. The list is process-wide (:func:`configure`), like the
logging set-up: the CLI and the daemon set it from the settings at start.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path
from urllib.parse import SplitResult, unquote, urlsplit, urlunsplit

__all__ = [
    "DEFAULT_SECRET_PARAMS",
    "MASK",
    "configure",
    "is_secret_param",
    "link_base",
    "mask_url",
    "public_feed_url",
    "scrub",
    "secret_params",
]

#: Query parameter names whose values never leave the process (see the module docstring).
DEFAULT_SECRET_PARAMS: tuple[str, ...] = (
    "token", "access_token", "auth", "authorization", "key", "apikey", "api_key",
    "password", "passwd", "pwd", "secret", "sig", "signature", "credential", "credentials",
)  # fmt: skip

MASK = "***"

# scheme://user-info@ : the user-info runs to the last "@" before the host ends. Quotes
# and backslashes end it too, so a URL inside JSON text never swallows its neighbours.
_USERINFO = re.compile(r"(?P<scheme>\b[a-z][a-z0-9+.-]*://)[^/?#\s\"'\\<>]*@", re.IGNORECASE)
# A value ends at the next delimiter; in text, a ":", "," or ")" right before a space or the
# end is the sentence's ("<url>: HTTP 410 Gone"), not the value's, and stays.
_PARAM = re.compile(r"(?P<lead>[?&;](?P<name>[^=&#;?\s\"'\\<>]+)=)(?P<value>[^&#;\s\"'\\<>]*?)(?=[:,)]?(?:[&#;\s\"'\\<>]|$))")
_WORDS = re.compile(r"[_.\-]+|(?<=[a-z0-9])(?=[A-Z])")

_params: frozenset[str] = frozenset(DEFAULT_SECRET_PARAMS)


def configure(params: Iterable[str] | None = None) -> None:
    """Set the secret parameter names for the whole process (None: the defaults)."""
    global _params
    names = DEFAULT_SECRET_PARAMS if params is None else params
    _params = frozenset(name.strip().lower() for name in names if name.strip())
    _is_secret.cache_clear()
    mask_url.cache_clear()
    public_feed_url.cache_clear()


def secret_params() -> frozenset[str]:
    """The names :func:`is_secret_param` tests against, lower-cased."""
    return _params


def is_secret_param(name: str) -> bool:
    """Whether a query parameter of this name holds a secret (see the module docstring)."""
    return _is_secret(name, _params)


@lru_cache(maxsize=4096)
def _is_secret(name: str, params: frozenset[str]) -> bool:
    decoded = unquote(name.replace("+", " ")).strip()
    if decoded.lower() in params:
        return True
    words = [word.lower() for word in _WORDS.split(decoded) if word]
    return any(word in params or any(word.endswith(p) for p in params) for word in words)


def _mask_param(match: re.Match[str]) -> str:
    if match["value"] and is_secret_param(match["name"]):
        return f"{match['lead']}{MASK}"
    return match[0]


def scrub(text: str) -> str:
    """``text`` with credentials masked in every URL it holds (user-info, secret parameters)."""
    if "@" in text and "://" in text:
        text = _USERINFO.sub(lambda m: f"{m['scheme']}{MASK}@", text)
    if "=" in text:
        text = _PARAM.sub(_mask_param, text)
    return text


@lru_cache(maxsize=4096)
def mask_url(url: str) -> str:
    """One URL masked for display (cached: the same feed URLs are shown again and again)."""
    return scrub(url)


@lru_cache(maxsize=4096)
def public_feed_url(url: str) -> str:
    """A feed location as it is published: an absolute URI, masked.

    A feed given as a file path becomes a ``file://`` URI of its absolute path
    (``/srv/feeds/a.xml`` -> ``file:///srv/feeds/a.xml``); a URL is masked.
    """
    if "://" not in url and not url.startswith("file:"):
        try:
            return Path(url).absolute().as_uri()
        except ValueError:  # not a path either (empty): shown as it is
            return scrub(url)
    return scrub(url)


def link_base(feed_url: str) -> str:
    """The base that relative links of an http(s) feed resolve against: the feed URL
    without user-info or secret parameters (removed, not masked), so no article link
    can inherit a credential; "" for a feed that is not http(s) (a file has no web
    location to resolve against)."""
    try:
        parts = urlsplit(feed_url.strip())
        hostname = parts.hostname
        port = parts.port
    except ValueError:
        return ""
    if parts.scheme.lower() not in ("http", "https") or not hostname:
        return ""
    netloc = parts.netloc.rpartition("@")[2]
    if port is None and netloc.endswith(":"):
        netloc = netloc[:-1]
    query = "&".join(
        pair for pair in parts.query.split("&") if pair and not is_secret_param(pair.partition("=")[0])
    )
    return urlunsplit(SplitResult(parts.scheme, netloc, parts.path, query, ""))
