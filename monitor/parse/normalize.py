"""Text normalisation: HTML to plain text, and plain text to the one canonical form.

Everything a rule matches against goes through :func:`clean_text`, so rules and
articles agree on what "the same text" means: Unicode NFC, no control or invisible
formatting characters, runs of spaces collapsed to one, and paragraph/line breaks kept
as a single ``"\\n"``.

:func:`html_to_text` turns an HTML fragment (a feed description) or a whole page (the
full-text extractor) into that form. Block elements become line breaks so words from
adjacent paragraphs, list items or table cells never run together; scripts, styles and
other non-text elements are dropped; entities are decoded. It uses lxml's HTML parser,
which never expands DTD entities and never touches the network.

Pure functions, no I/O; safe to call from any process.
"""

from __future__ import annotations

import html.entities
import re
import threading
import unicodedata

from lxml import etree

__all__ = ["clean_text", "html_to_text", "looks_like_html", "markup_to_text"]

#: Elements whose content is never text a reader sees.
_DROP_TAGS: tuple[str, ...] = (
    "script",
    "style",
    "noscript",
    "template",
    "head",
    "iframe",
    "object",
    "embed",
    "svg",
    "math",
    "select",
    "button",
)

#: Elements that start a new line. After clean_text a paragraph and a line break are the
#: same "\n", so one list serves both. Table cells are here too: a row of cells read as
#: "A\nB" beats "AB".
_BLOCK_TAGS: tuple[str, ...] = (
    "address", "article", "aside", "blockquote", "br", "caption", "dd", "details",
    "dialog", "div", "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form",
    "h1", "h2", "h3", "h4", "h5", "h6", "header", "hgroup", "hr", "li", "main", "nav",
    "ol", "p", "pre", "section", "summary", "table", "tbody", "td", "tfoot", "th",
    "thead", "tr", "ul", "body", "html", "center", "option", "legend",
)  # fmt: skip

# Parsers are reused (building one per call costs more than parsing a short description)
# but kept per thread: the pipeline may parse in threads (asyncio.to_thread), and a shared
# lxml parser would serialise them.
_PARSERS = threading.local()


def _html_parser() -> etree.HTMLParser:
    parser: etree.HTMLParser | None = getattr(_PARSERS, "html", None)
    if parser is None:
        parser = etree.HTMLParser(  # type: ignore[call-arg]  # lxml-stubs lacks default_doctype
            encoding="utf-8",
            remove_comments=True,
            remove_pis=True,
            no_network=True,
            recover=True,
            default_doctype=False,
        )
        _PARSERS.html = parser
    return parser

# C0/C1 controls (tab and the line breaks are whitespace, handled by splitting), lone
# surrogates from broken decoders, and invisible characters that split words for a
# matcher without showing anything: soft hyphen, zero-width space, word joiner, BOM.
# ZWJ/ZWNJ are kept: they change how Persian, Indic scripts and emoji read.
_INVISIBLE = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f\u00ad\u200b\u2060\ufeff\ud800-\udfff]")

# What lxml's HTML parser reads (raw, or as a reference such as &#12;) but will not take
# as an element's text: characters XML does not allow. Vertical tab and form feed are line
# breaks to clean_text, so they stay breaks; the rest it would drop anyway.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")

_TAG_START = re.compile(r"</?([A-Za-z][A-Za-z0-9]*)[\s/>]")
_ENTITY_REF = re.compile(r"&(#[0-9]+|#[xX][0-9A-Fa-f]+|[A-Za-z][A-Za-z0-9]*);")
_HTML_TAG_NAMES = frozenset(
    _DROP_TAGS
    + _BLOCK_TAGS
    + (
        "a", "abbr", "b", "bdi", "bdo", "big", "cite", "code", "data", "del", "dfn", "em",
        "font", "i", "img", "ins", "kbd", "mark", "q", "s", "samp", "small", "span",
        "strike", "strong", "sub", "sup", "time", "tt", "u", "var", "wbr", "picture",
        "source", "video", "audio", "label", "input", "textarea", "area", "map",
        "col", "colgroup", "meta", "link", "title",
    )
)  # fmt: skip


def clean_text(text: str) -> str:
    """Return ``text`` in canonical plain-text form.

    Unicode NFC; control and invisible characters removed; every run of spaces, tabs
    and other horizontal whitespace collapsed to one space; every run of whitespace that
    contains a line break (any of them: CR, LF, CRLF, NEL, U+2028...) collapsed to a
    single ``"\\n"``; leading/trailing whitespace stripped.
    """
    if not text:
        return ""
    # str.splitlines/str.split run in C and know every Unicode line break and space;
    # they are several times faster than the equivalent regular expressions.
    lines = []
    for line in text.splitlines():
        line = " ".join(line.split())
        # isprintable() is False exactly when a line holds a control, format or
        # separator character, so the regular expression runs only when it can matter.
        if line and not line.isprintable():
            line = " ".join(_INVISIBLE.sub("", line).split())
        if line:
            lines.append(line)
    text = "\n".join(lines)
    # After removing invisibles, so a mark they separated from its base can compose.
    return text if text.isascii() else unicodedata.normalize("NFC", text)


def html_to_text(markup: str) -> str:
    """Return the visible text of an HTML fragment or document, cleaned by :func:`clean_text`.

    Block elements (paragraphs, headings, list items, table cells, ``<br>``...) become
    line breaks; ``<script>``, ``<style>`` and similar are dropped with their content;
    character and named entities are decoded. Text without ``<`` or ``&`` skips the
    parser entirely.
    """
    if "<" not in markup and "&" not in markup:
        return clean_text(markup)
    # Bytes, not str: lxml refuses str input that carries an XML encoding declaration
    # (feeds do embed those in CDATA).
    try:
        data = markup.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates; clean_text would drop them anyway
        data = _INVISIBLE.sub("", markup).encode("utf-8")
    if b"\x00" in data:  # libxml2 turns a NUL into U+FFFD, which would then be text
        data = data.replace(b"\x00", b"")
    root = etree.HTML(data, _html_parser())
    if root is None:  # only whitespace, comments or processing instructions
        return ""
    etree.strip_elements(root, *_DROP_TAGS, with_tail=False)
    for element in root.iter(*_BLOCK_TAGS):
        text, tail = element.text, element.tail
        try:
            element.text = "\n" + text if text else "\n"
            element.tail = "\n" + tail if tail else "\n"
        except ValueError:  # lxml parsed a character it refuses to set (\x0c, &#11;): see _NOT_XML
            element.text = "\n" + _xml_text(text) if text else "\n"
            element.tail = "\n" + _xml_text(tail) if tail else "\n"
    # An HTML tree holds text only: itertext() yields str (lxml-stubs say str | bytes).
    return clean_text("".join(root.itertext()))  # type: ignore[arg-type]


def _xml_text(text: str) -> str:
    return _NOT_XML.sub(lambda match: "\n" if match.group() in "\x0b\x0c" else "", text)


def looks_like_html(text: str) -> bool:
    """Guess whether ``text`` is HTML rather than plain text that happens to contain ``<`` or ``&``.

    True when it has a tag of a known HTML element (``<p>``, ``</b>``, ``<br/>``) or a
    well-formed character/named entity reference (``&amp;``, ``&#8217;``). "AT&T",
    "x < y" and "Q&A;" stay plain text.
    """
    if "<" in text:
        for match in _TAG_START.finditer(text):
            if match.group(1).lower() in _HTML_TAG_NAMES:
                return True
    if "&" in text:
        for match in _ENTITY_REF.finditer(text):
            name = match.group(1)
            if name.startswith("#") or name + ";" in html.entities.html5:
                return True
    return False


def markup_to_text(value: str, *, is_html: bool | None = None) -> str:
    """Return plain text for a feed value that may or may not be HTML.

    ``is_html`` is what the feed format says (Atom ``type="html"``, RSS description);
    ``None`` means unknown, and :func:`looks_like_html` decides. Plain text is only
    cleaned, so a title like "AT&T <3 Apple" is never mangled by an HTML parser.
    """
    if is_html is None:
        is_html = looks_like_html(value)
    return html_to_text(value) if is_html else clean_text(value)
