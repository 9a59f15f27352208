"""The detectors: matching articles in, burst, spike and escalation signals out.

A :class:`Sighting` is one rule matching one new article (an alert, or a later copy of
a story the rule already alerted on: copies count here though they raise no alert).
:class:`Signals` keeps, per rule that matched, a :class:`Track`: matching articles per
hour over the last 48 hours and the latest signals (for the status page's chart), and the
recent sightings its ``burst:`` and ``spike:`` blocks need; per story, the outlets that
carried it. :meth:`Signals.observe_article` (one article and the rules it matched, the
daemon's path) and :meth:`Signals.observe` (sightings, the consumer's) return the signals
raised.

Time. An article's time is its published time when that is plausible (not more than
:data:`CLOCK_SKEW` after its detection, not more than the detector's window before it),
else its detection time: a feed dating everything 1970, or next year, neither opens nor
closes a window. Windows and cool-downs run on these times, never on the wall clock, so a
replay of the same sightings gives the same signals with the same ids.

State. Per article the detectors do a few dictionary operations per rule matched and
write nothing: the article and the ids of the rules it matched go to a **journal**, one
entry per ``flush_interval`` (``journal:<seq>``). A rule's or story's state is written as
JSON (``rule:<id>``, ``story:<id>``, each naming the last journal entry it covers) only
when it raised a signal (with the signal, and with the journal so far) and at a
**checkpoint**: every :data:`CHECKPOINT_INTERVAL` seconds and at shutdown
(:meth:`Signals.changes` without ``now``), which writes every state changed since the
last one and deletes the journal it covers. :meth:`Signals.restore` and the first
:meth:`Signals.watch` take the states back and replay the journal entries newer than
each, so a restart neither repeats a signal nor forgets a cool-down, and a crash forgets
at most the last ``flush_interval``. Pure: no clock (``now`` is passed in), no I/O.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import replace
from operator import itemgetter
from typing import Any, NamedTuple

from monitor.model import Burst, Rule, Signal, SignalArticle, Spike, signal_id_for

__all__ = [
    "CHART_HOURS",
    "CHECKPOINT_INTERVAL",
    "CLOCK_SKEW",
    "DEFAULT_LEVELS",
    "MAX_KEPT",
    "BurstState",
    "Escalations",
    "Hourly",
    "Sighting",
    "SpikeState",
    "Track",
    "event_time",
]

#: Seconds a published time may lie ahead of its detection (feeds' clocks drift).
CLOCK_SKEW = 300.0
#: Distinct outlets at which a story escalates, by default.
DEFAULT_LEVELS: tuple[int, ...] = (3, 10, 30)
#: Sightings kept per rule and detector, and outlets per story (the oldest go first).
MAX_KEPT = 1000
#: Seconds between two sweeps of stories unseen for their time to live.
_EXPIRY_INTERVAL = 60.0
#: Seconds (of ``now``) between two checkpoints of every changed state.
CHECKPOINT_INTERVAL = 3600.0
#: Hours of matching articles kept per rule for the status page's chart.
CHART_HOURS = 48
#: Latest signals kept per rule for the chart.
_SIGNALS_KEPT = 50
_HOUR = 3600.0


class Sighting(NamedTuple):
    """One rule matching one new article (times are Unix seconds)."""

    rule: Rule
    article: SignalArticle
    detected: float

    @classmethod
    def of(cls, rule: Rule, article: SignalArticle, detected: float) -> Sighting:
        """The sighting of ``rule`` matching ``article``, detected at ``detected``."""
        return cls(rule, article, detected)


def event_time(published: float | None, detected: float, window: float) -> float:
    """The time an article counts at in a window of ``window`` seconds (see the module docstring)."""
    if published is None or not math.isfinite(published):
        return detected
    if detected - window <= published <= detected + CLOCK_SKEW:
        return published
    return detected


#: A kept sighting: (its time, the article). The article is shared by every rule it matched.
Entry = tuple[float, SignalArticle]
_TIME = itemgetter(0)
_NEG_INF = -math.inf


def _article_list(article: SignalArticle) -> list[Any]:
    return [article.id, article.url, article.title, article.outlet, article.published, article.story_id]


def article_of(values: Sequence[Any]) -> SignalArticle:
    return SignalArticle(id=values[0], url=values[1], title=values[2], outlet=values[3], published=values[4], story_id=values[5])


def article_shaped(article: SignalArticle) -> bool:
    """Whether an article read back from saved state has the types :func:`dump_entries` writes."""
    published = article.published
    return (
        isinstance(article.id, str) and isinstance(article.title, str)
        and all(value is None or isinstance(value, str) for value in (article.url, article.outlet, article.story_id))
        and (published is None or (isinstance(published, (int, float)) and not isinstance(published, bool)))
    )  # fmt: skip


def dump_entries(entries: Iterable[Entry]) -> list[tuple[Any, ...]]:
    """Entries as saved: ``[time, id, url, title, outlet, published, story_id]`` (orjson
    writes tuples of plain values ten times as fast as dataclasses)."""
    return [(t, a.id, a.url, a.title, a.outlet, a.published, a.story_id) for t, a in entries]


def load_entries(rows: Iterable[Sequence[Any]]) -> list[Entry]:
    """Entries as :func:`dump_entries` writes them (a row of other types is left out)."""
    entries = [(float(row[0]), article_of(row[1:7])) for row in rows]
    return [entry for entry in entries if math.isfinite(entry[0]) and article_shaped(entry[1])]


def window_key(entries: Sequence[Entry]) -> str:
    """The part of a burst's or spike's id its window gives: the times of its first and latest
    articles (``entries`` oldest first). The start alone is not enough: a spike whose cool-down
    is shorter than its window raises again over a window with the same first article."""
    return f"{entries[0][0]:.3f}\x1f{entries[-1][0]:.3f}"


def signal_of(kind: str, key: str, rule: Rule, entries: Sequence[Entry], now: float, **extra: Any) -> Signal:
    """A signal of ``rule`` over ``entries`` (oldest first)."""
    return Signal(
        signal_id=signal_id_for(rule.id, kind, key),
        kind=kind,
        rule_id=rule.id,
        topic=f"{rule.output_topic}.signals",
        severity=rule.severity,
        tags=tuple(rule.tags),
        window_start=min(t for t, _ in entries),
        window_end=max(t for t, _ in entries),
        articles=len(entries),
        outlets=tuple(dict.fromkeys(a.outlet for _, a in entries if a.outlet)),
        story_ids=tuple(dict.fromkeys(a.story_id for _, a in entries if a.story_id)),
        first=min(entries, key=lambda e: e[0])[1],
        # Of articles with the same time, the last to arrive.
        latest=max(reversed(entries), key=lambda e: e[0])[1],
        detected_at=now,
        **extra,
    )


class BurstState:
    """One rule's burst detector: its sightings (arrival order), the number of sightings
    per outlet among them, and its last burst. Pruned to the window only when the outlets
    could make a burst, or the sightings have doubled since the last pruning.

    A sighting is counted as given: the caller passes each (rule, article) once (the daemon
    sees a new article once; :meth:`Signals.observe` drops repeats; a replay of the journal
    starts after the saved state)."""

    __slots__ = ("entries", "fired", "floor", "latest", "min_outlets", "outlets", "prune_at", "quiet_until", "spec", "spent", "window")

    def __init__(self, spec: Burst) -> None:
        self.spec = spec
        self.window = spec.window
        self.min_outlets = spec.min_outlets
        self.entries: list[Entry] = []
        self.outlets: defaultdict[str, int] = defaultdict(int)
        # One shared -inf: a detector's untouched times cost no memory reads of their own.
        self.latest = _NEG_INF
        self.prune_at = 16
        #: The time of the last burst (its latest article's), None before the first; the end of its cool-down.
        self.fired: float | None = None
        self.quiet_until = _NEG_INF
        #: Sightings before this time cannot be part of a burst (see :meth:`add`).
        self.floor = _NEG_INF
        #: The article ids of the last burst: a sighting of one read again is not new (with a
        #: cool-down shorter than the window it would be above the floor).
        self.spent: frozenset[str] = frozenset()

    def add(self, article: SignalArticle, t: float) -> list[Entry] | None:
        """Count one sighting at ``t``; the entries of the burst it completes, oldest first.

        A sighting older than the window, or so early in a cool-down that it will have
        left the window when the cool-down ends, cannot be part of a burst: not kept."""
        if t < self.floor:
            return None
        entries = self.entries
        entries.append((t, article))
        if t > self.latest:
            self.latest = t
            quiet_until = self.quiet_until
            self.floor = (t if t > quiet_until else quiet_until) - self.window
        outlet = article.outlet
        if outlet is not None:
            outlets = self.outlets
            outlets[outlet] += 1
            if len(outlets) >= self.min_outlets and self.latest >= self.quiet_until:
                return self._check()
        if len(entries) > self.prune_at:
            self._prune()
        return None

    def _prune(self) -> None:
        horizon = self.latest - self.spec.window
        kept = [e for e in self.entries if e[0] >= horizon][-MAX_KEPT:]
        self.entries = kept
        outlets: defaultdict[str, int] = defaultdict(int)
        for _, article in kept:
            if article.outlet is not None:
                outlets[article.outlet] += 1
        self.outlets = outlets
        self.prune_at = max(16, 2 * len(kept))

    def _check(self) -> list[Entry] | None:
        spec = self.spec
        # The oldest sighting is looked for here only (not kept up to date by every add).
        if len(self.entries) > MAX_KEPT or min(map(_TIME, self.entries)) < self.latest - spec.window:
            self._prune()
            if len(self.outlets) < spec.min_outlets:
                return None
        ordered = sorted({a.id: (t, a) for t, a in self.entries}.values(), key=lambda e: e[0])
        self.fired = self.latest
        self.quiet_until = self.latest + spec.cooldown
        self.floor = self.quiet_until - self.window
        self.spent = frozenset(a.id for _, a in ordered)
        # The next burst needs outlets of its own: these are spent.
        self.entries, self.outlets, self.prune_at = [], defaultdict(int), 16
        return ordered

    def dump(self) -> dict[str, Any]:
        document = {"spec": _spec(self.spec), "entries": dump_entries(self.entries), "latest": _num(self.latest), "fired": self.fired}
        if self.spent:
            document["spent"] = sorted(self.spent)
        return document

    @classmethod
    def load(cls, spec: Burst, document: dict[str, Any]) -> BurstState:
        state = cls(spec)
        if document.get("spec") == _spec(spec):
            state.entries = load_entries(document.get("entries", []))
            state.latest = _float(document.get("latest"))
            state._prune()
        # A changed block starts afresh but keeps its cool-down: an edit must not repeat a burst.
        state.fired = _fired(document)
        state.quiet_until = state.fired + spec.cooldown if state.fired is not None else -math.inf
        state.floor = max(state.latest, state.quiet_until) - spec.window
        spent = document.get("spent")
        if isinstance(spent, list):
            state.spent = frozenset(str(article_id) for article_id in spent)
        return state


class SpikeState:
    """One rule's spike detector: sightings of the current window (by article id), counts
    per window before it (keyed by ``floor(time / window)``), when watching began (the
    watch start or the first article's time, the earlier), and the last spike."""

    __slots__ = ("buckets", "fired", "latest", "oldest", "recent", "since", "spec")

    def __init__(self, spec: Spike, since: float) -> None:
        self.spec = spec
        self.since = since
        self.recent: dict[str, Entry] = {}
        self.buckets: dict[int, int] = {}
        self.latest = -math.inf
        self.oldest = math.inf
        self.fired: float | None = None

    def add(self, rule: Rule, article: SignalArticle, t: float, now: float) -> Signal | None:
        """Count one sighting at ``t``; the spike signal it completes, if any."""
        spec = self.spec
        if article.id in self.recent:
            return None
        # Watched since the first article it counted, if that is earlier (a replay of history).
        if t < self.since:
            self.since = t
        if t > self.latest:
            self.latest = t
        horizon = self.latest - spec.window
        if t <= horizon:
            self._into_buckets(t)
        else:
            self.recent[article.id] = (t, article)
            self.oldest = min(self.oldest, t)
        if self.oldest <= horizon or len(self.recent) > MAX_KEPT:
            self._prune(horizon)
        return self._check(rule, now)

    def _prune(self, horizon: float) -> None:
        for t, _ in self.recent.values():
            if t <= horizon:
                self._into_buckets(t)
        kept = [e for e in self.recent.values() if e[0] > horizon][-MAX_KEPT:]
        self.recent = {e[1].id: e for e in kept}
        self.oldest = min((e[0] for e in kept), default=math.inf)
        oldest = math.floor((horizon - self.spec.baseline) / self.spec.window) - 1
        for key in [k for k in self.buckets if k < oldest]:
            del self.buckets[key]

    def _into_buckets(self, t: float) -> None:
        key = math.floor(t / self.spec.window)
        self.buckets[key] = self.buckets.get(key, 0) + 1

    def _check(self, rule: Rule, now: float) -> Signal | None:
        spec = self.spec
        if self.fired is not None and self.latest < self.fired + spec.cooldown:
            return None
        horizon = self.latest - spec.window
        # The baseline must be watched whole (but for the window its average leaves out):
        # a rule watched for an hour has no average yet.
        if len(self.recent) < spec.min_count or self.since > horizon - spec.baseline + spec.window:
            return None
        average = self.average()
        if average is None or len(self.recent) < spec.factor * average:
            return None
        count = len(self.recent)
        entries = sorted(self.recent.values(), key=lambda e: e[0])
        ratio = round(count / average, 3) if average else None
        signal = signal_of("spike", window_key(entries), rule, entries, now, baseline=round(average, 3), ratio=ratio)
        self.fired = self.latest
        return signal

    def average(self) -> float | None:
        """The average count per window over the baseline (whole windows only, to within
        one window at each end); None before there is a whole window of it."""
        spec = self.spec
        horizon = self.latest - spec.window
        first, last = math.ceil((horizon - spec.baseline) / spec.window), math.floor(horizon / spec.window)
        if last <= first:
            return None
        buckets = self.buckets
        # Whichever is shorter: a 1s window over a 366d baseline is 31 million windows.
        if len(buckets) < last - first:
            total = sum(n for k, n in buckets.items() if first <= k < last)
        else:
            total = sum(buckets.get(k, 0) for k in range(first, last))
        return total / (last - first)

    def dump(self) -> dict[str, Any]:
        return {
            "spec": _spec(self.spec),
            "since": self.since,
            "recent": dump_entries(self.recent.values()),
            "buckets": [[k, n] for k, n in self.buckets.items()],
            "latest": _num(self.latest),
            "fired": self.fired,
        }

    @classmethod
    def load(cls, spec: Spike, document: dict[str, Any], now: float) -> SpikeState:
        same = document.get("spec") == _spec(spec)
        state = cls(spec, _float(document.get("since"), now) if same else now)
        if same:
            state.recent = {a.id: (t, a) for t, a in load_entries(document.get("recent", []))}
            state.oldest = min((t for t, _ in state.recent.values()), default=math.inf)
            state.buckets = {int(k): int(n) for k, n in document.get("buckets", [])}
            state.latest = _float(document.get("latest"))
        state.fired = _fired(document)
        return state


class Track:
    """One rule's burst and spike detectors, and the last journal entry its saved state covers."""

    __slots__ = ("burst", "rule", "seq", "spike")

    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.burst: BurstState | None = None
        self.spike: SpikeState | None = None
        self.seq = -1

    def dump(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "burst": self.burst.dump() if self.burst is not None else None,
            "spike": self.spike.dump() if self.spike is not None else None,
        }


class Hourly:
    """Matching articles per rule and hour over the last :data:`CHART_HOURS` (one counter of
    rule ids per hour: counted per article, not per rule), and each rule's latest signals."""

    def __init__(self) -> None:
        #: Hour (``floor(time / 3600)``) -> rule id -> matching articles.
        self.hours: dict[int, Counter[str]] = {}
        #: Rule id -> its latest signals (time, kind), oldest first.
        self.marks: dict[str, list[tuple[float, str]]] = {}
        #: Hours counted in since the last checkpoint, and hours forgotten.
        self.touched: set[int] = set()
        self.gone: set[int] = set()
        self.latest = 0

    def count(self, hour: int, rule_ids: Iterable[str]) -> None:
        """Count articles matched by these rules (one id per rule and article) in ``hour``."""
        counter = self.hours.get(hour)
        if counter is None:
            counter = self.hours[hour] = Counter()
            if hour > self.latest:
                self.latest = hour
                for old in [h for h in self.hours if h <= hour - CHART_HOURS]:
                    del self.hours[old]
                    self.gone.add(old)
        counter.update(rule_ids)
        self.touched.add(hour)

    def note(self, signal: Signal) -> None:
        """Remember a signal of its rule for the chart."""
        marks = self.marks.setdefault(signal.rule_id, [])
        marks.append((signal.window_end, signal.kind))
        del marks[:-_SIGNALS_KEPT]

    def counts(self, rule_id: str, first: int) -> list[int]:
        """The rule's counts in the :data:`CHART_HOURS` hours from ``first``."""
        hours = self.hours
        return [hours[h].get(rule_id, 0) if h in hours else 0 for h in range(first, first + CHART_HOURS)]

    def totals(self, first: int) -> Counter[str]:
        """Matching articles per rule in the :data:`CHART_HOURS` hours from ``first``."""
        total: Counter[str] = Counter()
        for hour in range(first, first + CHART_HOURS):
            counter = self.hours.get(hour)
            if counter:
                total.update(counter)
        return total


class Escalations:
    """Per story: its distinct outlets, first article, the rules that matched it, the
    levels already signalled, when it was last seen (stories unseen for ``ttl`` go), and
    the last journal entry its saved state covers."""

    def __init__(self, levels: Sequence[int] = DEFAULT_LEVELS, ttl: float = 48 * 3600.0) -> None:
        self.levels = tuple(sorted(set(levels)))
        self.ttl = ttl
        self.stories: dict[str, dict[str, Any]] = {}

    def add(self, article: SignalArticle, rules: Sequence[Rule], detected: float, now: float) -> list[Signal]:
        """Count one article of a story, matched by ``rules``; the escalations it raises."""
        story_id = article.story_id
        if story_id is None:
            return []
        t = event_time(article.published, detected, 0.0)
        story = self.stories.get(story_id)
        if story is None:
            opening = [t, *_article_list(article)]
            story = self.stories[story_id] = {"first": opening, "outlets": [], "rules": {}, "done": [], "seen": 0.0, "seq": -1}
        story["seen"] = max(story["seen"], detected)
        for rule in rules:
            story["rules"][rule.id] = [rule.output_topic, rule.severity, list(rule.tags)]
        outlets: list[str] = story["outlets"]
        if article.outlet is None or article.outlet in outlets or len(outlets) >= MAX_KEPT:
            return []
        outlets.append(article.outlet)
        reached = [level for level in self.levels if level <= len(outlets) and level not in story["done"]]
        if not reached:
            return []
        story["done"].extend(reached)
        level = reached[-1]
        first: Entry = (float(story["first"][0]), article_of(story["first"][1:7]))
        signals = []
        for rule_id, (topic, severity, tags) in story["rules"].items():
            # The rule as it was when it matched the story (a live rule's topic is its output topic).
            named = Rule(id=rule_id, query="", topic=topic, severity=severity, tags=tuple(tags))
            signal = signal_of("escalation", f"{story_id}\x1f{level}", named, [first, (t, article)], now, story_id=story_id, level=level)
            # Every outlet of the story, not just the two articles named.
            signals.append(replace(signal, outlets=tuple(outlets), articles=len(outlets)))
        return signals

    def expire(self, now: float) -> list[str]:
        """Forget stories unseen for ``ttl`` seconds; their ids."""
        gone = [story_id for story_id, story in self.stories.items() if now - story["seen"] > self.ttl]
        for story_id in gone:
            del self.stories[story_id]
        return gone


def _spec(spec: Burst | Spike) -> list[float]:
    if isinstance(spec, Burst):
        return [spec.min_outlets, spec.window, spec.cooldown]
    return [spec.window, spec.baseline, spec.factor, spec.min_count, spec.cooldown]


def _num(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _fired(document: dict[str, Any]) -> float | None:
    """A saved detector's last signal time (None if it has none, or none that is a number)."""
    fired = document.get("fired")
    return float(fired) if isinstance(fired, (int, float)) and not isinstance(fired, bool) and math.isfinite(fired) else None


def _float(value: Any, default: float = -math.inf) -> float:
    return float(value) if isinstance(value, (int, float)) else default
