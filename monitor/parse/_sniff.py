"""Tell what a response body is before choosing a parser: empty, gzip, HTML, JSON or XML."""

from __future__ import annotations

import zlib
from enum import Enum

__all__ = ["MAX_DECOMPRESSED", "BodyKind", "gunzip", "looks_like_html_page", "sniff"]

#: Largest body accepted after undoing a stray gzip layer (a guard against zip bombs).
MAX_DECOMPRESSED = 64 * 1024 * 1024

_JSON_TYPES = frozenset({"application/feed+json", "application/json"})
_BOMS = (b"\xef\xbb\xbf",)


class BodyKind(Enum):
    """What a body looks like."""

    EMPTY = "empty"
    GZIP = "gzip"
    HTML = "html"
    JSON = "json"
    XML = "xml"


def sniff(body: bytes, content_type: str | None) -> BodyKind:
    """Classify ``body``; the content type only decides when the body itself does not.

    The body wins because servers mislabel feeds all the time (RSS as ``text/html``,
    JSON Feed as ``text/plain``).
    """
    if body[:2] == b"\x1f\x8b":
        return BodyKind.GZIP
    head = body[:1024]
    for bom in _BOMS:
        if head.startswith(bom):
            head = head[len(bom) :]
    head = head.lstrip()
    if not head:
        rest = body[1024:].strip()
        return BodyKind.EMPTY if not rest else sniff(rest, content_type)
    if head[:1] in (b"{", b"["):
        return BodyKind.JSON
    lowered = head[:64].lower()
    if lowered.startswith((b"<!doctype html", b"<html")):
        return BodyKind.HTML
    if head[:1] != b"<" and _media_type(content_type) in _JSON_TYPES:
        return BodyKind.JSON
    return BodyKind.XML


def looks_like_html_page(body: bytes) -> bool:
    """True when an HTML root element or doctype appears near the start of ``body``."""
    head = body[:4096].lower()
    return b"<!doctype html" in head or b"<html" in head


def gunzip(body: bytes) -> bytes:
    """Undo one gzip layer, refusing output larger than :data:`MAX_DECOMPRESSED`.

    Raises ``ValueError`` when the data is corrupt or too large.
    """
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, MAX_DECOMPRESSED)
    except zlib.error as error:
        raise ValueError(f"corrupt gzip data ({error})") from error
    if inflater.unconsumed_tail:
        raise ValueError(f"gzip body inflates to more than {MAX_DECOMPRESSED // 2**20} MiB")
    if not inflater.eof:
        raise ValueError("truncated gzip data")
    return data


def _media_type(content_type: str | None) -> str:
    if not content_type:
        return ""
    return content_type.partition(";")[0].strip().lower()
