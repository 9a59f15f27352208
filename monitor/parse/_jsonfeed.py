"""JSON Feed 1.0/1.1 (https://jsonfeed.org/version/1.1), which feedparser does not read."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import orjson

from monitor.parse._common import MarkupText, RawEntry

__all__ = ["JsonFeed", "NotAJsonFeed", "read_json_feed"]

_VERSION_PREFIX = "https://jsonfeed.org/version/"


# A high surrogate escape with the low one that completes it (kept), or any other surrogate
# escape (unpaired: replaced).
_LONE_SURROGATE = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def _unpaired_to_replacement(match: re.Match[bytes]) -> bytes:
    return match.group(0) if len(match.group(0)) == 12 else b"\\ufffd"


class NotAJsonFeed(ValueError):
    """The body is not JSON, or is JSON but not a JSON Feed."""


class JsonFeed:
    """The parts of a JSON Feed the pipeline uses."""

    __slots__ = ("entries", "language", "site", "title", "version", "warning")

    def __init__(
        self,
        entries: list[RawEntry],
        title: str | None,
        version: str,
        warning: str | None,
        site: str | None = None,
        language: str | None = None,
    ) -> None:
        self.entries = entries
        self.title = title
        self.version = version
        self.warning = warning
        #: ``home_page_url``: the site the feed declares.
        self.site = site
        #: ``language`` (JSON Feed 1.1): the language the feed declares, as written.
        self.language = language


def read_json_feed(data: bytes) -> JsonFeed:
    """Parse a JSON Feed document (UTF-8, as the spec requires).

    Raises :class:`NotAJsonFeed` with the reason when ``data`` is not one.
    """
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        if "surrogate" not in str(error):
            raise NotAJsonFeed(f"invalid JSON ({error})") from error
        # One "\ud800" escape without its pair (JSON allows it, orjson does not) would lose
        # the whole feed: such escapes become U+FFFD and the document is read again.
        try:
            document = orjson.loads(_LONE_SURROGATE.sub(_unpaired_to_replacement, data))
        except orjson.JSONDecodeError:
            raise NotAJsonFeed(f"invalid JSON ({error})") from error
    if not isinstance(document, dict):
        raise NotAJsonFeed(f"JSON {type(document).__name__}, not a JSON Feed object")
    version = document.get("version")
    items = document.get("items")
    if not isinstance(items, list):
        raise NotAJsonFeed('JSON without an "items" list, not a JSON Feed')
    warning = None
    if isinstance(version, str) and version.startswith(_VERSION_PREFIX):
        name = "json" + version[len(_VERSION_PREFIX) :].replace(".", "")
    else:
        name = "json"
        warning = f"JSON Feed without a known version ({version!r}); items read anyway"
    entries = [_raw_entry(item) for item in items if isinstance(item, dict)]
    if len(entries) != len(items):
        skipped = len(items) - len(entries)
        warning = warning or f"{skipped} item(s) that are not JSON objects were skipped"
    title = document.get("title")
    site = document.get("home_page_url")
    language = document.get("language")
    return JsonFeed(
        entries,
        title if isinstance(title, str) else None,
        name,
        warning,
        site if isinstance(site, str) else None,
        language if isinstance(language, str) else None,
    )


def _raw_entry(item: dict[str, Any]) -> RawEntry:
    contents: list[MarkupText] = []
    if html := _string(item.get("content_html")):
        contents.append((html, True))
    elif text := _string(item.get("content_text")):
        contents.append((text, False))
    link = _string(item.get("url")) or _string(item.get("external_url"))
    guid = item.get("id")
    return RawEntry(
        # The spec says id is a string; numbers are common in the wild.
        guid=str(guid) if isinstance(guid, (str, int)) and not isinstance(guid, bool) else None,
        link=link,
        # JSON Feed titles and summaries are plain text by spec.
        title=(_string(item.get("title")), False),
        summary=(_string(item.get("summary")), False),
        contents=contents,
        published=_rfc3339(item.get("date_published")) or _rfc3339(item.get("date_modified")),
        language=_string(item.get("language")) or None,
    )


def _string(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _rfc3339(value: Any) -> datetime | None:
    """Parse an RFC 3339 date to aware UTC; a date without an offset is taken as UTC."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # before year 1 or after 9999 in UTC: no date, as an unreadable one
        return None
