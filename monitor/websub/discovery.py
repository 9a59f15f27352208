"""Where a feed's pushes come from: its hub and its topic (the ``self`` URL).

As the WebSub spec says (section 4): first the ``Link`` headers of the feed's answer
(``rel="hub"``, ``rel="self"``), then the ``<link rel="hub">`` / ``<atom:link rel="hub">``
elements of the document itself (any namespace prefix: FeedBurner writes ``atom10:link``).
Only the document's head is read, up to its first ``<item``/``<entry`` and at most
:data:`HEAD_BYTES`: hub links sit at feed level, and a poll must not pay a scan of the
whole body. A feed without a ``self`` link has its own URL as topic.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

__all__ = ["HEAD_BYTES", "PushLinks", "discover", "parse_link_header"]

#: Bytes of a document read for hub links, at most.
HEAD_BYTES = 65536

# [^<>]: no '<' may stand in an element or a URI reference, and each try stops at the next
# one, so a head of unclosed '<link' (or a Link header of '<') costs linear time, not quadratic.
_ELEMENT = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?link\b([^<>]*)>", re.IGNORECASE)
_ATTRIBUTE = re.compile(rb"""([A-Za-z_:][\w:.-]*)\s*=\s*(?:"([^"]*)"|'([^']*)')""")
_FIRST_ITEM = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?(?:item|entry)\b", re.IGNORECASE)
# One link-value of a Link header: <uri> then ;-separated parameters (RFC 8288).
_LINK_VALUE = re.compile(r"""<([^<>]*)>((?:\s*;\s*[^;,"=\s]+(?:\s*=\s*(?:"[^"]*"|[^;,]*))?)*)""")
_PARAM = re.compile(r"""\s*;\s*([^=;,\s]+)(?:\s*=\s*(?:"([^"]*)"|([^;,]*)))?""")


@dataclass(frozen=True, slots=True)
class PushLinks:
    """A feed's hubs (the first is used) and its topic."""

    hubs: tuple[str, ...]
    topic: str

    @property
    def hub(self) -> str:
        return self.hubs[0]


def parse_link_header(value: str, base: str) -> list[tuple[str, frozenset[str]]]:
    """``Link`` header values -> (absolute target, its rel values, lower-cased)."""
    links = []
    for match in _LINK_VALUE.finditer(value):
        rels: set[str] = set()
        for param in _PARAM.finditer(match.group(2)):
            if param.group(1).lower() == "rel":
                rels.update((param.group(2) or param.group(3) or "").lower().split())
        links.append((urljoin(base, match.group(1).strip()), frozenset(rels)))
    return links


def _document_links(body: bytes, base: str) -> list[tuple[str, frozenset[str]]]:
    end = min(len(body), HEAD_BYTES)
    first = _FIRST_ITEM.search(body, 0, end)
    head = body[: first.start() if first else end]
    links = []
    for element in _ELEMENT.finditer(head):
        attributes = {
            name.lower().rpartition(b":")[2]: (double if double is not None else single or b"")
            for name, double, single in ((m.group(1), m.group(2), m.group(3)) for m in _ATTRIBUTE.finditer(element.group(1)))
        }
        href, rel = attributes.get(b"href"), attributes.get(b"rel")
        if href is None or rel is None:
            continue
        target = html.unescape(href.decode("utf-8", "replace")).strip()
        links.append((urljoin(base, target), frozenset(rel.decode("ascii", "replace").lower().split())))
    return links


def _http(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme.lower() in ("http", "https") and bool(parts.hostname)


def discover(link_header: str | None, body: bytes | None, feed_url: str) -> PushLinks | None:
    """The feed's hubs and topic, or None when it names no http(s) hub.

    ``Link`` headers win over the document: when they name a hub, the document is not read.
    """
    for links in (parse_link_header(link_header or "", feed_url), _document_links(body or b"", feed_url)):
        hubs = tuple(dict.fromkeys(url for url, rels in links if "hub" in rels and _http(url)))
        if hubs:
            selves = [url for url, rels in links if "self" in rels and _http(url)]
            return PushLinks(hubs, selves[0] if selves else feed_url)
    return None
