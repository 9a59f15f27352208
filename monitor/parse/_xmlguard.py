"""Defuse the DOCTYPE of an XML feed before any XML parser sees it.

Entity attacks live in the DTD internal subset (``<!DOCTYPE rss [ ... ]>``): nested
entities that expand exponentially ("billion laughs"), large entities referenced many
times (quadratic blow-up), and external entities (``SYSTEM "file:///etc/passwd"``,
``SYSTEM "http://..."``) that read files or reach the network.

feedparser strips these with a regular expression that only sees declarations at the
start of a line: ``<?xml ...?><!DOCTYPE rss [<!ENTITY ...>]>`` on one line reaches expat
intact, which then expands the entities until its amplification limit stops it (about
a second of CPU per feed). So we rewrite the internal subset ourselves, scanning the
prolog the way an XML parser does:

* Internal general entities whose value is a short literal (at most
  :data:`MAX_ENTITY_VALUE` characters, none of ``&%<>]``), or a single
  character reference, are kept: feeds do declare ``<!ENTITY nbsp "&#160;">``, and such
  a value cannot nest, so expansion is bounded by ~:data:`MAX_ENTITY_VALUE`/3 times the
  document size.
* Everything else in the subset goes: parameter entities, external entities, nested
  entity values, element/attribute/notation declarations.
* The external DTD reference (``<!DOCTYPE rss PUBLIC "..." "...">``) is kept: feedparser
  uses it to recognise Netscape RSS 0.91 and its SAX parser is configured never to load
  it (``feature_external_ges`` off); ``tests/test_xml_attacks.py`` proves neither a file
  nor the network is read.

The lenient fallback parser feedparser uses for broken XML only expands the entities it
is given, which after this rewrite are the safe ones. It also turns every character
reference into ``chr(n).encode("utf-8")``, which raises for a surrogate (``&#xD800;``) or
a number past U+10FFFF, and the whole feed would be lost: :func:`replace_invalid_charrefs`
makes those U+FFFD first (they name no XML character; a strict parser refuses them).
"""

from __future__ import annotations

import re

__all__ = ["MAX_ENTITY_VALUE", "UnsafeDoctype", "defuse_doctype", "replace_invalid_charrefs"]

#: Longest literal entity value kept from an internal subset.
MAX_ENTITY_VALUE = 32

# How the first bytes of a document reveal an encoding that is not ASCII-compatible
# (XML 1.0 appendix F). Order matters: UTF-32 BOMs start like UTF-16 ones.
_WIDE_ENCODINGS: tuple[tuple[bytes, str, int], ...] = (
    (b"\x00\x00\xfe\xff", "utf-32-be", 4),
    (b"\xff\xfe\x00\x00", "utf-32-le", 4),
    (b"\xfe\xff", "utf-16-be", 2),
    (b"\xff\xfe", "utf-16-le", 2),
    (b"\x00\x00\x00<", "utf-32-be", 0),
    (b"<\x00\x00\x00", "utf-32-le", 0),
    (b"\x00<\x00?", "utf-16-be", 0),
    (b"<\x00?\x00", "utf-16-le", 0),
    (b"\x4c\x6f\xa7\x94", "cp037", 0),  # EBCDIC "<?xm"
)

_XML_SPACE = " \t\r\n"
_SAFE_ENTITY = re.compile(
    r"""<!ENTITY\s+([A-Za-z_:][\w.:-]*)\s+(?:"([^"]*)"|'([^']*)')\s*>\Z"""
)
# No "&" or "%" (nothing nests), no "<" (no markup), no ">" or "]" (feedparser's regular
# expressions would end the declaration or the DOCTYPE there).
_SAFE_VALUE = re.compile(
    r"&#[0-9]{1,7};|&#[xX][0-9A-Fa-f]{1,6};|[^&%<>\]]{0," + str(MAX_ENTITY_VALUE) + "}"
)


# Character references that can name a surrogate or a number past U+10FFFF: five or more
# decimal digits, four or more hex digits (leading zeros aside). Shorter ones are never
# looked at, so the usual &#8217; costs nothing.
_WIDE_CHARREF = "&#(?:[xX]0*([0-9A-Fa-f]{4,})|0*([0-9]{5,}));"
_WIDE_CHARREF_TEXT = re.compile(_WIDE_CHARREF)
_WIDE_CHARREF_BYTES = re.compile(_WIDE_CHARREF.encode())


class UnsafeDoctype(ValueError):
    """The DOCTYPE's internal subset could not be delimited, so it cannot be defused."""


def defuse_doctype(data: bytes) -> tuple[bytes, bool]:
    """Return ``data`` with its DOCTYPE internal subset defused, and whether anything was dropped.

    Raises :class:`UnsafeDoctype` when a DOCTYPE has an internal subset whose end cannot
    be found: an XML parser might read it differently from us, so nothing is parsed.
    """
    codec, bom = _codec(data)
    # Decoding errors in a wide encoding are the XML parser's problem, not ours: they
    # can only be after the prolog (or the parser rejects the document outright).
    text = data[bom:].decode(codec, "replace")
    rewritten, dropped = _defuse_text(text)
    if rewritten is None:
        return data, False
    return data[:bom] + rewritten.encode(codec, "replace"), dropped


def replace_invalid_charrefs(data: bytes) -> bytes:
    """Return ``data`` with every character reference to a surrogate or to a number past
    U+10FFFF replaced by ``&#xFFFD;`` (the document itself when there is none)."""
    codec, bom = _codec(data)
    if codec == "latin-1":  # ASCII-compatible: "&#" and digits are the same bytes in all of them
        if b"&#" not in data:
            return data
        return _WIDE_CHARREF_BYTES.sub(_charref_bytes, data)
    text = data[bom:].decode(codec, "replace")
    if "&#" not in text:
        return data
    replaced = _WIDE_CHARREF_TEXT.sub(_charref_text, text)
    return data if replaced == text else data[:bom] + replaced.encode(codec, "replace")


def _is_xml_char_number(hex_digits: str | bytes | None, digits: str | bytes | None) -> bool:
    if hex_digits is not None:
        if len(hex_digits) > 6:
            return False
        number = int(hex_digits, 16)
    else:
        assert digits is not None
        if len(digits) > 7:  # int() of a long digit string is slow, and past U+10FFFF anyway
            return False
        number = int(digits)
    return number <= 0x10FFFF and not 0xD800 <= number <= 0xDFFF


def _charref_bytes(match: re.Match[bytes]) -> bytes:
    return match.group(0) if _is_xml_char_number(match.group(1), match.group(2)) else b"&#xFFFD;"


def _charref_text(match: re.Match[str]) -> str:
    return match.group(0) if _is_xml_char_number(match.group(1), match.group(2)) else "&#xFFFD;"


def _codec(data: bytes) -> tuple[str, int]:
    """The codec to read the document's markup with, and the length of its byte order mark.

    latin-1 for every ASCII-compatible encoding: it maps bytes 1:1, so positions are byte
    offsets and the markup reads the same.
    """
    for marker, name, bom_length in _WIDE_ENCODINGS:
        if data.startswith(marker):
            return name, bom_length
    return "latin-1", 3 if data.startswith(b"\xef\xbb\xbf") else 0


def _defuse_text(text: str) -> tuple[str | None, bool]:
    """Return ``text`` with its internal subset rewritten (None: no subset), and whether
    any declaration was dropped."""
    doctype = _skip_misc(text, 0)
    if doctype is None or text[doctype : doctype + 9].upper() != "<!DOCTYPE":
        return None, False
    subset_start = _find_subset_start(text, doctype + 9)
    if subset_start is None:
        return None, False
    declarations, subset_end = _scan_subset(text, subset_start + 1)
    kept = [declaration for declaration in declarations if _is_safe_entity(declaration)]
    dropped = len(kept) < len(declarations) or "%" in text[subset_start:subset_end]
    if not kept:
        return text[:subset_start] + text[subset_end + 1 :], dropped
    # feedparser re-reads the DOCTYPE with line-anchored regular expressions: it keeps an
    # entity only when its declaration starts a line, and finds the DOCTYPE only when it
    # starts one too. Lay the kept declarations out that way or they would be lost.
    new_subset = "[\n" + "\n".join(kept) + "\n]"
    prefix = text[:doctype] if text[:doctype].endswith("\n") else text[:doctype] + "\n"
    return prefix + text[doctype:subset_start] + new_subset + text[subset_end + 1 :], dropped


def _skip_misc(text: str, position: int) -> int | None:
    """Skip whitespace, processing instructions and comments; None if one is unterminated."""
    length = len(text)
    while position < length:
        if text[position] in _XML_SPACE:
            position += 1
        elif text.startswith("<?", position):
            end = text.find("?>", position + 2)
            if end < 0:
                return None
            position = end + 2
        elif text.startswith("<!--", position):
            end = text.find("-->", position + 4)
            if end < 0:
                return None
            position = end + 3
        else:
            return position
    return position


def _find_subset_start(text: str, position: int) -> int | None:
    """Return the index of the DOCTYPE's ``[``, or None when it has no internal subset."""
    found = _outside_quotes(text, position, "[>")
    return found if found >= 0 and text[found] == "[" else None


def _outside_quotes(text: str, position: int, stops: str) -> int:
    """The index of the first of ``stops`` from ``position`` that is not inside a quoted
    literal, or -1 (also for a literal that never closes)."""
    length = len(text)
    while position < length:
        char = text[position]
        if char in "\"'":
            end = text.find(char, position + 1)
            if end < 0:
                return -1
            position = end + 1
        elif char in stops:
            return position
        else:
            position += 1
    return -1


def _scan_subset(text: str, position: int) -> tuple[list[str], int]:
    """Return the markup declarations of an internal subset and the index of its ``]``."""
    declarations: list[str] = []
    length = len(text)
    while position < length:
        if text.startswith("<!--", position):
            end = text.find("-->", position + 4)
            if end < 0:
                break
            position = end + 3
        elif text.startswith("<?", position):
            end = text.find("?>", position + 2)
            if end < 0:
                break
            position = end + 2
        elif text.startswith("<!", position):
            end = _declaration_end(text, position + 2)
            if end < 0:
                break
            declarations.append(text[position : end + 1])
            position = end + 1
        elif text[position] == "]":
            close = _skip_space(text, position + 1)
            if close < length and text[close] == ">":
                return declarations, position
            break
        else:  # whitespace and parameter-entity references such as "%HTMLlat1;"
            position += 1
    raise UnsafeDoctype("malformed DOCTYPE: its internal subset never ends")


def _declaration_end(text: str, position: int) -> int:
    """Return the index of the ``>`` closing a markup declaration, or -1."""
    return _outside_quotes(text, position, ">")


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in _XML_SPACE:
        position += 1
    return position


def _is_safe_entity(declaration: str) -> bool:
    """True for ``<!ENTITY name "short literal">``: internal, general, not nested."""
    match = _SAFE_ENTITY.match(declaration)
    if match is None:
        return False
    value = match.group(2) if match.group(2) is not None else match.group(3)
    return _SAFE_VALUE.fullmatch(value) is not None
