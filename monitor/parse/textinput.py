"""Turning a file an operator hands us into an :class:`~monitor.model.Article`.

Used by ``news-monitor match`` and ``rules eval``: the input is plain text, HTML, or a
JSON object with ``title``/``summary``/``body`` (or ``text``) fields.
"""

from __future__ import annotations

from typing import Any

import orjson

from monitor.errors import MonitorError
from monitor.language import detect, language_of, language_tag
from monitor.model import Article
from monitor.parse.normalize import clean_text, markup_to_text

__all__ = ["article_from_input", "article_from_mapping"]


def article_from_mapping(data: dict[str, Any], article_id: str = "input", feed_url: str = "") -> Article:
    """An article from a JSON-like mapping: title/summary/body, or a single ``text``; its
    language is ``lang`` when that is an ISO 639-1 code (or a tag such as ``fr-CA``),
    else detected."""
    body = data.get("body")
    if body is None:
        body = data.get("text", "")
    for key, value in (("title", data.get("title", "")), ("summary", data.get("summary", "")), ("body", body)):
        if not isinstance(value, str):
            raise MonitorError(f"field {key!r} must be a string, not {type(value).__name__}")
    title, summary, body = markup_to_text(data.get("title", "")), markup_to_text(data.get("summary", "")), markup_to_text(body)
    declared = data.get("lang")
    return Article(
        id=str(data.get("id", article_id)),
        feed_url=feed_url,
        title=title,
        summary=summary,
        body=body,
        url=data.get("url") if isinstance(data.get("url"), str) else None,
        lang=language_of(language_tag(declared) if isinstance(declared, str) else None, title, summary, body),
    )


def article_from_input(raw: bytes, name: str) -> Article:
    """Decode ``raw`` (UTF-8) as a JSON object, HTML or plain text."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MonitorError(f"{name}: not UTF-8 text (byte {exc.start})", hint="convert the file to UTF-8") from exc
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            data = orjson.loads(stripped)
        except orjson.JSONDecodeError as exc:
            raise MonitorError(f"{name}: looks like JSON but is not valid: {exc}") from exc
        if not isinstance(data, dict):
            raise MonitorError(f"{name}: JSON input must be an object with title/body or text")
        return article_from_mapping(data, article_id=name)
    body = markup_to_text(text) if stripped.startswith("<") else clean_text(text)
    return Article(id=name, feed_url="", body=body, lang=detect(body))
