"""The typed records that flow between pipeline stages.

feed -> fetch -> parse -> normalise -> dedupe -> match -> publish:
``Feed`` says what to poll, ``Article`` is one normalised entry, ``Rule`` is one
operator rule, ``Match`` is a rule that fired on an article (with its evidence),
and ``Alert`` is the message published to Kafka.

Standard library only: every other module may import this one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

__all__ = [
    "FIELDS",
    "Alert",
    "Article",
    "Burst",
    "ExampleArticle",
    "Feed",
    "Hit",
    "Match",
    "Record",
    "Rule",
    "RuleExamples",
    "Signal",
    "SignalArticle",
    "SignalExample",
    "SourceLocation",
    "Spike",
    "alert_id_for",
    "signal_id_for",
]

#: The article fields a rule can be scoped to, in the order they are searched.
FIELDS: tuple[str, ...] = ("title", "summary", "body")


@dataclass(frozen=True, slots=True)
class SourceLocation:
    """Where something came from: a file and, when known, a 1-based line and column."""

    path: str
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        if self.line is None:
            return self.path
        if self.column is None:
            return f"{self.path}:{self.line}"
        return f"{self.path}:{self.line}:{self.column}"


@dataclass(frozen=True, slots=True)
class Feed:
    """One feed to poll, as the operator configured it."""

    url: str
    interval: float = 300.0
    name: str | None = None
    enabled: bool = True
    headers: Mapping[str, str] = field(default_factory=dict)
    fulltext: bool = False
    #: Seconds without a new item after which the feed counts as stale (None: learned).
    expected_update_period: float | None = None
    #: ``auto``: subscribe to the feed's WebSub hub when it names one; ``off``: poll only.
    websub: str = "auto"
    #: The language of the feed's articles (ISO 639-1), set by the operator: it overrides
    #: what the feed declares and detection; "auto" ignores what the feed declares; None:
    #: the feed's declaration, else detection (docs/languages.md).
    language: str | None = None


@dataclass(frozen=True, slots=True)
class Article:
    """One feed entry after parsing and normalisation.

    ``title``, ``summary`` and ``body`` are plain text: HTML stripped, Unicode NFC,
    whitespace collapsed. They are what rules match against and what character
    offsets in a :class:`Hit` refer to.
    """

    id: str
    feed_url: str
    title: str = ""
    summary: str = ""
    body: str = ""
    url: str | None = None
    published: datetime | None = None
    #: The entry's guid/id exactly as the feed gave it, when it gave one.
    guid: str | None = None
    #: Which field held full article text fetched from the page, if any ("body").
    fulltext_field: str | None = None
    #: The article's language (ISO 639-1): the feed's declared language, else detected
    #: from its text; None when neither gave one (docs/languages.md).
    lang: str | None = None

    def field_text(self, name: str) -> str:
        """Return the text of one of :data:`FIELDS`."""
        if name not in FIELDS:
            raise KeyError(f"unknown article field {name!r}; expected one of {', '.join(FIELDS)}")
        text: str = getattr(self, name)
        return text

    @property
    def content_hash(self) -> str:
        """A digest of the matchable text, so a changed entry can be told from a repeat."""
        digest = hashlib.blake2b(digest_size=16)
        for name in FIELDS:
            digest.update(getattr(self, name).encode("utf-8", "surrogatepass"))
            digest.update(b"\x00")
        return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class ExampleArticle:
    """One item of a signal example's ``articles:`` (docs/rules.md, "Expected signals"):
    an article matched as a body, counted as published and detected ``at`` seconds after
    the sequence's start, ``repeat`` times ``every`` seconds apart. Kept as written: the
    repeats are made by ``rules test`` only, never at load."""

    at: float
    text: str
    url: str | None = None
    repeat: int = 1
    every: float = 0.0
    location: SourceLocation | None = None

    @property
    def last(self) -> float:
        """The offset of the last repeat."""
        return self.at + (self.repeat - 1) * self.every


@dataclass(frozen=True, slots=True)
class SignalExample:
    """A timed sequence of articles and the kinds of signal it must raise, in order."""

    articles: tuple[ExampleArticle, ...]
    expect: tuple[str, ...]
    name: str = ""
    location: SourceLocation | None = None


@dataclass(frozen=True, slots=True)
class RuleExamples:
    """Texts a rule must match and must not match, and sequences of articles with the
    signals they must raise (``rules test`` runs them)."""

    match: tuple[str, ...] = ()
    no_match: tuple[str, ...] = ()
    signals: tuple[SignalExample, ...] = ()


@dataclass(frozen=True, slots=True)
class Burst:
    """A rule's ``burst:`` block: matching articles from ``min_outlets`` distinct outlets
    within ``window`` seconds raise one burst signal, then none for ``cooldown`` seconds."""

    min_outlets: int = 3
    window: float = 1800.0
    cooldown: float = 6 * 3600.0


@dataclass(frozen=True, slots=True)
class Spike:
    """A rule's ``spike:`` block: at least ``min_count`` matching articles in the last
    ``window`` seconds, and at least ``factor`` times the average count per window over
    the ``baseline`` before it, raise one spike signal, then none for ``cooldown`` seconds."""

    window: float = 3600.0
    baseline: float = 7 * 86400.0
    factor: float = 3.0
    min_count: int = 5
    cooldown: float = 6 * 3600.0


@dataclass(frozen=True, slots=True)
class Rule:
    """One operator rule, as loaded from a rule file."""

    id: str
    query: str
    description: str = ""
    topic: str = ""
    severity: str = "medium"
    tags: tuple[str, ...] = ()
    enabled: bool = True
    #: "live" publishes to ``topic``; "shadow" publishes to ``topic + ".shadow"``.
    mode: str = "live"
    examples: RuleExamples = field(default_factory=RuleExamples)
    location: SourceLocation | None = None
    #: Story signals of this rule (docs/signals.md); None: off.
    burst: Burst | None = None
    spike: Spike | None = None

    @property
    def output_topic(self) -> str:
        """The Kafka topic this rule's alerts are published to."""
        return f"{self.topic}.shadow" if self.mode == "shadow" else self.topic


@dataclass(frozen=True, slots=True)
class Hit:
    """One matched term: which query term, in which field, at which character offsets."""

    term: str
    field: str
    start: int
    end: int
    text: str


@dataclass(frozen=True, slots=True)
class Match:
    """A rule that fired on an article, with the evidence."""

    rule: Rule
    hits: tuple[Hit, ...]


def alert_id_for(rule_id: str, article_id: str) -> str:
    """The deterministic alert id: the same rule on the same article always gives the same id,
    so consumers can drop the duplicates that at-least-once delivery may bring."""
    digest = hashlib.sha256(f"{rule_id}\x1f{article_id}".encode()).hexdigest()
    return digest[:32]


@dataclass(frozen=True, slots=True)
class Alert:
    """The message published to Kafka for one match."""

    alert_id: str
    rule_id: str
    topic: str
    severity: str
    tags: tuple[str, ...]
    article_id: str
    url: str | None
    title: str
    published: datetime | None
    feed_url: str
    matches: tuple[Hit, ...]
    snippet: str
    detected_at: datetime
    ruleset_version: str
    mode: str = "live"
    story_id: str | None = None
    #: The article's outlet: the registrable domain of its link, else of its feed (docs/signals.md).
    outlet: str | None = None
    #: The article's language (ISO 639-1), when known.
    lang: str | None = None


@dataclass(frozen=True, slots=True)
class Record:
    """One serialised Kafka record (an alert, or a feed-health event) on its way out.

    Alerts are kept in the durable outbox in this form until Kafka acknowledges them.
    """

    alert_id: str
    article_id: str
    topic: str
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


def signal_id_for(rule_id: str, kind: str, key: str) -> str:
    """The deterministic signal id: the same rule, kind and window (a story and its level,
    for an escalation) always give the same id, so a repeat is recognisable."""
    digest = hashlib.sha256(f"signal\x1f{rule_id}\x1f{kind}\x1f{key}".encode("utf-8", "surrogatepass")).hexdigest()
    return digest[:32]


@dataclass(slots=True)
class SignalArticle:
    """An article a signal names (its first or its latest); times are Unix seconds.

    Not frozen, but never changed once made: one is made per admitted article, and a
    frozen dataclass costs twice as much to build (docs/signals.md, "Cost")."""

    id: str
    url: str | None
    title: str
    outlet: str | None
    published: float | None
    story_id: str | None = None


@dataclass(frozen=True, slots=True)
class Signal:
    """A burst, spike or story escalation of one rule (``schemas/signal-v1.json``).

    Times are Unix seconds; the window is on the articles' times (docs/signals.md).
    """

    signal_id: str
    #: ``burst``, ``spike`` or ``escalation``.
    kind: str
    rule_id: str
    #: Where it is published: ``<rule topic>.signals``.
    topic: str
    severity: str
    tags: tuple[str, ...]
    window_start: float
    window_end: float
    #: Matching articles in the window (in the story, for an escalation).
    articles: int
    outlets: tuple[str, ...]
    story_ids: tuple[str, ...]
    first: SignalArticle
    latest: SignalArticle
    detected_at: float
    #: Spike: the average count per window over the baseline, and the window's count over it
    #: (None when the baseline was empty).
    baseline: float | None = None
    ratio: float | None = None
    #: Escalation: the story and the number of distinct outlets it reached.
    story_id: str | None = None
    level: int | None = None
