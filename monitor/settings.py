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
import functools
import ipaddress
import math
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from monitor.errors import ConfigError, error_text
from monitor.language import AUTO, feed_language_problem, language_tag
from monitor.model import Feed, SourceLocation
from monitor.redact import DEFAULT_SECRET_PARAMS

__all__ = [
    "DEFAULT_CONFIG",
    "ENV_PREFIX",
    "ClusterSettings",
    "DeliverySettings",
    "FeedsSettings",
    "FulltextSettings",
    "HealthSettings",
    "HttpSettings",
    "KafkaSettings",
    "LogSettings",
    "NotifySettings",
    "RulesSettings",
    "Settings",
    "SignalsSettings",
    "StateSettings",
    "StoriesSettings",
    "WebSubSettings",
    "load_settings",
    "restart_only_changes",
]

ENV_PREFIX = "NEWS_MONITOR_"
DEFAULT_CONFIG = Path("monitor.toml")
EMBEDDED = "embedded"
#: Largest [feeds] concurrency: one poller task each.
MAX_CONCURRENCY = 10_000
#: Largest [feeds] parse_workers: every one is a process, all started with the pool.
MAX_PARSE_WORKERS = 256


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
class SignalsSettings:
    """Story signals: bursts and spikes per rule, story escalations (docs/signals.md)."""

    #: Run the detectors in the daemon (off: ``news-monitor signals`` may run them instead).
    enabled: bool = True
    #: Distinct outlets at which a story escalates ([] = no escalations).
    escalation: tuple[int, ...] = (3, 10, 30)
    #: ``news-monitor signals``: its consumer group, and its state directory (its own SQLite store).
    group: str = "news-monitor-signals"
    state_dir: str = "state-signals"
    #: ``news-monitor signals``: partitions without a committed offset are read from their
    #: beginning (else from their end, for topics that existed when the process started).
    from_beginning: bool = False
    #: Matchers publish a sighting record here per new article that counted for a rule
    #: (schemas/sighting-v1.json); ``news-monitor signals`` reads it ("" = matchers publish none).
    sightings_topic: str = "news.sightings"
    #: What ``news-monitor signals`` reads: ``sightings`` (the topic above) or ``alerts`` (the
    #: live rules' alert topics, for matchers of a release that publishes no sightings).
    source: str = "sightings"


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
class WebSubSettings:
    """WebSub push subscriptions (docs/websub.md): off by default."""

    enabled: bool = False
    #: The public base URL hubs reach the callback listener at; a token is appended per
    #: subscription, e.g. ``https://monitor.example.org/websub/``.
    callback_url: str = ""
    #: The callback listener, separate from ``[http] listen`` (only it faces the internet).
    listen: str = "127.0.0.1:8767"
    #: Lease asked of the hub, in seconds (the hub's answer is what counts).
    lease_seconds: float = 864000.0
    #: Seconds between two polls of a feed whose subscription is active.
    fallback_interval: float = 3600.0
    #: First wait after a hub error, in seconds; doubles per failure up to ``retry_max``.
    retry_initial: float = 60.0
    #: Longest wait between two subscription attempts (and the wait after a denial).
    retry_max: float = 3600.0
    #: Callback requests per second the listener takes, in all (more get 429).
    rate_limit: float = 200.0
    #: Pushes per second one subscription may deliver (bursts of ten times this; more get 429).
    feed_rate_limit: float = 1.0
    #: Pushes accepted and waiting for the pipeline before the listener answers 503.
    queue_size: int = 1000
    #: Hub addresses allowed although not public: networks, addresses or host names
    #: (as [fulltext] allow). Empty: public hubs only.
    hub_allow: tuple[str, ...] = ()


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
class NotifySettings:
    """``news-monitor notify``: the consumer that sends alerts to people (docs/notify.md)."""

    #: Consumer group: instances with the same group share the partitions.
    group: str = "news-monitor-notify"
    #: Topics to read (names or globs): alerts, and their signals (``<topic>.signals``).
    topics: tuple[str, ...] = ("alerts.*",)
    #: Topics (names or globs) not to read, though ``topics`` matches them.
    exclude_topics: tuple[str, ...] = ("*.shadow", "*.shadow.signals")
    #: Partitions without a committed offset: read from their beginning (else from their end,
    #: for topics that existed when the process started).
    from_beginning: bool = False
    #: Where entries go after ``max_attempts`` failed sends, with the reason.
    dead_letter_topic: str = "notify.dead-letter"
    max_attempts: int = 8
    retry_backoff_initial: float = 1.0
    retry_backoff_max: float = 60.0
    #: Messages in flight per destination.
    concurrency: int = 4
    #: Days an alert id is remembered per destination (never sent twice within it).
    dedupe_days: float = 7.0
    #: Seconds from SIGTERM to exit (sends in flight finish within it).
    shutdown_timeout: float = 10.0
    #: Seconds one send (a message or a digest) may take in all before it counts as failed.
    send_timeout: float = 120.0
    #: The notify process's /metrics, /healthz, /readyz and status page ("" = off).
    listen: str = "127.0.0.1:8766"
    #: ``[[notify.destination]]`` tables (name, url, filters, digest, ...).
    destination: tuple[Mapping[str, Any], ...] = ()


@dataclass(frozen=True)
class ClusterSettings:
    """``run --role``: pollers and matchers sharing the work through Kafka (docs/scaling.md)."""

    #: Seconds a poller or matcher may go unheard before the group gives its work to the others.
    session_timeout: float = 10.0
    #: Compacted: feed URL -> the feed's settings (``news-monitor feeds sync`` writes it).
    feeds_topic: str = "news.feeds"
    #: Key article id, value the normalised article (schemas/article-v1.json).
    articles_topic: str = "news.articles"
    #: Compacted: feed URL -> the feed's polling state, co-partitioned with ``feeds_topic``.
    feed_state_topic: str = "news.feed-state"
    #: Compacted: article id -> what a matcher remembers of it, co-partitioned with ``articles_topic``.
    matcher_state_topic: str = "news.matcher-state"
    #: Compacted: feed URL -> its WebSub subscription (secret included), co-partitioned with ``feeds_topic``.
    websub_topic: str = "news.websub"
    poller_group: str = "news-monitor-pollers"
    matcher_group: str = "news-monitor-matchers"
    #: This instance's name in ``status --cluster`` ("" = host name and process id).
    instance_id: str = ""

    def topics(self) -> dict[str, str]:
        """Every cluster topic by its key name."""
        return {
            "feeds_topic": self.feeds_topic,
            "articles_topic": self.articles_topic,
            "feed_state_topic": self.feed_state_topic,
            "matcher_state_topic": self.matcher_state_topic,
            "websub_topic": self.websub_topic,
        }


@dataclass(frozen=True)
class Settings:
    kafka: KafkaSettings = field(default_factory=KafkaSettings)
    state: StateSettings = field(default_factory=StateSettings)
    feeds: FeedsSettings = field(default_factory=FeedsSettings)
    fulltext: FulltextSettings = field(default_factory=FulltextSettings)
    stories: StoriesSettings = field(default_factory=StoriesSettings)
    signals: SignalsSettings = field(default_factory=SignalsSettings)
    rules: RulesSettings = field(default_factory=RulesSettings)
    delivery: DeliverySettings = field(default_factory=DeliverySettings)
    log: LogSettings = field(default_factory=LogSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    websub: WebSubSettings = field(default_factory=WebSubSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    notify: NotifySettings = field(default_factory=NotifySettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
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

    def notify_destinations(
        self, environ: Mapping[str, str] | None = None, text: str | None = None, *, secrets: bool = True
    ) -> list[Any]:
        """The checked ``[[notify.destination]]`` tables (:class:`monitor.notify.config.Destination`),
        ``${NAME}`` in urls taken from ``environ`` and ``url_file`` read (not without
        ``secrets``); :class:`ConfigError` naming the table and key."""
        from monitor.notify.config import destination_from_table

        environ = os.environ if environ is None else environ
        if text is None and self.source is not None:
            try:
                text = self.source.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                text = None
        lines = _TableLines(text or "", "notify", "destination")
        where = str(self.source or "<defaults>")
        destinations = []
        names: set[str] = set()
        for index, table in enumerate(self.notify.destination):
            destination = destination_from_table(
                table, index, where=where, line_of=functools.partial(lines.line, index), environ=environ, resolve=self.resolve,
                secrets=secrets,
            )
            if destination.name in names:
                raise ConfigError(
                    f"{destination.label}: name {destination.name!r} is used by an earlier destination",
                    location=SourceLocation(where, lines.line(index, "name")),
                    hint="each destination needs its own name",
                )
            names.add(destination.name)
            destinations.append(destination)
        return destinations

    def configured_feeds(self) -> list[Feed]:
        """Feeds listed in the config file itself (OPML feeds are read by :mod:`monitor.feeds.opml`).

        Raises :class:`ConfigError` for a table that is not valid (``load_settings`` has
        already checked the tables of a config file, with their lines).
        """
        return [_feed_from_table(table, index, self) for index, table in enumerate(self.feeds.feed)]


_SECTIONS: dict[str, type] = {
    f.name: typing.get_type_hints(Settings)[f.name]
    for f in dataclasses.fields(Settings)
    if f.name != "source"
}

_FEED_KEYS = {f.name for f in dataclasses.fields(Feed)}

#: A feed's ``websub``: ``auto`` subscribes when the feed names a hub, ``off`` never does.
WEBSUB_MODES = ("auto", "off")

#: The highest ``[signals] escalation`` level: a story keeps at most 1,000 outlets
#: (monitor.signals.detect.MAX_KEPT).
MAX_STORY_OUTLETS = 1000

#: URL schemes a feed location may have (anything without "://" is a path).
FEED_SCHEMES = ("http", "https", "file")

# RFC 9110 token characters: what a header name may be made of.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def header_problem(name: object, value: object) -> str | None:
    """Why ``name: value`` cannot be sent as an HTTP request header, or None when it can."""
    if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
        return f"header name {name!r} is not a valid HTTP header name"
    if not isinstance(value, str):
        return f"header {name} must be a string, got {value!r}"
    if any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value):
        return f"header {name} has a line break or control character in its value"
    return None


def feed_location_problem(url: str) -> str | None:
    """Why ``url`` is not a feed location (http(s) URL, file:// URL or a path), or None."""
    if not url.strip():
        return "url is empty"
    if any(ord(c) < 32 or ord(c) == 127 for c in url):
        return f"url {url!r} has a control character"
    if "://" not in url:
        return None
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in FEED_SCHEMES:
        return f"url {url!r} has the scheme {parts.scheme!r}; a feed is an http(s):// or file:// URL, or a path"
    if parts.scheme.lower() != "file" and not parts.hostname:
        return f"url {url!r} has no host"
    return None


class _FeedTable:
    """Checks one ``[[feeds.feed]]`` table; every error names the file, the table's number
    (1-based, in file order) and url, the key, and what the key must be."""

    def __init__(self, table: Mapping[str, Any], index: int, where: str, lines: _TableLines | None) -> None:
        self.table = table
        self.index = index
        self.where = where
        self.lines = lines
        url = table.get("url") if isinstance(table, Mapping) else None
        about = f" ({url})" if isinstance(url, str) and url.strip() else ""
        self.label = f"[[feeds.feed]] #{index + 1}{about}"

    def fail(self, message: str, key: str | None = None, hint: str | None = None) -> ConfigError:
        line = self.lines.line(self.index, key) if self.lines is not None else None
        return ConfigError(f"{self.label}: {message}", location=SourceLocation(self.where, line), hint=hint)

    def seconds(self, key: str, default: float | None) -> float | None:
        if key not in self.table:
            return default
        value = self.table[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 1:
            raise self.fail(f"{key} must be a number of seconds, at least 1, got {value!r}", key, hint=f"e.g. {key} = 300, without quotes")
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(f"{key} must be true or false, got {value!r}", key, hint=f"a TOML boolean, without quotes: {key} = false")
        return value

    def text(self, key: str) -> str | None:
        value = self.table.get(key)
        if value is not None and not isinstance(value, str):
            raise self.fail(f"{key} must be a string, got {value!r}", key, hint=f'{key} = "..."')
        return value

    def choice(self, key: str, choices: tuple[str, ...]) -> str:
        value = self.table.get(key, choices[0])
        if value not in choices:
            raise self.fail(f"{key} must be one of {', '.join(choices)}, got {value!r}", key, hint=f'{key} = "{choices[-1]}"')
        return str(value)

    def language(self) -> str | None:
        """The feed's ``language``: an ISO 639-1 code (from a tag such as ``fr-CA``) or ``auto``."""
        value = self.text("language")
        if value is None:
            return None
        problem = feed_language_problem(value)
        if problem is not None:
            raise self.fail(problem, "language", hint='language = "fr" (or "auto": detect, ignoring what the feed declares)')
        return language_tag(value) or AUTO

    def headers(self) -> dict[str, str]:
        value = self.table.get("headers", {})
        example = 'headers = { Authorization = "Bearer ...", X-Client = "news-monitor" }'
        if not isinstance(value, Mapping):
            raise self.fail(f"headers must be a table of header names and string values, got {value!r}", "headers", hint=example)
        for name, text in value.items():
            problem = header_problem(name, text)
            if problem is not None:
                raise self.fail(f"headers: {problem}", "headers", hint=example)
        return dict(value)


def _feed_from_table(table: Any, index: int, settings: Settings, *, where: str | None = None, lines: _TableLines | None = None) -> Feed:
    """One ``[[feeds.feed]]`` table as a :class:`Feed`; a local path resolves against the config's folder."""
    where = where or str(settings.source or "<defaults>")
    check = _FeedTable(table, index, where, lines)
    if not isinstance(table, Mapping):
        raise check.fail("must be a table", hint='[[feeds.feed]] then url = "https://example.org/feed.xml" on the next line')
    for key in table:
        if key not in _FEED_KEYS:
            raise check.fail(f"unknown key {key!r}", key, hint=_suggest(key, _FEED_KEYS))
    url = table.get("url")
    if not isinstance(url, str) or not url.strip():
        raise check.fail("needs a url" if url is None else f"url must be a non-empty string, got {url!r}", "url", hint='url = "https://example.org/feed.xml"')
    problem = feed_location_problem(url)
    if problem is not None:
        raise check.fail(problem, "url", hint="e.g. https://example.org/feed.xml, file:///srv/feeds/a.xml or feeds/a.xml")
    url = url.strip()
    if "://" not in url:
        url = str(settings.resolve(url))
    return Feed(
        url=url,
        interval=check.seconds("interval", settings.feeds.interval),  # type: ignore[arg-type]
        name=check.text("name"),
        enabled=check.flag("enabled", True),
        headers=check.headers(),
        fulltext=check.flag("fulltext", False),
        expected_update_period=check.seconds("expected_update_period", None),
        websub=check.choice("websub", WEBSUB_MODES),
        language=check.language(),
    )


#: A header line: ``[section]`` or ``[[section.name]]`` (any line starting with ``[`` ends the keys before it).
_CONFIG_HEADER = re.compile(r"\s*(\[\[|\[)([^\[\]]*)\]")
_CONFIG_KEY = re.compile(r"\s*([A-Za-z0-9_-]+)\s*=")


def _config_blocks(text: str) -> list[tuple[str, int, dict[str, int]]]:
    """Each header of the config text (``[feeds]``, ``[[feeds.feed]]``: spaces inside left
    out; ``[`` for a line it cannot read), its line, and the line where each key under it
    first starts. Best effort, for error locations: keys written inline or dotted have none."""
    blocks: list[tuple[str, int, dict[str, int]]] = []
    keys: dict[str, int] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("["):
            header = _CONFIG_HEADER.match(line)
            opening = header.group(1) if header else ""
            name = f"{opening}{''.join(header.group(2).split())}{']' * len(opening)}" if header else "["
            keys = {}
            blocks.append((name, number, keys))
        elif keys is not None and (key := _CONFIG_KEY.match(line)):
            keys.setdefault(key.group(1), number)
    return blocks


class _TableLines:
    """Where each ``[[feeds.feed]]`` table (or ``[[notify.destination]]``, by ``section`` and
    ``name``) and each key in it starts in the config text: the N-th header is table N.
    Best effort: tables written inline (``feed = [{...}]``) have no line."""

    def __init__(self, text: str, section: str = "feeds", name: str = "feed") -> None:
        header = f"[[{section}.{name}]]"
        self._tables = [(number, keys) for found, number, keys in _config_blocks(text) if found == header]

    def line(self, index: int, key: str | None) -> int | None:
        if index >= len(self._tables):
            return None
        start, keys = self._tables[index]
        return keys.get(key, start) if key else start


class _KeyLines:
    """Where each ``[section]`` header and each key under it starts in the config text.
    Best effort: a dotted key (``feeds.interval = 60``) or an inline table has no line."""

    _SECTION = re.compile(r"\[([A-Za-z0-9_-]+)\]")

    def __init__(self, text: str) -> None:
        self._lines: dict[tuple[str, str | None], int] = {}
        for header, number, keys in _config_blocks(text):
            if section := self._SECTION.fullmatch(header):
                self._lines.setdefault((section.group(1), None), number)
                for key, line in keys.items():
                    self._lines.setdefault((section.group(1), key), line)

    def line(self, section: str, key: str | None = None) -> int | None:
        """The line of ``key`` in ``[section]``, else of the section's header, else None."""
        return self._lines.get((section, key)) or self._lines.get((section, None))


#: The start of every message about settings: ``[feeds] interval must be ...``,
#: ``unknown key 'x' in [feeds]``, ``unknown section [x]``.
_SETTING_MESSAGE = re.compile(r"(?:unknown key '(?P<unknown>[A-Za-z0-9_-]+)' in |unknown section )?\[(?P<section>[A-Za-z0-9_-]+)\]")


def _located(exc: ConfigError, where: str, lines: _KeyLines, environ: Mapping[str, str]) -> ConfigError:
    """``exc`` at the line of the setting its message names (``[section] key ...``): the
    line of the one named key the file sets, else the section's header; or the
    environment variable that set the value. Errors that are not about the file's
    settings (a bad variable name or value) are returned as they are."""
    found = _SETTING_MESSAGE.match(exc.message)
    if found is None or exc.location is None or exc.location.path != where or exc.location.line is not None:
        return exc
    section, unknown = found.group("section"), found.group("unknown")
    keys = typing.get_type_hints(_SECTIONS[section]) if section in _SECTIONS else {}
    named = [unknown] if unknown else [word for word in re.findall(r"[a-z_]+", exc.message[found.end() :]) if word in keys]
    in_env = [key for key in named if _env_name(section, key) in environ]
    in_file = [key for key in named if key not in in_env and lines.line(section, key) != lines.line(section)]
    if len(in_env) == 1 and not in_file:
        return ConfigError(exc.message, location=SourceLocation(f"environment variable {_env_name(section, in_env[0])}"), hint=exc.hint)
    line = lines.line(section, in_file[0] if len(in_file) == 1 else None)
    return exc if line is None else ConfigError(exc.message, location=SourceLocation(where, line), hint=exc.hint)


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
    source = _config_file(path, required)
    text, raw = _read_config(source)
    where = str(source) if source is not None else "<defaults>"
    try:
        sections = _build_sections(raw, where)
        for section_name, section_type in _SECTIONS.items():
            current = sections.get(section_name, section_type())
            sections[section_name] = _apply_env(section_name, current, environ)
        _check_env_names(environ)
        settings = Settings(**sections, source=source)
        _validate(settings, where)
    except ConfigError as exc:
        raise _located(exc, where, _KeyLines(text), environ) from exc.__cause__
    lines = _TableLines(text)
    for index, table in enumerate(settings.feeds.feed):
        _feed_from_table(table, index, settings, where=where, lines=lines)
    settings.notify_destinations(environ, text, secrets=False)
    return settings


def _config_file(path: Path | str | None, required: bool) -> Path | None:
    """The config file to read: ``path``, else ./monitor.toml when it exists; None: defaults."""
    if path is None:
        return DEFAULT_CONFIG.resolve() if DEFAULT_CONFIG.exists() else None
    source = Path(path).expanduser().resolve()
    if source.exists():
        return source
    if required:
        raise ConfigError(
            "config file not found",
            location=SourceLocation(str(path)),
            hint="pass an existing file with --config, or omit it to use monitor.toml",
        )
    return None


def _read_config(source: Path | None) -> tuple[str, dict[str, Any]]:
    """The file's text and its TOML tables (empty for the defaults)."""
    if source is None:
        return "", {}
    try:
        text = source.read_text(encoding="utf-8")
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        location, problem = _location_of(source, exc)
        raise ConfigError(f"invalid TOML: {problem}", location=location) from exc
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise ConfigError(
            f"not UTF-8: byte 0x{exc.object[exc.start]:02x} is not valid here", location=SourceLocation(str(source), line),
            hint="save the file as UTF-8",
        ) from exc  # fmt: skip
    except OSError as exc:
        # The location names the file already: the system's words alone.
        raise ConfigError(f"cannot read config: {exc.strerror or error_text(exc)}", location=SourceLocation(str(source))) from exc


def _build_sections(raw: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Each section of the file as its settings dataclass; unknown sections are errors."""
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
    return sections


def _location_of(source: Path, exc: tomllib.TOMLDecodeError) -> tuple[SourceLocation, str]:
    """Where tomllib found the problem, and the problem without its "(at line N, column M)"
    (the attributes exist from Python 3.14 on; before, only the message has them)."""
    problem = str(exc)
    found = re.search(r"\s*\(at line (\d+), column (\d+)\)$", problem)
    line, column = getattr(exc, "lineno", None), getattr(exc, "colno", None)
    if found is not None:
        problem = problem[: found.start()]
        line, column = line or int(found.group(1)), column or int(found.group(2))
    return SourceLocation(str(source), line, column), problem


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
        if (section_name, key) in _AUTO_OR_BOOLEAN and isinstance(value, bool):
            value = str(value).lower()  # "auto", or true/false written as a TOML boolean
        kwargs[key] = _coerce(value, hints[key], f"[{section_name}] {key}", where)
    return section_type(**kwargs)


#: String settings whose values are "auto" or a boolean: true/false may be TOML booleans.
_AUTO_OR_BOOLEAN = {("kafka", "enable_idempotence")}


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
        # TOML has inf and nan; no setting means either.
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    elif annotation is str:
        if isinstance(value, str):
            return value
    elif origin is tuple:
        item = typing.get_args(annotation)[0]
        if isinstance(value, str) and item is str:
            return (value,)
        if isinstance(value, list):
            for element in value:
                if not _element_ok(element, item):
                    raise ConfigError(
                        f"{label} must be {_describe(annotation)}, got {element!r} in the list",
                        location=SourceLocation(where),
                        hint=_ELEMENT_HINTS.get(item, "one [[section.key]] table each"),
                    )
            return tuple(value)
        if isinstance(value, dict) and item is not str and item is not int:
            # [feeds.feed] written for [[feeds.feed]]: one bracket short, a common slip.
            table = label.replace("] ", ".").strip("[")
            raise ConfigError(
                f"{label} must be a list of tables, got one table",
                location=SourceLocation(where),
                hint=f"write [[{table}]], with two brackets",
            )
    elif (origin in (dict, Mapping) or annotation is Mapping) and isinstance(value, dict):
        return value
    expected = "a finite number" if isinstance(value, float) and not math.isfinite(value) else _describe(annotation)
    raise ConfigError(
        f"{label} must be {expected}, got {value!r}",
        location=SourceLocation(where),
        hint=_HINTS.get(annotation, "see the Configuration tables in README.md"),
    )


_ELEMENT_HINTS = {str: 'e.g. ["a", "b"]', int: "e.g. [3, 10, 30]"}


def _element_ok(element: Any, item: Any) -> bool:
    if item is int:
        return isinstance(element, int) and not isinstance(element, bool)
    return isinstance(element, str) if item is str else isinstance(element, dict)


_HINTS = {
    bool: "a TOML boolean, without quotes: true or false",
    int: "a number without quotes or decimals, e.g. 10",
    float: "a number without quotes, e.g. 30 or 0.5",
    str: 'a quoted string, e.g. "text"',
}


def _describe(annotation: Any) -> str:
    if annotation is bool:
        return "true or false"
    if annotation is int:
        return "a whole number"
    if annotation is float:
        return "a number"
    if annotation is str:
        return "a string"
    if typing.get_args(annotation)[:1] == (str,):
        return "a list of strings"
    if typing.get_args(annotation)[:1] == (int,):
        return "a list of whole numbers"
    return "a list of tables"


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
            return _env_int(text, "expected a whole number, e.g. 10")
        if annotation is float:
            if not _ENV_FLOAT.fullmatch(text) or not math.isfinite(float(text)):
                raise ValueError("expected a finite number, e.g. 30 or 0.5")
            return float(text)
        if typing.get_origin(annotation) is tuple:
            item = typing.get_args(annotation)[0]
            if item not in (str, int):
                raise ValueError("this key can only be set in the config file")
            parts = [part.strip() for part in text.split(",") if part.strip()]
            if item is int:
                return tuple(_env_int(part, "expected whole numbers separated by commas, e.g. 3,10,30") for part in parts)
            return tuple(parts)
    except ValueError as exc:
        raise ConfigError(f"environment variable {name}={raw!r} is invalid: {exc}") from exc
    return raw


# What a TOML file accepts, in ASCII (int() and float() also take "1_000", "٣" and "inf").
_ENV_INT = re.compile(r"[+-]?[0-9]+")
_ENV_FLOAT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _env_int(text: str, expected: str) -> int:
    if not _ENV_INT.fullmatch(text):
        raise ValueError(expected)
    return int(text)


def _check_env_names(environ: Mapping[str, str]) -> None:
    """A NEWS_MONITOR_* variable that matches no key is a typo the operator must hear about."""
    known = {
        _env_name(section, key)
        for section, section_type in _SECTIONS.items()
        for key in typing.get_type_hints(section_type)
    }
    # The table arrays ([[feeds.feed]], [[notify.destination]]) have a name, but setting it is
    # an error: a hint never offers them.
    settable = {
        _env_name(section, key)
        for section, section_type in _SECTIONS.items()
        for key, annotation in typing.get_type_hints(section_type).items()
        if typing.get_origin(annotation) is not tuple or typing.get_args(annotation)[0] in (str, int)
    }
    for name in environ:
        if name.startswith(ENV_PREFIX) and name not in known and name not in _NON_KEY_VARIABLES:
            raise ConfigError(f"environment variable {name} matches no setting", hint=_env_hint(name, settable))


def _env_hint(name: str, known: set[str]) -> str:
    """The closest variable, and the variables of the name's section (all ~130 would not
    make a readable line), or the sections when it names none."""
    close = difflib.get_close_matches(name, sorted(known), n=1)
    guess = f"did you mean {close[0]!r}? " if close else ""
    sections = sorted(_SECTIONS, key=len, reverse=True)
    section = next((s for s in sections if name.startswith(f"{ENV_PREFIX}{s.upper()}_")), None)
    if section is None:
        return guess + f"variables are {ENV_PREFIX}<SECTION>_<KEY>, sections: {', '.join(sorted(_SECTIONS))}"
    prefix = f"{ENV_PREFIX}{section.upper()}_"
    return guess + f"[{section}]: {', '.join(sorted(k for k in known if k.startswith(prefix)))}"


#: Variables with our prefix that are not settings.
_NON_KEY_VARIABLES = {"NEWS_MONITOR_CONFIG"}


_HOST_NAME = re.compile(r"(?=.{1,253}$)[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]*[A-Za-z0-9_])?)*\.?")


def parse_address(text: str, *, port_zero: bool = False) -> tuple[str, int]:
    """``"host:port"`` or ``"[ipv6]:port"`` -> (host, port); ValueError saying what is wrong.

    The host is a host name or an IPv4 address, or an IPv6 address in brackets; the port
    is 1-65535 (0 too with ``port_zero``: "any free port").
    """
    text = text.strip()
    lowest = 0 if port_zero else 1
    if "://" in text:
        raise ValueError(f"{text!r} is a URL; give host:port only, without a scheme")
    if text.startswith("["):
        host, bracket, port = text[1:].partition("]")
        if not bracket or not port.startswith(":"):
            raise ValueError(f"{text!r} is not [IPv6 address]:port")
        port = port[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} in {text!r} is not an IPv6 address") from None
    else:
        host, colon, port = text.rpartition(":")
        if not colon:
            raise ValueError(f"{text!r} has no port")
        if ":" in host:
            raise ValueError(f"{text!r}: an IPv6 address goes in brackets, e.g. [::1]:{port or 9092}")
        if not _HOST_NAME.fullmatch(host):
            raise ValueError(f"{host!r} in {text!r} is not a host name or IP address")
    if not (port.isascii() and port.isdigit()) or not lowest <= int(port) <= 65535:
        raise ValueError(f"the port in {text!r} must be a number from {lowest} to 65535, got {port!r}")
    return host, int(port)


def bootstrap_addresses(value: str) -> list[tuple[str, int]]:
    """The (host, port) of each entry of a comma-separated ``bootstrap_servers``; ValueError
    saying which entry is wrong and why."""
    entries = value.split(",")
    if any(not entry.strip() for entry in entries):
        raise ValueError(f"{value!r} has an empty entry")
    return [parse_address(entry) for entry in entries]


def _validate(settings: Settings, where: str) -> None:
    loc = SourceLocation(where)
    _validate_feeds(settings.feeds, loc)
    if settings.delivery.queue_size < 1:
        raise ConfigError("[delivery] queue_size must be at least 1", location=loc)
    _validate_delivery(settings.delivery, loc)
    _validate_kafka(settings, loc)
    if not settings.rules.paths or not all(path.strip() for path in settings.rules.paths):
        raise ConfigError("[rules] paths is empty or has an empty entry", location=loc, hint='paths = ["rules"]')
    kafka = settings.kafka
    if kafka.acks not in {"all", "1", "-1"}:
        raise ConfigError(
            f"[kafka] acks = {kafka.acks!r} is not supported",
            location=loc,
            hint='use "all" (or "1"); acks=0 cannot confirm delivery',
        )
    if kafka.enable_idempotence.strip().lower() not in {"auto", "true", "false", "1", "0", "yes", "no", "on", "off"}:
        raise ConfigError("[kafka] enable_idempotence must be auto, true or false", location=loc)
    if settings.log.format not in {"auto", "json", "console"}:
        raise ConfigError("[log] format must be auto, json or console", location=loc)
    if settings.log.level.lower() not in {"debug", "info", "warning", "error", "critical"}:
        raise ConfigError("[log] level must be debug, info, warning, error or critical", location=loc)
    _validate_http_and_health(settings, loc)
    _validate_websub(settings.websub, loc)
    _validate_polling(settings, loc)
    _validate_notify(settings, loc)
    _validate_cluster(settings.cluster, loc)
    _validate_sightings(settings, loc)
    if not kafka.embedded:
        try:
            bootstrap_addresses(kafka.bootstrap_servers)
        except ValueError as exc:
            raise ConfigError(
                f"[kafka] bootstrap_servers: {exc}",
                location=loc,
                hint='"embedded", or host:port entries separated by commas (port 1-65535, IPv6 in brackets), '
                'e.g. "kafka-1:9092,[2001:db8::1]:9092"',
            ) from exc


def _validate_feeds(feeds: FeedsSettings, loc: SourceLocation) -> None:
    if feeds.interval < 1:
        raise ConfigError("[feeds] interval must be at least 1 second", location=loc)
    if not feeds.min_interval and feeds.max_interval < feeds.interval:
        # min_interval 0 stands for interval: name the key the operator did set.
        raise ConfigError(
            f"[feeds] interval ({feeds.interval:g}) is above max_interval ({feeds.max_interval:g})",
            location=loc,
            hint=f"raise max_interval to at least {feeds.interval:g}, or lower interval",
        )
    if feeds.max_interval < feeds.effective_min_interval:
        raise ConfigError(
            "[feeds] max_interval is below min_interval",
            location=loc,
            hint=f"raise max_interval to at least {feeds.effective_min_interval:g}",
        )
    for name in ("concurrency", "per_host", "max_bytes", "max_redirects"):
        if getattr(feeds, name) < 1:
            raise ConfigError(f"[feeds] {name} must be at least 1", location=loc)
    if feeds.concurrency > MAX_CONCURRENCY:
        # One poller task each, created at start: a billion stalled the start-up for minutes.
        raise ConfigError(f"[feeds] concurrency must be at most {MAX_CONCURRENCY:,}, got {feeds.concurrency:,}", location=loc)
    if feeds.min_interval < 0:
        raise ConfigError("[feeds] min_interval must not be negative", location=loc, hint="0 means: the same as interval")
    if not -1 <= feeds.parse_workers <= MAX_PARSE_WORKERS:
        raise ConfigError(
            f"[feeds] parse_workers must be -1, 0 or more, at most {MAX_PARSE_WORKERS}, got {feeds.parse_workers:,}",
            location=loc,
            hint="-1: one process per CPU; 0: parse in a thread; N: N processes",
        )
    if any(ord(c) < 32 or ord(c) == 127 for c in feeds.user_agent):
        raise ConfigError("[feeds] user_agent has a line break or control character", location=loc)


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
    if not state.dir.strip():
        # "" would resolve to the config file's own directory (/etc/news-monitor): an unset
        # variable in NEWS_MONITOR_STATE_DIR=$X must not put the store there.
        raise ConfigError("[state] dir is empty", location=loc, hint='dir = "state", or an absolute path such as "/var/lib/news-monitor"')
    if state.retention_days <= 0:
        raise ConfigError("[state] retention_days must be above 0", location=loc)
    if state.retention_check <= 0 or state.flush_interval <= 0:
        raise ConfigError("[state] retention_check and flush_interval must be above 0 seconds", location=loc)
    if fulltext.max_bytes < 1 or fulltext.concurrency < 1 or fulltext.timeout <= 0 or fulltext.min_chars < 0:
        raise ConfigError("[fulltext] max_bytes and concurrency must be at least 1, timeout above 0, min_chars not negative", location=loc)
    for entry in fulltext.allow:
        if not isinstance(entry, str) or not entry.strip() or ("/" in entry and not _is_network(entry)):
            raise ConfigError(
                f"[fulltext] allow entry {entry!r} is not an address, network or host name",
                location=loc,
                hint='e.g. allow = ["10.0.0.0/8", "127.0.0.1", "intranet.example"]',
            )
    if not 0 < stories.threshold <= 1:
        raise ConfigError("[stories] threshold must be above 0 and at most 1", location=loc, hint="0.5 is a good start")
    if stories.window_hours <= 0:
        raise ConfigError("[stories] window_hours must be above 0", location=loc)
    if any(not 2 <= level <= MAX_STORY_OUTLETS for level in settings.signals.escalation):
        # A story keeps at most that many outlets: a higher level could never be reached.
        raise ConfigError(
            f"[signals] escalation levels must be from 2 to {MAX_STORY_OUTLETS:,} outlets", location=loc, hint="escalation = [3, 10, 30]"
        )
    if not 16 <= stories.num_perm <= 512 or stories.shingle_size < 1 or stories.min_shingles < 1:
        raise ConfigError("[stories] num_perm must be 16-512; shingle_size and min_shingles at least 1", location=loc)


def _is_network(entry: str) -> bool:
    try:
        ipaddress.ip_network(entry.strip(), strict=False)
    except ValueError:
        return False
    return True


def _validate_http_and_health(settings: Settings, loc: SourceLocation) -> None:
    http, health = settings.http, settings.health
    if http.enabled:
        try:
            parse_address(http.listen, port_zero=True)
        except ValueError as exc:
            raise ConfigError(
                f"[http] listen: {exc}",
                location=loc,
                hint='e.g. "127.0.0.1:8765", "[::1]:8765", "0.0.0.0:8765" to open it beyond this machine, port 0 for any free port',
            ) from exc
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


def _validate_websub(websub: WebSubSettings, loc: SourceLocation) -> None:
    if websub.enabled:
        parts = urlsplit(websub.callback_url.strip())
        try:
            parts.port  # noqa: B018 - urlsplit checks the port (0-65535, digits) only when it is read
        except ValueError as exc:
            raise ConfigError(
                f"[websub] callback_url = {websub.callback_url!r}: {exc}",
                location=loc,
                hint='the public URL hubs reach the callback listener at, e.g. "https://monitor.example.org/websub/"',
            ) from exc
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ConfigError(
                f"[websub] callback_url = {websub.callback_url!r} is not an http(s) base URL",
                location=loc,
                hint='the public URL hubs reach the callback listener at, e.g. "https://monitor.example.org/websub/"',
            )
        try:
            parse_address(websub.listen, port_zero=True)
        except ValueError as exc:
            hint = 'e.g. "0.0.0.0:8767": a port of its own, not [http] listen\'s'
            raise ConfigError(f"[websub] listen: {exc}", location=loc, hint=hint) from exc
    for name in ("lease_seconds", "fallback_interval", "retry_initial"):
        if getattr(websub, name) < 1:
            raise ConfigError(f"[websub] {name} must be at least 1 second", location=loc)
    if websub.retry_max < websub.retry_initial:
        raise ConfigError("[websub] retry_max must be at least retry_initial", location=loc)
    if websub.rate_limit <= 0 or websub.feed_rate_limit <= 0 or websub.queue_size < 1:
        raise ConfigError("[websub] rate_limit and feed_rate_limit must be above 0, queue_size at least 1", location=loc)
    for entry in websub.hub_allow:
        if not isinstance(entry, str) or not entry.strip() or ("/" in entry and not _is_network(entry)):
            raise ConfigError(
                f"[websub] hub_allow entry {entry!r} is not an address, network or host name",
                location=loc,
                hint='e.g. hub_allow = ["10.0.0.0/8", "127.0.0.1", "hub.intranet.example"]',
            )


# Kafka topic names: these characters, at most 249 of them.
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_SECURITY_PROTOCOLS = {"PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"}
_SASL_MECHANISMS = {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}


def _validate_notify(settings: Settings, loc: SourceLocation) -> None:
    notify = settings.notify
    if not notify.group.strip():
        raise ConfigError("[notify] group is empty", location=loc, hint='group = "news-monitor-notify"')
    if not notify.topics or not all(t.strip() for t in notify.topics):
        raise ConfigError("[notify] topics is empty or has an empty entry", location=loc, hint='topics = ["alerts.*"]')
    for label, value in (("topics", notify.topics), ("exclude_topics", notify.exclude_topics)):
        for entry in value:
            if not re.fullmatch(r"[A-Za-z0-9._*?\[\]!-]{1,249}", entry.strip()):
                raise ConfigError(
                    f"[notify] {label} entry {entry!r} is not a topic name or glob",
                    location=loc,
                    hint="letters, digits, '.', '_', '-' and the glob characters * ? [ ]",
                )
    if not _TOPIC.fullmatch(notify.dead_letter_topic) or notify.dead_letter_topic in {".", ".."}:
        raise ConfigError(f"[notify] dead_letter_topic = {notify.dead_letter_topic!r} is not a Kafka topic name", location=loc,
                          hint="at most 249 letters, digits, '.', '_' and '-'")  # fmt: skip
    if notify.max_attempts < 1 or notify.concurrency < 1:
        raise ConfigError("[notify] max_attempts and concurrency must be at least 1", location=loc)
    if notify.retry_backoff_initial <= 0 or notify.retry_backoff_max < notify.retry_backoff_initial:
        raise ConfigError(
            "[notify] retry_backoff_initial must be above 0 and at most retry_backoff_max",
            location=loc,
            hint="e.g. retry_backoff_initial = 1, retry_backoff_max = 60",
        )
    if notify.dedupe_days <= 0 or notify.shutdown_timeout < 0:
        raise ConfigError("[notify] dedupe_days must be above 0 and shutdown_timeout not negative", location=loc)
    if notify.send_timeout <= 0:
        raise ConfigError("[notify] send_timeout must be above 0", location=loc, hint="send_timeout = 120")
    if notify.listen.strip():
        try:
            parse_address(notify.listen, port_zero=True)
        except ValueError as exc:
            raise ConfigError(f"[notify] listen: {exc}", location=loc, hint='e.g. "127.0.0.1:8766"; "" turns the endpoint off') from exc


def _validate_delivery(delivery: DeliverySettings, loc: SourceLocation) -> None:
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


#: Kafka's protocol fields: 32-bit, replication factors 16-bit.
_KAFKA_MOST = {
    name: 2**31 - 1
    for name in ("topic_partitions", "request_timeout_ms", "max_request_size", "max_batch_size", "linger_ms", "retry_backoff_ms")
} | {"topic_replication_factor": 2**15 - 1}


def _validate_kafka(settings: Settings, loc: SourceLocation) -> None:
    kafka = settings.kafka
    _validate_kafka_security(kafka, loc)
    for name in ("topic_partitions", "topic_replication_factor", "request_timeout_ms", "max_request_size", "max_batch_size"):
        if getattr(kafka, name) < 1:
            raise ConfigError(f"[kafka] {name} must be at least 1", location=loc)
    if kafka.linger_ms < 0 or kafka.retry_backoff_ms < 0:
        raise ConfigError("[kafka] linger_ms and retry_backoff_ms must not be negative", location=loc)
    for name, most in _KAFKA_MOST.items():
        if getattr(kafka, name) > most:
            # Sent to the broker in a fixed-size field: a larger value was a struct.error traceback.
            raise ConfigError(f"[kafka] {name} must be at most {most:,}, got {getattr(kafka, name):,}", location=loc)
    if kafka.compression_type not in {"auto", "none", "", "gzip", "snappy", "lz4", "zstd"}:
        raise ConfigError(
            f"[kafka] compression_type = {kafka.compression_type!r} is not supported",
            location=loc,
            hint="auto, zstd, lz4, snappy, gzip or none",
        )
    _validate_topics(settings, loc)
    if kafka.connect_timeout <= 0:
        raise ConfigError("[kafka] connect_timeout must be above 0 seconds", location=loc)
    if not 0 <= kafka.embedded_port <= 65535:
        raise ConfigError(f"[kafka] embedded_port must be 0 (any free port) to 65535, got {kafka.embedded_port}", location=loc)


def _validate_kafka_security(kafka: KafkaSettings, loc: SourceLocation) -> None:
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


def _validate_topics(settings: Settings, loc: SourceLocation) -> None:
    kafka = settings.kafka
    if not kafka.dead_letter_topic.strip():
        raise ConfigError("[kafka] dead_letter_topic is empty", location=loc, hint='dead_letter_topic = "alerts.dead-letter"')
    for label, topic in (
        ("[kafka] dead_letter_topic", kafka.dead_letter_topic),
        ("[kafka] articles_topic", kafka.articles_topic),
        ("[health] topic", settings.health.topic),
    ):
        if topic and (not _TOPIC.fullmatch(topic) or topic in {".", ".."}):
            raise ConfigError(
                f"{label} = {topic!r} is not a Kafka topic name",
                location=loc,
                hint="at most 249 letters, digits, '.', '_' and '-'",
            )
    if kafka.articles_topic and kafka.articles_topic == kafka.dead_letter_topic:
        raise ConfigError("[kafka] articles_topic must differ from dead_letter_topic", location=loc)


def _validate_cluster(cluster: ClusterSettings, loc: SourceLocation) -> None:
    if not math.isfinite(cluster.session_timeout) or not 6 <= cluster.session_timeout <= 300:
        raise ConfigError(
            f"[cluster] session_timeout = {cluster.session_timeout!r} is out of range",
            location=loc,
            hint="seconds from 6 to 300 (Kafka's default group.min/max.session.timeout.ms), e.g. 10",
        )
    topics = cluster.topics()
    for key, topic in topics.items():
        if not _TOPIC.fullmatch(topic) or topic in {".", ".."}:
            raise ConfigError(
                f"[cluster] {key} = {topic!r} is not a Kafka topic name", location=loc, hint="at most 249 letters, digits, '.', '_' and '-'"
            )
    if len(set(topics.values())) < len(topics):
        raise ConfigError("[cluster] the topics must all differ", location=loc, hint=", ".join(f"{k} = {v!r}" for k, v in topics.items()))
    for key in ("poller_group", "matcher_group"):
        if not getattr(cluster, key).strip():
            raise ConfigError(f"[cluster] {key} is empty", location=loc, hint=f'{key} = "{getattr(ClusterSettings, key)}"')
    if cluster.poller_group == cluster.matcher_group:
        raise ConfigError("[cluster] poller_group and matcher_group must differ", location=loc)


def _validate_sightings(settings: Settings, loc: SourceLocation) -> None:
    signals = settings.signals
    if signals.source not in {"sightings", "alerts"}:
        raise ConfigError(
            f"[signals] source = {signals.source!r} is not supported", location=loc,
            hint='"sightings" (the matchers\' sightings topic) or "alerts" (the live rules\' alert topics)',
        )  # fmt: skip
    topic = signals.sightings_topic
    if not topic:
        # Matchers then publish none; only news-monitor signals needs one to read (SignalsProcess).
        return
    if not _TOPIC.fullmatch(topic) or topic in {".", ".."}:
        raise ConfigError(
            f"[signals] sightings_topic = {topic!r} is not a Kafka topic name", location=loc,
            hint="at most 249 letters, digits, '.', '_' and '-'",
        )  # fmt: skip
    taken = {*settings.cluster.topics().values(), settings.kafka.dead_letter_topic, settings.kafka.articles_topic, settings.health.topic}
    if topic in taken:
        raise ConfigError(f"[signals] sightings_topic = {topic!r} is already another of the monitor's topics", location=loc)


#: Settings a SIGHUP reload applies; any other change waits for a restart (and is logged).
RELOADED = frozenset({("feeds", "feed"), ("feeds", "opml"), ("feeds", "interval")})


def restart_only_changes(running: Settings, loaded: Settings) -> list[str]:
    """``[section] key`` of each setting that differs but is not reloaded (:data:`RELOADED`)."""
    changed = []
    for section in dataclasses.fields(Settings):
        if section.name == "source":
            continue
        old, new = getattr(running, section.name), getattr(loaded, section.name)
        for key in dataclasses.fields(old):
            if (section.name, key.name) not in RELOADED and getattr(old, key.name) != getattr(new, key.name):
                changed.append(f"[{section.name}] {key.name}")
    return changed


def env_overridable_keys() -> dict[str, list[str]]:
    """Every section and key, for documentation and ``--help``."""
    return {section: list(typing.get_type_hints(t)) for section, t in _SECTIONS.items()}

