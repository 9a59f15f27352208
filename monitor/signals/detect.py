"""The detectors: sightings of matching articles in, burst, spike and escalation signals out.

A :class:`Sighting` is one rule matching one new article (an alert, or a later copy of
a story the rule already alerted on: copies count here though they raise no alert).
:class:`Signals` keeps, per rule, the recent sightings its ``burst:`` and ``spike:``
blocks need and, per story, the outlets that carried it; :meth:`Signals.observe` returns
the signals a batch of sightings raises.

Time. An article's time is its published time when that is plausible (not more than
:data:`CLOCK_SKEW` after its detection, not more than the detector's window before it),
else its detection time: a feed dating everything 1970, or next year, neither opens nor
closes a window. Windows and cool-downs run on these times, never on the wall clock, so a
replay of the same sightings gives the same signals with the same ids.

State. Everything :class:`Signals` holds is plain numbers and strings: :meth:`Signals.changes`
gives the entries changed as JSON (one per rule and detector, one per story): those that
raised a signal at once, the others once per ``flush_interval`` and at shutdown;
:meth:`Signals.restore` takes them back, so a restart neither repeats a signal nor
forgets a cool-down. Pure: no clock (``now`` is passed in), no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, NamedTuple

import orjson

from monitor.model import Burst, Rule, Signal, SignalArticle, Spike, signal_id_for

__all__ = [
    "CLOCK_SKEW",
    "DEFAULT_LEVELS",
    "MAX_KEPT",
    "BurstState",
    "Escalations",
    "Sighting",
    "Signals",
    "SpikeState",
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


class Sighting(NamedTuple):
    """One rule matching one new article (times are Unix seconds). A tuple: one is made per
    match, so it must cost next to nothing to build."""

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


#: A kept sighting: ``[time, id, url, title, outlet, published, story_id]`` (plain values:
#: cheap to build, and orjson writes lists several times faster than dataclasses).
Entry = list[Any]


def _entry(t: float, article: SignalArticle) -> Entry:
    return [t, article.id, article.url, article.title, article.outlet, article.published, article.story_id]


def _ref(entry: Sequence[Any]) -> SignalArticle:
    return SignalArticle(id=entry[1], url=entry[2], title=entry[3], outlet=entry[4], published=entry[5], story_id=entry[6])


def _signal(kind: str, key: str, rule: Rule, entries: Sequence[Sequence[Any]], now: float, **extra: Any) -> Signal:
    """A signal of ``rule`` over ``entries`` (oldest first)."""
    return Signal(
        signal_id=signal_id_for(rule.id, kind, key),
        kind=kind,
        rule_id=rule.id,
        topic=f"{rule.output_topic}.signals",
        severity=rule.severity,
        tags=tuple(rule.tags),
        window_start=min(e[0] for e in entries),
        window_end=max(e[0] for e in entries),
        articles=len(entries),
        outlets=tuple(dict.fromkeys(e[4] for e in entries if e[4])),
        story_ids=tuple(dict.fromkeys(e[6] for e in entries if e[6])),
        first=_ref(min(entries, key=lambda e: e[0])),
        # Of articles with the same time, the last to arrive.
        latest=_ref(max(reversed(entries), key=lambda e: e[0])),
        detected_at=now,
        **extra,
    )


class BurstState:
    """One rule's burst detector: its sightings within the window (by article id, in
    arrival order), the oldest time among them, and its last burst."""

    __slots__ = ("entries", "fired", "latest", "oldest", "spec", "spec_list")

    def __init__(self, spec: Burst) -> None:
        self.spec = spec
        self.spec_list = _spec(spec)
        #: Article id -> its entry.
        self.entries: dict[str, Entry] = {}
        self.latest = -math.inf
        self.oldest = math.inf
        #: The time of the last burst (its latest article's), None before the first.
        self.fired: float | None = None

    def add(self, sighting: Sighting, now: float) -> Signal | None:
        """Count one sighting; the burst signal it completes, if any."""
        spec, article, entries = self.spec, sighting.article, self.entries
        t = event_time(article.published, sighting.detected, spec.window)
        if t < self.latest - spec.window or article.id in entries:
            return None
        entries[article.id] = _entry(t, article)
        if t > self.latest:
            self.latest = t
        if t < self.oldest:
            self.oldest = t
        if len(entries) < spec.min_outlets:
            # Too few to be a burst, in the window or not: nothing to prune (at most
            # min_outlets - 1 entries wait), the common case at thousands of rules.
            return None
        horizon = self.latest - spec.window
        if self.oldest < horizon or len(entries) > MAX_KEPT:
            kept = [e for e in entries.values() if e[0] >= horizon][-MAX_KEPT:]
            self.entries = entries = {e[1]: e for e in kept}
            self.oldest = min((e[0] for e in kept), default=math.inf)
        if len(entries) < spec.min_outlets or (self.fired is not None and self.latest < self.fired + spec.cooldown):
            return None
        if len({e[4] for e in entries.values() if e[4]}) < spec.min_outlets:
            return None
        ordered = sorted(entries.values(), key=lambda e: e[0])
        signal = _signal("burst", f"{ordered[0][0]:.3f}", sighting.rule, ordered, now)
        self.fired = self.latest
        # The next burst needs outlets of its own: these are spent.
        self.entries, self.oldest = {}, math.inf
        return signal

    def dump(self) -> dict[str, Any]:
        latest = self.latest if self.latest > -math.inf else None
        return {"spec": self.spec_list, "entries": list(self.entries.values()), "latest": latest, "fired": self.fired}

    @classmethod
    def load(cls, spec: Burst, document: dict[str, Any]) -> BurstState:
        state = cls(spec)
        if document.get("spec") == _spec(spec):
            state.entries = {e[1]: list(e) for e in document.get("entries", [])}
            state.oldest = min((e[0] for e in state.entries.values()), default=math.inf)
            state.latest = _float(document.get("latest"))
        # A changed block starts afresh but keeps its cool-down: an edit must not repeat a burst.
        state.fired = document.get("fired")
        return state


class SpikeState:
    """One rule's spike detector: sightings of the current window, counts per window before
    it (keyed by ``floor(time / window)``), when watching began (the watch start or the
    first article's time, the earlier), and the last spike."""

    __slots__ = ("buckets", "fired", "latest", "recent", "since", "spec")

    def __init__(self, spec: Spike, since: float) -> None:
        self.spec = spec
        self.since = since
        self.recent: list[Entry] = []
        self.buckets: dict[int, int] = {}
        self.latest = -math.inf
        self.fired: float | None = None

    def add(self, sighting: Sighting, now: float) -> Signal | None:
        """Count one sighting; the spike signal it completes, if any."""
        spec = self.spec
        t = event_time(sighting.article.published, sighting.detected, spec.window)
        if any(e[1] == sighting.article.id for e in self.recent):
            return None
        # Watched since the first article it counted, if that is earlier (a replay of history).
        self.since = min(self.since, t)
        self.latest = max(self.latest, t)
        horizon = self.latest - spec.window
        if t <= horizon:
            self._into_buckets(t)
        else:
            self.recent.append(_entry(t, sighting.article))
        for entry in [e for e in self.recent if e[0] <= horizon]:
            self._into_buckets(entry[0])
        self.recent = [e for e in self.recent if e[0] > horizon][-MAX_KEPT:]
        oldest = math.floor((horizon - spec.baseline) / spec.window) - 1
        for key in [k for k in self.buckets if k < oldest]:
            del self.buckets[key]
        return self._check(sighting, now)

    def _into_buckets(self, t: float) -> None:
        key = math.floor(t / self.spec.window)
        self.buckets[key] = self.buckets.get(key, 0) + 1

    def _check(self, sighting: Sighting, now: float) -> Signal | None:
        spec = self.spec
        if self.fired is not None and self.latest < self.fired + spec.cooldown:
            return None
        horizon = self.latest - spec.window
        # The baseline must be watched whole (but for the window its average leaves out):
        # a rule watched for an hour has no average yet.
        if len(self.recent) < spec.min_count or self.since > horizon - spec.baseline + spec.window:
            return None
        # Whole windows of the baseline only (to within one window at each end).
        first, last = math.ceil((horizon - spec.baseline) / spec.window), math.floor(horizon / spec.window)
        if last <= first:
            return None
        average = sum(self.buckets.get(k, 0) for k in range(first, last)) / (last - first)
        count = len(self.recent)
        if count < spec.factor * average:
            return None
        entries = sorted(self.recent, key=lambda e: e[0])
        ratio = round(count / average, 3) if average else None
        signal = _signal("spike", f"{entries[0][0]:.3f}", sighting.rule, entries, now, baseline=round(average, 3), ratio=ratio)
        self.fired = self.latest
        return signal

    def dump(self) -> dict[str, Any]:
        return {
            "spec": _spec(self.spec),
            "since": self.since,
            "recent": self.recent,
            "buckets": [[k, n] for k, n in self.buckets.items()],
            "latest": _num(self.latest),
            "fired": self.fired,
        }

    @classmethod
    def load(cls, spec: Spike, document: dict[str, Any], now: float) -> SpikeState:
        same = document.get("spec") == _spec(spec)
        state = cls(spec, _float(document.get("since"), now) if same else now)
        if same:
            state.recent = [list(e) for e in document.get("recent", [])]
            state.buckets = {int(k): int(n) for k, n in document.get("buckets", [])}
            state.latest = _float(document.get("latest"))
        state.fired = document.get("fired")
        return state


class Escalations:
    """Per story: its distinct outlets, first article, the rules that matched it, the
    levels already signalled, and when it was last seen (stories unseen for ``ttl`` go)."""

    def __init__(self, levels: Sequence[int] = DEFAULT_LEVELS, ttl: float = 48 * 3600.0) -> None:
        self.levels = tuple(sorted(set(levels)))
        self.ttl = ttl
        self.stories: dict[str, dict[str, Any]] = {}

    def add(self, sighting: Sighting, now: float) -> tuple[str, list[Signal]]:
        """Count one sighting of a story; (the story id, the escalations it raises)."""
        article, rule = sighting.article, sighting.rule
        story_id = article.story_id
        if not self.levels or story_id is None:
            return "", []
        t = event_time(article.published, sighting.detected, 0.0)
        story = self.stories.get(story_id)
        if story is None:
            story = self.stories[story_id] = {"first": _entry(t, article), "outlets": [], "rules": {}, "done": [], "seen": 0.0}
        story["seen"] = max(story["seen"], sighting.detected)
        story["rules"][rule.id] = [rule.output_topic, rule.severity, list(rule.tags)]
        outlets: list[str] = story["outlets"]
        if article.outlet is None or article.outlet in outlets or len(outlets) >= MAX_KEPT:
            return story_id, []
        outlets.append(article.outlet)
        reached = [level for level in self.levels if level <= len(outlets) and level not in story["done"]]
        if not reached:
            return story_id, []
        story["done"].extend(reached)
        level = reached[-1]
        first, latest = story["first"], _entry(t, article)
        signals = []
        for rule_id, (topic, severity, tags) in story["rules"].items():
            # The rule as it was when it matched the story (a live rule's topic is its output topic).
            named = Rule(id=rule_id, query="", topic=topic, severity=severity, tags=tuple(tags))
            signal = _signal("escalation", f"{story_id}\x1f{level}", named, [first, latest], now, story_id=story_id, level=level)
            # Every outlet of the story, not just the two articles named.
            signals.append(replace(signal, outlets=tuple(outlets), articles=len(outlets)))
        return story_id, signals

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


def _float(value: Any, default: float = -math.inf) -> float:
    return float(value) if isinstance(value, (int, float)) else default


class Signals:
    """Burst and spike detectors per rule, escalations per story (see the module docstring).

    Not thread-safe: one caller at a time (the daemon's event loop, or the consumer's).
    """

    def __init__(self, *, levels: Sequence[int] = DEFAULT_LEVELS, story_ttl: float = 48 * 3600.0, flush_interval: float = 5.0) -> None:
        self.flush_interval = flush_interval
        self._next_flush = -math.inf
        #: Changed entries that must be saved with the batch (see :meth:`changes`).
        self._urgent: set[tuple[str, str]] = set()
        self.bursts: dict[str, BurstState] = {}
        self.spikes: dict[str, SpikeState] = {}
        self.escalations = Escalations(levels, story_ttl)
        #: Rule id -> signals raised since start, by kind (for metrics and the status page).
        self.raised: dict[str, dict[str, int]] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._next_expiry = -math.inf
        #: Restored entries waiting for :meth:`watch` to meet their rules.
        self._saved: dict[str, dict[str, Any]] = {}

    def watch(self, rules: Iterable[Rule], now: float) -> None:
        """Follow these rules: a new or changed spike block starts watching its baseline
        ``now``; the state of rules gone, disabled or without a block is dropped. Called at
        start and after each reload (a rule met first in :meth:`observe` is followed from then)."""
        bursts = {rule.id: rule.burst for rule in rules if rule.enabled and rule.burst is not None}
        spikes = {rule.id: rule.spike for rule in rules if rule.enabled and rule.spike is not None}
        for rule_id, burst in bursts.items():
            self._burst(rule_id, burst)
        for rule_id, spike in spikes.items():
            self._spike(rule_id, spike, now)
        for rule_id in [r for r in self.bursts if r not in bursts]:
            del self.bursts[rule_id]
            self._dirty.add(("burst", rule_id))
            self._urgent.add(("burst", rule_id))
        for rule_id in [r for r in self.spikes if r not in spikes]:
            del self.spikes[rule_id]
            self._dirty.add(("spike", rule_id))
            self._urgent.add(("spike", rule_id))
        self._saved.clear()

    def _burst(self, rule_id: str, spec: Burst) -> BurstState:
        current = self.bursts.get(rule_id)
        if current is None or current.spec != spec:
            saved = self._saved.pop(f"burst:{rule_id}", None) or (current.dump() if current else {})
            current = self.bursts[rule_id] = BurstState.load(spec, saved)
            self._dirty.add(("burst", rule_id))
        return current

    def _spike(self, rule_id: str, spec: Spike, now: float) -> SpikeState:
        current = self.spikes.get(rule_id)
        if current is None or current.spec != spec:
            saved = self._saved.pop(f"spike:{rule_id}", None) or (current.dump() if current else {})
            current = self.spikes[rule_id] = SpikeState.load(spec, saved, now)
            self._dirty.add(("spike", rule_id))
        return current

    def observe(self, sightings: Iterable[Sighting], now: float) -> list[Signal]:
        """The signals these sightings raise (each at most once: see the module docstring)."""
        raised: list[Signal] = []
        dirty, bursts = self._dirty, self.bursts
        for sighting in sightings:
            rule = sighting.rule
            rule_id, burst, spike = rule.id, rule.burst, rule.spike
            if burst is not None:
                dirty.add(("burst", rule_id))
                state = bursts.get(rule_id)
                if state is None or (state.spec is not burst and state.spec != burst):
                    state = self._burst(rule_id, burst)
                signal = state.add(sighting, now)
                if signal is not None:
                    raised.append(signal)
                    self._urgent.add(("burst", rule_id))
            if spike is not None:
                dirty.add(("spike", rule_id))
                signal = self._spike(rule_id, spike, now).add(sighting, now)
                if signal is not None:
                    raised.append(signal)
                    self._urgent.add(("spike", rule_id))
            if sighting.article.story_id is not None and self.escalations.levels:
                story_id, escalations = self.escalations.add(sighting, now)
                dirty.add(("story", story_id))
                if escalations:
                    raised.extend(escalations)
                    self._urgent.add(("story", story_id))
        if now >= self._next_expiry:
            self._next_expiry = now + _EXPIRY_INTERVAL
            gone = [("story", story_id) for story_id in self.escalations.expire(now)]
            dirty.update(gone)
            self._urgent.update(gone)
        for signal in raised:
            counts = self.raised.setdefault(signal.rule_id, {})
            counts[signal.kind] = counts.get(signal.kind, 0) + 1
        return raised

    def changes(self, now: float | None = None) -> list[tuple[str, bytes | None]]:
        """State entries to save: (key, JSON), or (key, None) for one to delete.

        Without ``now``: every entry changed since the last call. With ``now``: the entries
        of detectors that raised a signal or were dropped (save them with those signals, so
        a restart never repeats one), and every other changed entry only once per
        ``flush_interval``: writing each rule's window at each batch would cost more than
        matching (docs/signals.md, "Cost"). Call it without ``now`` at shutdown.
        """
        if now is not None and now < self._next_flush:
            keys = self._urgent & self._dirty
        else:
            keys = set(self._dirty)
            if now is not None:
                self._next_flush = now + self.flush_interval
        out: list[tuple[str, bytes | None]] = []
        for kind, name in keys:
            document: dict[str, Any] | None
            if kind == "burst":
                burst = self.bursts.get(name)
                document = burst.dump() if burst else None
            elif kind == "spike":
                spike = self.spikes.get(name)
                document = spike.dump() if spike else None
            else:
                document = self.escalations.stories.get(name)
            out.append((f"{kind}:{name}", None if document is None else orjson.dumps(document)))
        self._dirty -= keys
        self._urgent -= keys
        return out

    def restore(self, entries: Iterable[tuple[str, bytes]]) -> int:
        """Take back saved entries (before :meth:`watch`, which matches them to the rules);
        returns how many were read. An unreadable entry is skipped."""
        count = 0
        for key, blob in entries:
            try:
                document = orjson.loads(blob)
            except orjson.JSONDecodeError:
                continue
            if not isinstance(document, dict):
                continue
            kind, _, name = key.partition(":")
            if kind == "story":
                self.escalations.stories[name] = document
            else:
                self._saved[key] = document
            count += 1
        return count


