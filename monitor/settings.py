"""Configuration: the only module that reads the config file and the environment.

One TOML file (``monitor.toml`` by default) holds every setting in sections. Each key
can be overridden by an environment variable ``NEWS_MONITOR_<SECTION>_<KEY>``, e.g.
``NEWS_MONITOR_KAFKA_BOOTSTRAP_SERVERS`` or ``NEWS_MONITOR_STATE_DIR``. Unknown
sections and keys are errors, so a misspelt key never silently does nothing.

Relative paths in the file (state dir, OPML, rule paths) are resolved against the
directory of the config file, so the daemon behaves the same from any working dir.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from monitor.errors import ConfigError
from monitor.model import Feed, SourceLocation
from monitor.redact import DEFAULT_SECRET_PARAMS

__all__ = [
    "DEFAULT_CONFIG",
    "ENV_PREFIX",
    "DeliverySettings",
    "FeedsSettings",
    "FulltextSettings",
    "StoriesSettings",
    "HealthSettings",
    "HttpSettings",
    "KafkaSettings",
    "LogSettings",
    "RulesSettings",
    "Settings",
    "StateSettings",
    "load_settings",
]

ENV_PREFIX = "NEWS_MONITOR_"
DEFAULT_CONFIG = Path("monitor.toml")
EMBEDDED = "embedded"


@dataclass(frozen=True)
class KafkaSettings:
    """Where alerts go and how the producer talks to the cluster."""

    #: ``"embedded"`` starts a local Tansu broker; otherwise ``host:port[,host:port...]``.
    bootstrap_servers: str = EMBEDDED
    client_id: str = "news-monitor"
    acks: str = "all"
    #: ``"auto"``: on, except for the embedded broker and brokers that refuse it (Tansu).
    enable_idempotence: str = "auto"
    #: ``"auto"`` picks zstd, then lz4, when their codec is installed, else gzip.
    compression_type: str = "auto"
    linger_ms: int = 10
    max_batch_size: int = 65536
    max_request_size: int = 1048576
    request_timeout_ms: int = 30000
    retry_backoff_ms: int = 300
    #: Seconds to wait for the broker at start-up before giving up with an error.
    connect_timeout: float = 30.0
    topic_partitions: int = 3
    topic_replication_factor: int = 1
    dead_letter_topic: str = "alerts.dead-letter"
    #: Also publish every normalised article to this topic ("" = off).
    articles_topic: str = ""
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = ""
    sasl_username: str = ""
    #: Prefer the environment variable NEWS_MONITOR_KAFKA_SASL_PASSWORD to the file.
    sasl_password: str = field(default="", repr=False)
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_password: str = field(default="", repr=False)
    #: Port for the embedded broker (0 = any free loopback port).
    embedded_port: int = 0

    @property
    def embedded(self) -> bool:
        return self.bootstrap_servers.strip().lower() == EMBEDDED

    @property
    def idempotence(self) -> bool:
        """Whether the producer should run idempotent (resolves ``"auto"``)."""
        value = self.enable_idempotence.strip().lower()
        if value == "auto":
            return not self.embedded
        return value in {"true", "1", "yes", "on"}


@dataclass(frozen=True)
class StateSettings:
    """Where the dedupe store and feed state live."""

    dir: str = "state"
    #: Days a seen article id is remembered before it may be forgotten.
    retention_days: float = 30.0
    #: Seconds between two retention sweeps (forgetting old article ids and stories).
    retention_check: float = 3600.0
    #: Seconds between two write-backs of the in-memory feed state (validators, counters).
    flush_interval: float = 5.0


@dataclass(frozen=True)
class FeedsSettings:
    """Which feeds to poll and how often."""

    #: An OPML file listing feeds (nested outlines are read); "" = none.
    opml: str = ""
    #: Default seconds between two polls of a feed.
    interval: float = 300.0
    #: Lower bound for adaptive intervals (default: ``interval``).
    min_interval: float = 0.0
    #: Upper bound for adaptive intervals and error back-off.
    max_interval: float = 3600.0
    #: Feeds fetched at the same time, in all.
    concurrency: int = 64
    #: Feeds fetched at the same time from one host.
    per_host: int = 4
    #: Seconds for a whole fetch (connect, headers and body).
    timeout: float = 30.0
    connect_timeout: float = 10.0
    #: Seconds without a single byte from the server before a fetch is abandoned.
    read_timeout: float = 15.0
    #: Largest feed body accepted, in bytes; larger ones are aborted while streaming.
    max_bytes: int = 20 * 1024 * 1024
    max_redirects: int = 5
    #: Seconds a single parse may take before it is abandoned.
    parse_timeout: float = 20.0
    #: Worker processes for parsing (0 = parse in a thread; CPU count when negative).
    parse_workers: int = -1
    user_agent: str = ""
    #: Random spread of each next poll, as a share of its interval (0.05 = ±5 %).
    jitter: float = 0.05
    #: Query parameters of feed URLs whose values are masked wherever a URL leaves the
    #: process (alerts, logs, metrics, status); see monitor.redact for the matching rule.
    redact_params: tuple[str, ...] = DEFAULT_SECRET_PARAMS
    #: Feeds listed in the file itself: ``[[feeds.feed]]`` tables (url, interval, ...).
    feed: tuple[Mapping[str, Any], ...] = ()

    @property
    def effective_min_interval(self) -> float:
        return self.min_interval if self.min_interval > 0 else self.interval


@dataclass(frozen=True)
class FulltextSettings:
    """Fetching article pages for feeds with ``fulltext = true``."""

    #: Addresses page fetches may reach although not public: networks ("10.0.0.0/8"),
    #: addresses ("127.0.0.1") or host names ("intranet.example"). Empty: public only.
    allow: tuple[str, ...] = ()
    #: Largest article page accepted, in bytes (aborted while streaming).
    max_bytes: int = 5 * 1024 * 1024
    #: Seconds for a whole page fetch.
    timeout: float = 20.0
    #: Pages fetched at the same time, in all.
    concurrency: int = 8
    #: Extracted text shorter than this many characters counts as a failure (feed text used).
    min_chars: int = 200


@dataclass(frozen=True)
class StoriesSettings:
    """Near-duplicate detection of wire copy republished under different URLs."""

    enabled: bool = True
    #: Hours an article stays eligible as an earlier copy of a story.
    window_hours: float = 24.0
    #: Estimated Jaccard similarity of word shingles from which two texts are one story.
    threshold: float = 0.5
    #: MinHash permutations (more: finer estimates, more memory; ~0.3 KB per article at 64).
    num_perm: int = 64
    #: Words per shingle.
    shingle_size: int = 4
    #: Texts with fewer shingles than this are not clustered (too short to tell apart).
    min_shingles: int = 8


@dataclass(frozen=True)
class RulesSettings:
    """Where the rule files are."""

    paths: tuple[str, ...] = ("rules",)
    #: Watch the rule paths and reload on change.
    watch: bool = True
    #: Accept a reload that leaves no rule at all (else it is refused, the old rules stay).
    allow_empty: bool = False


@dataclass(frozen=True)
class DeliverySettings:
    """How alerts are queued and drained."""

    #: Alerts waiting for the broker before polling pauses (back-pressure).
    queue_size: int = 10000
    #: Seconds from SIGTERM to exit: polls in flight finish and pending alerts drain within
    #: it; what is not acknowledged by then stays in the outbox for the next start.
    shutdown_timeout: float = 30.0
    #: Seconds before the first retry while Kafka is unreachable; doubles per failed retry.
    retry_backoff_initial: float = 0.5
    #: Upper bound of the retry back-off, in seconds (also the longest wait after the broker is back).
    retry_backoff_max: float = 30.0
    #: Tries of a record the broker answers with an error that is neither an outage nor a
    #: known rejection (an unknown error code); then it goes to the dead-letter topic.
    #: Outages (connection refused, timeouts) are retried for as long as they last.
    max_attempts: int = 10


@dataclass(frozen=True)
class LogSettings:
    level: str = "info"
    #: ``auto`` (JSON unless on a terminal), ``json`` or ``console``.
    format: str = "auto"


@dataclass(frozen=True)
class HttpSettings:
    """The daemon's own HTTP endpoint (metrics, health, status page)."""

    enabled: bool = True
    listen: str = "127.0.0.1:8765"
    #: Seconds between two automatic refreshes of the status page (0 = never).
    refresh: float = 10.0
    #: Latest alerts kept in memory and shown on the status page.
    latest_alerts: int = 50


@dataclass(frozen=True)
class HealthSettings:
    """Feed health (failing, stale), readiness probing, and the feed-health topic."""

    #: Topic that feed-health changes (ok -> failing, ok -> stale, and back) are published to.
    topic: str = "monitor.feed-health"
    #: Consecutive failed polls after which a feed counts as failing.
    failing_after: int = 3
    #: A feed is stale after this many times its learned cadence without a new item.
    stale_factor: float = 4.0
    #: ...but never before this many seconds without a new item (quiet nights are normal).
    stale_min_age: float = 3600.0
    #: Seconds between two broker reachability checks and stale-feed sweeps.
    check_interval: float = 15.0


@dataclass(frozen=True)
class Settings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    state: StateSettings = field(default_factory=StateSettings)
    feeds: FeedsSettings = field(default_factory=FeedsSettings)
    fulltext: FulltextSettings = field(default_factory=FulltextSettings)
    stories: StoriesSettings = field(default_factory=StoriesSettings)
    rules: RulesSettings = field(default_factory=RulesSettings)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    log: LogSettings = field(default_factory=LogSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    #: The file these settings came from (None: defaults only).
    source: Path | None = None

    @property
    def base_dir(self) -> Path:
        return self.source.parent if self.source is not None else Path.cwd()

    def resolve(self, path: str) -> Path:
        """A path from the config, relative to the config file's directory."""
        candidate = Path(path).expanduser()
        return candidate if candidate.is_absolute() else self.base_dir / candidate

    @property
    def state_dir(self) -> Path:
        return self.resolve(self.state.dir)

    @property
    def rule_paths(self) -> list[Path]:
        return [self.resolve(p) for p in self.rules.paths]

    def configured_feeds(self) -> list[Feed]:
        """Feeds listed in the config file itself (OPML feeds are read by :mod:`monitor.opml`)."""
        return [_feed_from_table(table, self) for table in self.feeds.feed]


_SECTIONS: dict[str, type] = {
    f.name: typing.get_type_hints(Settings)[f.name]
    for f in dataclasses.fields(Settings)
    if f.name != "source"
}

_FEED_KEYS = {f.name for f in dataclasses.fields(Feed)}


def _feed_from_table(table: Mapping[str, Any], settings: Settings) -> Feed:
    url = table["url"]
    if _looks_like_local_path(url):
        url = str(settings.resolve(url))
    return Feed(
        url=url,
        interval=float(table.get("interval", settings.feeds.interval)),
        name=table.get("name"),
        enabled=bool(table.get("enabled", True)),
        headers=dict(table.get("headers", {})),
        fulltext=bool(table.get("fulltext", False)),
        expected_update_period=table.get("expected_update_period"),
    )


def _looks_like_local_path(url: str) -> bool:
    return "://" not in url


def load_settings(
    path: Path | str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    required: bool = False,
) -> Settings:
    """Read settings from a TOML file, then apply ``NEWS_MONITOR_*`` environment overrides.

    ``path`` None means ``monitor.toml`` in the working directory when it exists, else
    the built-in defaults. With ``required`` a missing file is an error (an operator
    who passed ``--config`` wants that file). Raises :class:`ConfigError` naming the
    file, key and what would be valid.
    """
    environ = os.environ if environ is None else environ
    source: Path | None
    raw: dict[str, Any] = {}
    if path is None:
        source = DEFAULT_CONFIG.resolve() if DEFAULT_CONFIG.exists() else None
    else:
        source = Path(path).expanduser().resolve()
        if not source.exists():
            if required:
                raise ConfigError(
                    "config file not found",
                    location=SourceLocation(str(path)),
                    hint="pass an existing file with --config, or omit it to use monitor.toml",
                )
            source = None
    if source is not None:
        try:
            raw = tomllib.loads(source.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"invalid TOML: {exc}", location=_location_of(source, exc)) from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"cannot read config: {exc}", location=SourceLocation(str(source))) from exc

    where = str(source) if source is not None else "<defaults>"
    sections: dict[str, Any] = {}
    for section_name, section_value in raw.items():
        if section_name not in _SECTIONS:
            raise ConfigError(
                f"unknown section [{section_name}]",
                location=SourceLocation(where),
                hint=_suggest(section_name, _SECTIONS),
            )
        if not isinstance(section_value, dict):
            raise ConfigError(
                f"[{section_name}] must be a table, not {type(section_value).__name__}",
                location=SourceLocation(where),
            )
        sections[section_name] = _build_section(section_name, section_value, where)

    for section_name, section_type in _SECTIONS.items():
        current = sections.get(section_name, section_type())
        sections[section_name] = _apply_env(section_name, current, environ)

    _check_env_names(environ)
    settings = Settings(**sections, source=source)
    _validate(settings, where)
    return settings


def _location_of(source: Path, exc: tomllib.TOMLDecodeError) -> SourceLocation:
    # tomllib puts "(at line N, column M)" in the message but also exposes them on 3.14+.
    line = getattr(exc, "lineno", None)
    column = getattr(exc, "colno", None)
    return SourceLocation(str(source), line, column)


def _suggest(name: str, valid: typing.Iterable[str]) -> str:
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1)
    if close:
        return f"did you mean {close[0]!r}? valid: {', '.join(valid)}"
    return f"valid: {', '.join(valid)}"


def _build_section(section_name: str, values: Mapping[str, Any], where: str) -> Any:
    section_type = _SECTIONS[section_name]
    hints = typing.get_type_hints(section_type)
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key not in hints:
            raise ConfigError(
                f"unknown key {key!r} in [{section_name}]",
                location=SourceLocation(where),
                hint=_suggest(key, hints),
            )
        kwargs[key] = _coerce(value, hints[key], f"[{section_name}] {key}", where)
    if section_name == "feeds":
        for index, table in enumerate(kwargs.get("feed", ())):
            _check_feed_table(table, index, where)
    return section_type(**kwargs)


def _check_feed_table(table: Any, index: int, where: str) -> None:
    label = f"[[feeds.feed]] #{index + 1}"
    if not isinstance(table, Mapping):
        raise ConfigError(f"{label} must be a table", location=SourceLocation(where))
    unknown = set(table) - _FEED_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(
            f"unknown key {key!r} in {label}",
            location=SourceLocation(where),
            hint=_suggest(key, _FEED_KEYS),
        )
    if not isinstance(table.get("url"), str) or not table["url"].strip():
        raise ConfigError(f"{label} needs a url", location=SourceLocation(where), hint='url = "https://example.org/feed.xml"')


def _coerce(value: Any, annotation: Any, label: str, where: str) -> Any:
    """Check a TOML value against the field's type; ints are accepted for floats."""
    origin = typing.get_origin(annotation)
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif origin is tuple:
        if isinstance(value, str) and typing.get_args(annotation)[0] is str:
            return (value,)
        if isinstance(value, list):
            return tuple(value)
    elif origin in (dict, Mapping) or annotation is Mapping:
        if isinstance(value, dict):
            return value
    type_name = getattr(annotation, "__name__", str(annotation))
    raise ConfigError(
        f"{label} must be {_describe(annotation)}, got {value!r}",
        location=SourceLocation(where),
        hint=f"expected a {type_name}",
    )


def _describe(annotation: Any) -> str:
    if annotation is bool:
        return "true or false"
    if annotation in (int, float):
        return "a number"
    if annotation is str:
        return "a string"
    return "a list"


def _env_name(section: str, key: str) -> str:
    return f"{ENV_PREFIX}{section.upper()}_{key.upper()}"


def _apply_env(section_name: str, current: Any, environ: Mapping[str, str]) -> Any:
    hints = typing.get_type_hints(type(current))
    changes: dict[str, Any] = {}
    for key, annotation in hints.items():
        name = _env_name(section_name, key)
        if name not in environ:
            continue
        raw = environ[name]
        changes[key] = _parse_env(raw, annotation, name)
    return dataclasses.replace(current, **changes) if changes else current


def _parse_env(raw: str, annotation: Any, name: str) -> Any:
    text = raw.strip()
    try:
        if annotation is bool:
            lowered = text.lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError("expected true or false")
        if annotation is int:
            return int(text)
        if annotation is float:
            return float(text)
        if typing.get_origin(annotation) is tuple:
            if typing.get_args(annotation)[0] is not str:
                raise ValueError("this key can only be set in the config file")
            return tuple(part.strip() for part in text.split(",") if part.strip())
    except ValueError as exc:
        raise ConfigError(f"environment variable {name}={raw!r} is invalid: {exc}") from exc
    return raw


def _check_env_names(environ: Mapping[str, str]) -> None:
    """A NEWS_MONITOR_* variable that matches no key is a typo the operator must hear about."""
    known = {
        _env_name(section, key)
        for section, section_type in _SECTIONS.items()
        for key in typing.get_type_hints(section_type)
    }
    for name in environ:
        if name.startswith(ENV_PREFIX) and name not in known and name not in _NON_KEY_VARIABLES:
            raise ConfigError(
                f"environment variable {name} matches no setting",
                hint=_suggest(name, known),
            )


#: Variables with our prefix that are not settings.
_NON_KEY_VARIABLES = {"NEWS_MONITOR_CONFIG"}


def _validate(settings: Settings, where: str) -> None:
    loc = SourceLocation(where)
    feeds = settings.feeds
    if feeds.interval < 1:
        raise ConfigError("[feeds] interval must be at least 1 second", location=loc)
    if feeds.max_interval < feeds.effective_min_interval:
        raise ConfigError(
            "[feeds] max_interval is below min_interval",
            location=loc,
            hint=f"raise max_interval to at least {feeds.effective_min_interval:g}",
        )
    for name in ("concurrency", "per_host", "max_bytes", "max_redirects"):
        if getattr(feeds, name) < 1:
            raise ConfigError(f"[feeds] {name} must be at least 1", location=loc)
    if settings.delivery.queue_size < 1:
        raise ConfigError("[delivery] queue_size must be at least 1", location=loc)
    _validate_kafka_and_delivery(settings, loc)
    if not settings.rules.paths:
        raise ConfigError("[rules] paths is empty", location=loc, hint='paths = ["rules"]')
    if settings.kafka.acks not in {"all", "1", "-1"}:
        raise ConfigError(
            f"[kafka] acks = {settings.kafka.acks!r} is not supported",
            location=loc,
            hint='use "all" (or "1"); acks=0 cannot confirm delivery',
        )
    if settings.kafka.enable_idempotence.strip().lower() not in {"auto", "true", "false", "1", "0", "yes", "no", "on", "off"}:
        raise ConfigError("[kafka] enable_idempotence must be auto, true or false", location=loc)
    if settings.log.format not in {"auto", "json", "console"}:
        raise ConfigError("[log] format must be auto, json or console", location=loc)
    if settings.log.level.lower() not in {"debug", "info", "warning", "error", "critical"}:
        raise ConfigError("[log] level must be debug, info, warning, error or critical", location=loc)
    _validate_http_and_health(settings, loc)
    _validate_polling(settings, loc)
    if not settings.kafka.embedded and not settings.kafka.bootstrap_servers.strip():
        raise ConfigError("[kafka] bootstrap_servers is empty", location=loc, hint='"embedded" or "host:9092"')


def _validate_polling(settings: Settings, loc: SourceLocation) -> None:
    feeds, fulltext, stories, state = settings.feeds, settings.fulltext, settings.stories, settings.state
    for name in ("timeout", "connect_timeout", "read_timeout", "parse_timeout"):
        if getattr(feeds, name) <= 0:
            raise ConfigError(f"[feeds] {name} must be above 0 seconds", location=loc)
    if not 0 <= feeds.jitter <= 0.5:
        raise ConfigError("[feeds] jitter must be between 0 and 0.5", location=loc, hint="0.05 spreads each poll by ±5 % of its interval")
    for name in feeds.redact_params:
        if not isinstance(name, str) or not name.strip() or any(c in name for c in "=&?#"):
            raise ConfigError(
                f"[feeds] redact_params entry {name!r} is not a query parameter name",
                location=loc,
                hint='e.g. redact_params = ["token", "key", "signature"]',
            )
    if state.retention_days <= 0:
        raise ConfigError("[state] retention_days must be above 0", location=loc)
    if state.retention_check <= 0 or state.flush_interval <= 0:
        raise ConfigError("[state] retention_check and flush_interval must be above 0 seconds", location=loc)
    if fulltext.max_bytes < 1 or fulltext.concurrency < 1 or fulltext.timeout <= 0 or fulltext.min_chars < 0:
        raise ConfigError("[fulltext] max_bytes and concurrency must be at least 1, timeout above 0, min_chars not negative", location=loc)
    for entry in fulltext.allow:
        if not isinstance(entry, str) or not entry.strip() or "/" in entry and not _is_network(entry):
            raise ConfigError(
                f"[fulltext] allow entry {entry!r} is not an address, network or host name",
                location=loc,
                hint='e.g. allow = ["10.0.0.0/8", "127.0.0.1", "intranet.example"]',
            )
    if not 0 < stories.threshold <= 1:
        raise ConfigError("[stories] threshold must be above 0 and at most 1", location=loc, hint="0.5 is a good start")
    if stories.window_hours <= 0:
        raise ConfigError("[stories] window_hours must be above 0", location=loc)
    if not 16 <= stories.num_perm <= 512 or stories.shingle_size < 1 or stories.min_shingles < 1:
        raise ConfigError("[stories] num_perm must be 16-512; shingle_size and min_shingles at least 1", location=loc)


def _is_network(entry: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError:
        return False
    return True


def _validate_http_and_health(settings: Settings, loc: SourceLocation) -> None:
    http, health = settings.http, settings.health
    if http.enabled:
        host, _, port = http.listen.rpartition(":")
        if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ConfigError(
                f"[http] listen = {http.listen!r} is not host:port",
                location=loc,
                hint='e.g. "127.0.0.1:8765", or "0.0.0.0:8765" to open it beyond this machine',
            )
    if http.refresh < 0:
        raise ConfigError("[http] refresh must be 0 (off) or a number of seconds", location=loc)
    if http.latest_alerts < 0:
        raise ConfigError("[http] latest_alerts must not be negative", location=loc)
    if not health.topic.strip():
        raise ConfigError("[health] topic is empty", location=loc, hint='topic = "monitor.feed-health"')
    if health.failing_after < 1:
        raise ConfigError("[health] failing_after must be at least 1", location=loc)
    if health.stale_factor <= 1:
        raise ConfigError("[health] stale_factor must be above 1", location=loc, hint="4 flags a feed after four of its usual gaps")
    if health.stale_min_age < 0:
        raise ConfigError("[health] stale_min_age must not be negative", location=loc)
    if health.check_interval <= 0:
        raise ConfigError("[health] check_interval must be above 0", location=loc)


_SECURITY_PROTOCOLS = {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}
_SASL_MECHANISMS = {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}


def _validate_kafka_and_delivery(settings: Settings, loc: SourceLocation) -> None:
    kafka, delivery = settings.kafka, settings.delivery
    if delivery.shutdown_timeout < 0:
        raise ConfigError("[delivery] shutdown_timeout must not be negative", location=loc)
    if delivery.retry_backoff_initial <= 0 or delivery.retry_backoff_max < delivery.retry_backoff_initial:
        raise ConfigError(
            "[delivery] retry_backoff_initial must be above 0 and at most retry_backoff_max",
            location=loc,
            hint="e.g. retry_backoff_initial = 0.5, retry_backoff_max = 30",
        )
    if delivery.max_attempts < 1:
        raise ConfigError("[delivery] max_attempts must be at least 1", location=loc, hint="e.g. max_attempts = 10")
    if kafka.security_protocol not in _SECURITY_PROTOCOLS:
        raise ConfigError(
            f"[kafka] security_protocol = {kafka.security_protocol!r} is not supported",
            location=loc,
            hint=f"one of {', '.join(sorted(_SECURITY_PROTOCOLS))}",
        )
    if kafka.security_protocol.startswith("SASL_"):
        if (kafka.sasl_mechanism or "PLAIN") not in _SASL_MECHANISMS:
            raise ConfigError(
                f"[kafka] sasl_mechanism = {kafka.sasl_mechanism!r} is not supported",
                location=loc,
                hint=f"one of {', '.join(sorted(_SASL_MECHANISMS))}",
            )
        if not kafka.sasl_username or not kafka.sasl_password:
            raise ConfigError(
                f"[kafka] security_protocol = {kafka.security_protocol} needs sasl_username and sasl_password",
                location=loc,
                hint="set the password in NEWS_MONITOR_KAFKA_SASL_PASSWORD rather than in the file",
            )
    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        path = getattr(kafka, name)
        # Checked as the TLS library will open it (relative to the working directory).
        if path and kafka.security_protocol in {"SSL", "SASL_SSL"} and not Path(path).expanduser().is_file():
            raise ConfigError(f"[kafka] {name} = {path!r}: no such file", location=loc, hint="use an absolute path")
    if bool(kafka.ssl_certfile) != bool(kafka.ssl_keyfile) and kafka.security_protocol in {"SSL", "SASL_SSL"}:
        raise ConfigError("[kafka] ssl_certfile and ssl_keyfile go together (client certificate)", location=loc)
    for name in ("topic_partitions", "topic_replication_factor", "request_timeout_ms", "max_request_size", "max_batch_size"):
        if getattr(kafka, name) < 1:
            raise ConfigError(f"[kafka] {name} must be at least 1", location=loc)
    if kafka.linger_ms < 0 or kafka.retry_backoff_ms < 0:
        raise ConfigError("[kafka] linger_ms and retry_backoff_ms must not be negative", location=loc)
    if kafka.compression_type not in {"auto", "none", "", "gzip", "snappy", "lz4", "zstd"}:
        raise ConfigError(
            f"[kafka] compression_type = {kafka.compression_type!r} is not supported",
            location=loc,
            hint="auto, zstd, lz4, snappy, gzip or none",
        )
    if not kafka.dead_letter_topic.strip():
        raise ConfigError("[kafka] dead_letter_topic is empty", location=loc, hint='dead_letter_topic = "alerts.dead-letter"')
    if kafka.articles_topic and kafka.articles_topic == kafka.dead_letter_topic:
        raise ConfigError("[kafka] articles_topic must differ from dead_letter_topic", location=loc)


def env_overridable_keys() -> dict[str, list[str]]:
    """Every section and key, for documentation and ``--help``."""
    return {section: list(typing.get_type_hints(t)) for section, t in _SECTIONS.items()}

