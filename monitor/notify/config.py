"""``[[notify.destination]]`` tables: checked once, at start-up, into :class:`Destination`.

Every error names the file, the line of the key (or of the table), the table's number
and name, the key and what it must be, e.g. ``monitor.toml:31: [[notify.destination]] #2
(desk-email): digest 'every 15m' is not a digest: off, a period such as 15m or 1h, or
daily@HH:MM``. Whether Apprise can use the ``url`` is checked by the Apprise adapter
when the notify process starts (it needs the plugin), with the same location.

Secrets: ``url`` may name environment variables as ``${NAME}`` (replaced when the
config is loaded; an unset one is an error), or ``url_file`` names a file holding the
URL (a mounted secret). The URL never appears in an error, a log line or a repr.

Pure apart from reading ``url_file``: settings pass the environment in.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from monitor.errors import ConfigError, error_text
from monitor.model import SourceLocation
from monitor.notify.items import ALERT, SEVERITIES, SIGNAL, Item
from monitor.notify.message import FIELDS, Renderer, Template, TemplateError
from monitor.notify.schedule import Policy, parse_digest, parse_quiet_hours, parse_rate_limit

__all__ = ["DESTINATION_KEYS", "FORMATS", "Destination", "Filter", "destination_from_table"]

#: ``format``: ``auto`` picks markdown for services that take Markdown or HTML, else text.
FORMATS = ("auto", "markdown", "text")
DESTINATION_KEYS = (
    "name", "url", "url_file", "rules", "min_severity", "tags", "kinds", "digest", "timezone",
    "rate_limit", "quiet_hours", "format", "title", "body", "digest_max_items",
)  # fmt: skip
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Filter:
    """Which items a destination receives. Empty ``rules``/``tags``: any."""

    rules: tuple[str, ...] = ()
    min_severity: str | None = None
    tags: tuple[str, ...] = ()
    kinds: tuple[str, ...] = (ALERT,)

    def accepts(self, item: Item) -> bool:
        """Whether ``item`` goes to this destination. A signal without a severity or tags
        passes ``min_severity`` and ``tags``."""
        if item.kind not in self.kinds:
            return False
        if self.rules and not any(fnmatch.fnmatchcase(item.rule_id, pattern) for pattern in self.rules):
            return False
        below = item.severity is not None and SEVERITIES.index(item.severity) < SEVERITIES.index(self.min_severity or "info")
        if below:
            return False
        return not (self.tags and item.tags is not None and not set(self.tags).intersection(item.tags))


@dataclass(frozen=True)
class Destination:
    """One checked ``[[notify.destination]]`` table."""

    name: str
    url: str = field(repr=False)
    #: ``[[notify.destination]] #N (name)``, for messages.
    label: str
    #: Where the table's ``url`` (or ``url_file``) is, for errors found later.
    url_location: SourceLocation
    filter: Filter = field(default_factory=Filter)
    timezone: tzinfo = field(default_factory=lambda: ZoneInfo("UTC"))
    digest: str = "off"
    rate_limit: str = "off"
    quiet_hours: str = "off"
    format: str = "auto"
    title: Template | None = None
    body: Template | None = None
    digest_max_items: int = 50

    def policy(self) -> Policy:
        """A fresh :class:`Policy` (digest, quiet hours, rate limit) for this destination."""
        return Policy(
            digest=parse_digest(self.digest, self.timezone),
            quiet=parse_quiet_hours(self.quiet_hours, self.timezone),
            rate=parse_rate_limit(self.rate_limit),
        )

    def renderer(self, markdown: bool) -> Renderer:
        return Renderer(title=self.title, body=self.body, markdown=markdown, max_items=self.digest_max_items)


class _Table:
    def __init__(self, table: Mapping[str, Any], index: int, where: str, line_of: Callable[[str | None], int | None]) -> None:
        self.table = table
        self.where = where
        self.line_of = line_of
        name = table.get("name") if isinstance(table, Mapping) else None
        self.label = f"[[notify.destination]] #{index + 1}" + (f" ({name})" if isinstance(name, str) and name.strip() else "")

    def fail(self, message: str, key: str | None = None, hint: str | None = None) -> ConfigError:
        return ConfigError(f"{self.label}: {message}", location=SourceLocation(self.where, self.line_of(key)), hint=hint)

    def text(self, key: str, default: str | None = None, example: str = '"..."') -> str | None:
        value = self.table.get(key, default)
        if value is not None and not isinstance(value, str):
            raise self.fail(f"{key} must be a string, got {value!r}", key, hint=f"{key} = {example}")
        return value

    def strings(self, key: str, example: str) -> tuple[str, ...]:
        value = self.table.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise self.fail(f"{key} must be a list of non-empty strings, got {value!r}", key, hint=f"{key} = {example}")
        return tuple(v.strip() for v in value)

    def parsed(self, key: str, default: str, parse: Callable[[str], object], example: str) -> str:
        text = self.text(key, default, f'"{example}"') or default
        try:
            parse(text)
        except ValueError as exc:
            raise self.fail(
                f"{key} {exc}" if str(exc).startswith("'") else f"{key}: {exc}", key, hint=f'e.g. {key} = "{example}"'
            ) from None
        return text

    def template(self, key: str) -> Template | None:
        source = self.text(key)
        if source is None:
            return None
        try:
            return Template.parse(source)
        except TemplateError as exc:
            raise self.fail(
                f"{key} template: {exc}", key, hint=f'e.g. {key} = "{{rule}}: {{title}}"; fields are listed in docs/notify.md'
            ) from None


def destination_from_table(
    table: Any,
    index: int,
    *,
    where: str,
    line_of: Callable[[str | None], int | None] = lambda _key: None,
    environ: Mapping[str, str],
    resolve: Callable[[str], Path] = Path,
    secrets: bool = True,
) -> Destination:
    """Check one ``[[notify.destination]]`` table (``index`` from 0); :class:`ConfigError`
    naming the table and key. Without ``secrets`` the url's ``${NAME}`` references and
    ``url_file`` are left unread (other commands load the config without the notify
    process's environment); its ``url`` is then not usable."""
    check = _Table(table if isinstance(table, Mapping) else {}, index, where, line_of)
    if not isinstance(table, Mapping):
        raise check.fail("must be a table", hint='[[notify.destination]] then name = "..." and url = "..." on the next lines')
    _check_keys(check, table)
    name = _name(check)
    url, url_key = _url(check, environ, resolve, secrets)
    zone = _timezone(check)
    severity = check.text("min_severity", None, '"medium"')
    if severity is not None and severity not in SEVERITIES:
        raise check.fail(f"min_severity {severity!r} is not a severity", "min_severity", hint=f"one of {', '.join(SEVERITIES)}")
    kinds = _kinds(check, table)
    output = check.text("format", "auto", '"markdown"') or "auto"
    if output not in FORMATS:
        raise check.fail(f"format {output!r} is not a format", "format", hint=f"one of {', '.join(FORMATS)}")
    items = _digest_max_items(check, table)
    return Destination(
        name=name,
        url=url,
        label=check.label,
        url_location=SourceLocation(where, line_of(url_key)),
        filter=Filter(
            rules=check.strings("rules", '["summit", "sanction*"]'),
            min_severity=severity,
            tags=check.strings("tags", '["geopolitics"]'),
            kinds=tuple(dict.fromkeys(kinds)),
        ),
        timezone=zone,
        digest=check.parsed("digest", "off", lambda text: parse_digest(text, zone), "15m"),
        rate_limit=check.parsed("rate_limit", "off", parse_rate_limit, "10/1h"),
        quiet_hours=check.parsed("quiet_hours", "off", lambda text: parse_quiet_hours(text, zone), "22:00-07:00"),
        format=output,
        title=check.template("title"),
        body=check.template("body"),
        digest_max_items=items,
    )


def _check_keys(check: _Table, table: Mapping[str, Any]) -> None:
    for key in table:
        if key not in DESTINATION_KEYS:
            close = difflib.get_close_matches(key, DESTINATION_KEYS, n=1)
            raise check.fail(
                f"unknown key {key!r}",
                key,
                hint=(f"did you mean {close[0]!r}? " if close else "") + f"valid: {', '.join(sorted(DESTINATION_KEYS))}",
            )


def _name(check: _Table) -> str:
    name = check.text("name", None, '"desk-slack"')
    if name is None or not _NAME.fullmatch(name):
        raise check.fail(
            "needs a name" if name is None else f"name {name!r} is not a destination name",
            "name",
            hint="1-64 letters, digits, '.', '_' or '-', starting with a letter or digit (it labels metrics and --test)",
        )
    return name


def _timezone(check: _Table) -> tzinfo:
    zone_name = check.text("timezone", "UTC", '"Europe/Berlin"') or "UTC"
    try:
        return ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Europe" is a directory of zones, not one
        raise check.fail(
            f"timezone {zone_name!r} is not a time zone",
            "timezone",
            hint='an IANA name, e.g. "UTC", "Europe/Berlin", "America/New_York"',
        ) from None


def _kinds(check: _Table, table: Mapping[str, Any]) -> tuple[str, ...]:
    kinds = tuple(check.strings("kinds", '["alerts", "signals"]')) if "kinds" in table else (ALERT,)
    if not kinds or any(kind not in (ALERT, SIGNAL) for kind in kinds):
        raise check.fail(
            f"kinds {list(kinds)!r} must list alerts, signals or both", "kinds", hint='kinds = ["alerts", "signals"]'
        )
    return kinds


def _digest_max_items(check: _Table, table: Mapping[str, Any]) -> int:
    items = table.get("digest_max_items", 50)
    if isinstance(items, bool) or not isinstance(items, int) or not 1 <= items <= 1000:
        raise check.fail(
            f"digest_max_items must be a whole number from 1 to 1000, got {items!r}",
            "digest_max_items",
            hint="digest_max_items = 50",
        )
    return items


def _url(check: _Table, environ: Mapping[str, str], resolve: Callable[[str], Path], secrets: bool) -> tuple[str, str]:
    """The destination's URL, with ``${NAME}`` replaced from ``environ``, or read from
    ``url_file``; errors never quote it."""
    has_url, has_file = "url" in check.table, "url_file" in check.table
    if has_url == has_file:
        raise check.fail(
            "needs a url or a url_file" if not has_url else "has both url and url_file",
            "url" if has_url else None,
            hint='url = "slack://..." (secrets as ${VARIABLE}), or url_file = "/run/secrets/slack-url"',
        )
    if has_file:
        path_text = check.text("url_file", None, '"/run/secrets/slack-url"') or ""
        path = resolve(path_text)
        if not secrets:
            return "", "url_file"
        try:
            url = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            # The file is named already: the system's words alone (an OSError without any: what happened).
            reason = (exc.strerror or error_text(exc)) if isinstance(exc, OSError) else f"not UTF-8 text ({exc.reason} at byte {exc.start})"
            raise check.fail(
                f"url_file {str(path)!r} cannot be read: {reason}",
                "url_file",
                hint="a file holding the Apprise URL (e.g. a mounted secret)",
            ) from None
        if not url:
            raise check.fail(f"url_file {str(path)!r} is empty", "url_file", hint="the file holds one Apprise URL")
        return url, "url_file"
    template = check.table["url"]
    if not isinstance(template, str) or not template.strip():
        raise check.fail(
            "url must be a non-empty string", "url", hint='an Apprise URL, e.g. url = "json://hooks.example.org/news"'
        )

    if not secrets:
        return "", "url"

    def substitute(found: re.Match[str]) -> str:
        variable = found.group(1)
        if variable not in environ:
            raise check.fail(
                f"url: environment variable {variable} is not set",
                "url",
                hint=f"export {variable}=... before starting, or use url_file",
            )
        return environ[variable]

    return _ENV_REFERENCE.sub(substitute, template.strip()), "url"


def field_names() -> tuple[str, ...]:
    """The template fields, for help texts."""
    return tuple(FIELDS)
