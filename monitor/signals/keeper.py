"""The detectors of every rule and story, their journal and checkpoints (see :mod:`monitor.signals.detect`).

:class:`Signals` is what the daemon, a matcher and ``news-monitor signals`` hold. Its hot
path, :meth:`Signals.observe_article`, runs once per admitted article with the rules that
matched it: a journal row holding the article and its rules, and per rule with a block
one set look-up (a rule in a cool-down stops there) or one dictionary look-up, a compare
with its burst detector's floor and perhaps an entry in its window and an outlet counter;
nothing is serialised there. :meth:`Signals.changes` says what to save: the journal of
articles since the last flush (its rows made and counted by the hour there, one counter
update per hour, and serialised), the states that raised a signal, and at a checkpoint
every state changed since the last one (the journal it covers deleted).
"""

from __future__ import annotations

import heapq
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import attrgetter
from typing import Any

import orjson

from monitor.model import Rule, Signal, SignalArticle
from monitor.signals.detect import (
    CHART_HOURS,
    CHECKPOINT_INTERVAL,
    CLOCK_SKEW,
    DEFAULT_LEVELS,
    BurstState,
    Escalations,
    Hourly,
    Sighting,
    SpikeState,
    Track,
    article_of,
    article_shaped,
    signal_of,
    window_key,
)

__all__ = ["Chart", "Signals"]

_ID = attrgetter("id")
#: What reading a saved state of an unexpected shape raises (the entry is then skipped).
_UNREADABLE = (AttributeError, IndexError, KeyError, TypeError, ValueError)
_UNSEEN: Any = object()

_EXPIRY_INTERVAL = 60.0
_HOUR = 3600.0
_CHART_WINDOW = CHART_HOURS * _HOUR


@dataclass(frozen=True, slots=True)
class Chart:
    """One rule's matching articles per hour, for the status page."""

    #: The first hour shown, as ``floor(unix time / 3600)``.
    first_hour: int
    #: Matching articles in each of the :data:`CHART_HOURS` hours from ``first_hour``.
    counts: list[int]
    #: The usual count per hour (see :meth:`Signals.chart`).
    baseline: float
    #: The rule's signals within those hours: (time, kind), oldest first.
    signals: list[tuple[float, str]]


class Signals:
    """Burst and spike detectors per rule, escalations per story (see the module docstring).

    About eighteen methods in one class: the hot path (:meth:`observe_article`), the
    journal, the checkpoints and the chart all read and write the same per-rule windows,
    and a split would add a call per rule and article to the path docs/signals.md measures.
    Not thread-safe: one caller at a time (the daemon's event loop, or the consumer's).
    """

    def __init__(
        self, *, levels: Sequence[int] = DEFAULT_LEVELS, story_ttl: float = 48 * 3600.0, flush_interval: float = 5.0,
        checkpoint_interval: float = CHECKPOINT_INTERVAL,
    ) -> None:  # fmt: skip
        self.flush_interval = flush_interval
        self.checkpoint_interval = checkpoint_interval
        self.tracks: dict[str, Track] = {}
        #: Rule id -> its burst, its spike detector (the tracks' own, for the hot path).
        self.bursts: dict[str, BurstState] = {}
        self.spikes: dict[str, SpikeState] = {}
        #: Id of each rule :meth:`watch` follows -> its burst detector or None (the hot
        #: path's one look-up per rule; keyed by the id strings of the rules it was given).
        self._watched: dict[str, BurstState | None] = {}
        #: Rules whose burst detector no sighting can reach before its floor (a cool-down),
        #: passed over without a look at their detector; and their floors as a heap of
        #: (floor, rule id), the first to thaw on top (see :meth:`_freeze`).
        self._frozen: set[str] = set()
        self._thaws: list[tuple[float, str]] = []
        self.escalations = Escalations(levels, story_ttl)
        #: Rule id -> signals raised since start, by kind (for metrics and the status page).
        self.raised: dict[str, dict[str, int]] = {}
        #: Matching articles per rule and hour, and the rules' latest signals (the charts).
        self.hourly = Hourly()
        self._rules: dict[str, Rule] = {}
        #: Ids of the rules whose detectors changed since the last checkpoint (a sighting
        #: stopped at a burst's floor changes nothing).
        self._dirty: set[str] = set()
        self._urgent: set[str] = set()
        #: Rules whose latest signals changed since they were last written (``marks:<rule id>``).
        self._marks_changed: set[str] = set()
        self._stories: set[str] = set()
        self._urgent_stories: set[str] = set()
        self._gone: set[str] = set()
        #: Articles not yet counted by the hour: (detected, article, rules), made journal
        #: rows by :meth:`_pending` (counted there) and serialised at the flush.
        self._journal: list[tuple[float, SignalArticle, Sequence[Rule]]] = []
        self._rows: list[tuple[Any, ...]] = []
        #: Hour -> the rule ids of each replayed article not yet counted.
        self._uncounted: dict[int, list[list[str]]] = {}
        self._seq = 0
        self._journal_keys: list[str] = []
        self._next_flush = -math.inf
        self._next_checkpoint = -math.inf
        self._next_expiry = -math.inf
        #: Restored entries waiting for :meth:`watch` to meet their rules.
        self._saved: dict[str, dict[str, Any]] = {}
        self._replay: list[tuple[int, list[Any]]] = []
        #: Signals a replay raised (a rule whose block changed), returned by the next observe.
        self._held: list[Signal] = []

    # -- rules ---------------------------------------------------------------------------

    def watch(self, rules: Iterable[Rule], now: float) -> None:
        """Follow these rules: a new or changed spike block starts watching its baseline
        ``now``; the state of rules gone or disabled is dropped. Called at start (after
        :meth:`restore`: the saved states are taken back and the journal replayed) and
        after each reload (a rule met first in :meth:`observe` is followed from then)."""
        self._rules = {rule.id: rule for rule in rules if rule.enabled}
        if self._next_checkpoint == -math.inf:
            # The first checkpoint one interval after start: until then the journal covers it.
            self._next_checkpoint = now + self.checkpoint_interval
        for rule in self._rules.values():
            if rule.burst is not None or rule.spike is not None:
                self._track(rule, now)
        for rule_id in [r for r, t in self.tracks.items() if r not in self._rules or (t.burst is None and t.spike is None)]:
            del self.tracks[rule_id]
            self.bursts.pop(rule_id, None)
            self.spikes.pop(rule_id, None)
            self._gone.add(f"rule:{rule_id}")
        for rule_id in [r for r in self.hourly.marks if r not in self._rules]:
            del self.hourly.marks[rule_id]
            self._gone.add(f"marks:{rule_id}")
        self._saved.clear()
        self._watched = {rule_id: self.bursts.get(rule_id) for rule_id in self._rules}
        self._frozen, self._thaws = set(), []
        if self._replay:
            self._replay_journal(now)

    def _track(self, rule: Rule, now: float) -> Track:
        """The rule's track, its detectors following the rule's blocks (a changed block
        starts afresh but keeps its cool-down)."""
        track = self.tracks.get(rule.id)
        if track is None:
            track = self.tracks[rule.id] = Track(rule)
            saved = self._saved.pop(f"rule:{rule.id}", None)
            if saved is not None:
                try:
                    _load_track(track, saved, now)
                except _UNREADABLE:
                    # A state of another shape: the rule starts afresh, the journal replayed for it.
                    track = self.tracks[rule.id] = Track(rule)
        track.rule = rule
        if (track.burst.spec if track.burst else None) != rule.burst:
            old = track.burst.dump() if track.burst else {}
            track.burst = BurstState.load(rule.burst, old) if rule.burst is not None else None
            self._dirty.add(rule.id)
        if (track.spike.spec if track.spike else None) != rule.spike:
            old = track.spike.dump() if track.spike else {}
            track.spike = SpikeState.load(rule.spike, old, now) if rule.spike is not None else None
            self._dirty.add(rule.id)
        if track.burst is None:
            self.bursts.pop(rule.id, None)
        else:
            self.bursts[rule.id] = track.burst
        if track.spike is None:
            self.spikes.pop(rule.id, None)
        else:
            self.spikes[rule.id] = track.spike
        return track

    # -- the hot path --------------------------------------------------------------------

    def observe(self, sightings: Iterable[Sighting], now: float) -> list[Signal]:
        """The signals these sightings raise (each at most once: see the module docstring).
        Consecutive sightings of one article are counted as one :meth:`observe_article`; a
        sighting its rule's window already holds (a batch read again) is passed over."""
        raised: list[Signal] = []
        group: list[Rule] = []
        current: Sighting | None = None
        for sighting in sightings:
            if self._counted(sighting.rule.id, sighting.article.id):
                continue
            if current is not None and (sighting.article is not current.article or sighting.detected != current.detected):
                raised += self.observe_article(current.article, group, current.detected, now)
                group = []
            current = sighting
            group.append(sighting.rule)
        if current is not None:
            raised += self.observe_article(current.article, group, current.detected, now)
        return raised + self._expire(now)

    def _counted(self, rule_id: str, article_id: str) -> bool:
        burst, spike = self.bursts.get(rule_id), self.spikes.get(rule_id)
        return (burst is not None and (article_id in burst.spent or any(a.id == article_id for _, a in burst.entries))) or (
            spike is not None and article_id in spike.recent
        )

    def observe_article(
        self, article: SignalArticle, rules: Sequence[Rule], detected: float, now: float, *, journal: bool = True
    ) -> Sequence[Signal]:
        """The signals one new article raises, matched by ``rules`` and detected at ``detected``
        (``journal=False``: neither journalled nor counted by the hour, as in a replay or a backtest).

        The hot path (docs/signals.md, "Cost"): per article a journal row that holds
        ``article`` and ``rules`` as given until the next flush (neither may be changed
        after the call; the hourly counts are taken from the rows there); a rule without
        a ``burst:`` or ``spike:`` block stops at them (its matches are counted by the hour
        only); per other rule one set look-up (a rule in a cool-down that no sighting of
        this article can end stops there) or one dictionary look-up and, with a ``burst:``
        block, a compare with its floor and perhaps an entry in its window and an outlet
        counter. A rule's blocks are those :meth:`watch` saw (a rule met first here is
        followed with the blocks it has); a rule given without blocks counts for none,
        even if its id has a detector (a match made before a reload added a block)."""
        raised: list[Signal] | None = None
        published = article.published
        if published is not None and not math.isfinite(published):
            published = None
        late = detected + CLOCK_SKEW
        if journal:
            # The rules are kept as given (not copied): the row is serialised at the flush.
            self._journal.append((detected, article, rules))
        thaws = self._thaws
        if thaws and thaws[0][0] <= late:
            self._thaw(late)
        watched, spikes, dirty, frozen = self._watched, self.spikes, self._dirty, self._frozen
        for rule in rules:
            if rule.burst is None and rule.spike is None:
                continue  # most rules: no detector to look up
            rule_id = rule.id
            # Most sightings of a busy rule fall in its cool-down: one set look-up.
            burst = None if rule_id in frozen else watched.get(rule_id, _UNSEEN)
            if burst is _UNSEEN:
                burst = self._unseen(rule, now)
            if burst is not None:
                t = detected if published is None else published if detected - burst.window <= published <= late else detected
                if t >= burst.floor:
                    dirty.add(rule_id)
                    entries = burst.add(article, t)
                    if entries is not None:
                        raised = raised or []
                        raised.append(self._raise(rule_id, signal_of("burst", window_key(entries), rule, entries, now)))
                elif burst.floor > late:
                    self._freeze(rule_id, burst.floor)
            if spikes:
                spike = spikes.get(rule_id)
                if spike is not None:
                    dirty.add(rule_id)
                    window = spike.spec.window
                    t = published if published is not None and detected - window <= published <= late else detected
                    signal = spike.add(rule, article, t, now)
                    if signal is not None:
                        raised = raised or []
                        raised.append(self._raise(rule_id, signal))
        if article.story_id is not None and self.escalations.levels:
            escalations = self._escalate(article, rules, detected, now)
            if escalations:
                raised = (raised or []) + escalations
        if self._held:
            raised, self._held = self._held + (raised or []), []
        return raised or ()

    def _freeze(self, rule_id: str, floor: float) -> None:
        """Pass over the rule's burst detector until an article's latest plausible time
        (detection and :data:`CLOCK_SKEW`) reaches ``floor``: every sighting before is below
        it, which the detector would refuse. A frozen detector's floor stays put (only an
        added sighting, a burst or :meth:`watch` move it; :meth:`watch` thaws all)."""
        self._frozen.add(rule_id)
        heapq.heappush(self._thaws, (floor, rule_id))

    def _thaw(self, late: float) -> None:
        """Follow again the rules whose floor a sighting at ``late`` or before can reach."""
        thaws, frozen = self._thaws, self._frozen
        while thaws and thaws[0][0] <= late:
            frozen.discard(heapq.heappop(thaws)[1])

    def _unseen(self, rule: Rule, now: float) -> BurstState | None:
        """The burst detector of a rule :meth:`watch` did not see (followed from now on if it
        has blocks and no detectors yet)."""
        burst = self.bursts.get(rule.id)
        if burst is None and (rule.burst is not None or rule.spike is not None) and rule.id not in self.tracks:
            burst = self._track(rule, now).burst
        return burst

    def _escalate(self, article: SignalArticle, rules: Sequence[Rule], detected: float, now: float) -> list[Signal]:
        story_id = article.story_id
        assert story_id is not None
        escalations = self.escalations.add(article, rules, detected, now)
        self._stories.add(story_id)
        if escalations:
            self._urgent_stories.add(story_id)
            for signal in escalations:
                self.hourly.note(signal)
                self._marks_changed.add(signal.rule_id)
                self._count(signal)
        return escalations

    def _raise(self, rule_id: str, signal: Signal) -> Signal:
        self.hourly.note(signal)
        self._marks_changed.add(rule_id)
        self._urgent.add(rule_id)
        self._count(signal)
        return signal

    def _pending(self) -> None:
        """Make the articles since the last call journal rows, counted into the hourly counts
        (before a flush, a checkpoint, a chart): one counter update per hour, not per article."""
        uncounted, self._uncounted = self._uncounted, {}
        if self._journal:
            journal, self._journal = self._journal, []
            hours: dict[int, list[str]] = {}
            rows = self._rows
            for detected, article, rules in journal:
                ids = list(map(_ID, rules))
                published = article.published
                rows.append((detected, article.id, article.url, article.title, article.outlet, published, article.story_id, ids))
                # The chart's hour: on the article's time when plausible within the chart's span.
                t = published if published is not None and detected - _CHART_WINDOW <= published <= detected + CLOCK_SKEW else detected
                hour = int(t // _HOUR)
                group = hours.get(hour)
                if group is None:
                    hours[hour] = ids.copy()
                else:
                    group += ids
            for hour, ids in hours.items():
                self.hourly.count(hour, ids)
        for hour, lists in uncounted.items():
            self.hourly.count(hour, chain.from_iterable(lists))

    def _count(self, signal: Signal) -> None:
        counts = self.raised.setdefault(signal.rule_id, {})
        counts[signal.kind] = counts.get(signal.kind, 0) + 1

    def _expire(self, now: float) -> list[Signal]:
        if now < self._next_expiry and not self._held:
            return []
        if now >= self._next_expiry:
            self._next_expiry = now + _EXPIRY_INTERVAL
            for story_id in self.escalations.expire(now):
                self._stories.discard(story_id)
                self._gone.add(f"story:{story_id}")
        held, self._held = self._held, []
        return held

    def expire(self, now: float) -> list[Signal]:
        """Forget stories unseen for their time to live (at most once a minute); the signals
        a replay held back. The daemon calls it after each batch."""
        return self._expire(now)

    # -- state ---------------------------------------------------------------------------

    def changes(self, now: float | None = None) -> list[tuple[str, bytes | None]]:
        """State entries to save: (key, JSON), or (key, None) for one to delete.

        With ``now`` (after each batch): the states that raised a signal, with the journal
        so far (save them with those signals, so a restart never repeats one); the journal
        once per ``flush_interval``; a checkpoint once per ``checkpoint_interval``. Without
        ``now`` (at shutdown, or after each batch of ``news-monitor signals``): a checkpoint.
        """
        if now is not None and now < self._next_flush and not (self._urgent or self._urgent_stories or self._gone):
            return []  # the common case: nothing due
        self._pending()
        checkpoint = now is None or now >= self._next_checkpoint
        if now is not None and checkpoint:
            self._next_checkpoint = now + self.checkpoint_interval
        urgent = bool(self._urgent or self._urgent_stories or self._gone)
        out: list[tuple[str, bytes | None]] = []
        if checkpoint:
            # The states written below cover these articles: no journal entry for them.
            self._seq += 1
            self._rows = []
        elif self._rows and now is not None and (urgent or now >= self._next_flush):
            self._seq += 1
            key = f"journal:{self._seq:012d}"
            out.append((key, orjson.dumps(self._rows)))
            self._journal_keys.append(key)
            self._rows = []
        if now is not None and now >= self._next_flush:
            self._next_flush = now + self.flush_interval
        if checkpoint:
            tracks = [track for track in map(self.tracks.get, self._dirty) if track is not None]
            stories = self._stories
            self._dirty, self._stories = set(), set()
            out += [(key, None) for key in self._journal_keys]
            self._journal_keys = []
            out += self._hourly_changes()
        else:
            tracks = [track for track in map(self.tracks.get, self._urgent) if track is not None]
            stories = self._urgent_stories & self._stories
            self._stories -= stories
        marks = self.hourly.marks
        out += [(f"marks:{r}", orjson.dumps(marks[r])) for r in sorted(self._marks_changed) if r in marks]
        self._marks_changed = set()
        for track in tracks:
            if self.tracks.get(track.rule.id) is track:
                track.seq = self._seq
                out.append((f"rule:{track.rule.id}", orjson.dumps(track.dump())))
        for story_id in stories:
            story = self.escalations.stories.get(story_id)
            if story is not None:
                story["seq"] = self._seq
                out.append((f"story:{story_id}", orjson.dumps(story)))
        out += [(key, None) for key in sorted(self._gone)]
        self._urgent, self._urgent_stories, self._gone = set(), set(), set()
        return out

    def _hourly_changes(self) -> list[tuple[str, bytes | None]]:
        """The hours counted in since the last checkpoint, and those forgotten."""
        hourly = self.hourly
        out: list[tuple[str, bytes | None]] = [(f"hours:{h}", None) for h in sorted(hourly.gone)]
        out += [(f"hours:{h}", orjson.dumps(hourly.hours[h])) for h in sorted(hourly.touched) if h in hourly.hours]
        hourly.touched, hourly.gone = set(), set()
        return out

    def restore(self, entries: Iterable[tuple[str, bytes]]) -> int:
        """Take back saved entries (before :meth:`watch`, which meets them with the rules and
        replays the journal); returns how many were read. An unreadable entry is skipped."""
        count = 0
        for key, blob in entries:
            try:
                document = orjson.loads(blob)
            except orjson.JSONDecodeError:
                continue
            kind, _, name = key.partition(":")
            try:
                if not self._restore_entry(key, kind, name, document):
                    continue
            except _UNREADABLE:
                continue
            count += 1
        return count

    def _restore_entry(self, key: str, kind: str, name: str, document: Any) -> bool:
        """Take back one decoded entry; False for one of no known kind or shape (a shape
        error may raise instead: :meth:`restore` skips the entry either way)."""
        if kind == "hours" and isinstance(document, dict) and name.lstrip("-").isdigit():
            self.hourly.hours[int(name)] = Counter({str(r): int(n) for r, n in document.items()})
            self.hourly.latest = max(self.hourly.latest, int(name))
        elif kind == "marks" and isinstance(document, list):
            self.hourly.marks[name] = [(float(t), str(k)) for t, k in document]
        elif kind == "journal" and isinstance(document, list) and name.isdigit():
            self._replay.append((int(name), document))
            self._journal_keys.append(key)
            self._seq = max(self._seq, int(name))
        elif not isinstance(document, dict):
            return False
        elif kind == "story":
            if not _story_shaped(document):
                return False
            document.setdefault("seq", -1)
            self.escalations.stories[name] = document
        elif kind == "rule":
            self._saved[key] = document
        elif kind in ("burst", "spike"):
            # Entries of the first release: one per rule and detector, no journal.
            self._saved.setdefault(f"rule:{name}", {"seq": self._seq})[kind] = document
            self._gone.add(key)
            # Rewritten as rule:<id> in the same write that deletes it, or a crash loses it.
            self._urgent.add(name)
        else:
            return False
        return True

    def _replay_journal(self, now: float) -> None:
        """Count the journal's articles that the saved states do not cover (at the first watch)."""
        rules, stories = self._rules, self.escalations.stories
        for seq, rows in sorted(self._replay, key=lambda entry: entry[0]):
            for row in rows:
                try:
                    detected, article, rule_ids = float(row[0]), article_of(row[1:7]), row[7]
                except _UNREADABLE:
                    continue
                if not (math.isfinite(detected) and isinstance(rule_ids, list) and all(isinstance(r, str) for r in rule_ids)):
                    continue
                if not article_shaped(article):
                    continue
                # Hourly counts are saved at checkpoints only: every row after one counts.
                published = article.published if article.published is not None and math.isfinite(article.published) else None
                late = detected + CLOCK_SKEW
                t_chart = published if published is not None and detected - _CHART_WINDOW <= published <= late else detected
                self._uncounted.setdefault(int(t_chart // _HOUR), []).append([str(r) for r in rule_ids])
                # The detectors only for rows after their saved state.
                tracks = self.tracks
                matched = [rules[r] for r in rule_ids if r in rules and (r not in tracks or tracks[r].seq < seq)]
                story = stories.get(article.story_id) if article.story_id is not None else None
                if story is not None and story.get("seq", -1) >= seq:
                    article = _without_story(article)
                if matched or article.story_id is not None:
                    self._held += self.observe_article(article, matched, detected, now, journal=False)
        self._replay = []

    # -- the status page -----------------------------------------------------------------

    def chart(self, rule_id: str, now: float) -> Chart | None:
        """The rule's matching articles per hour over the last :data:`CHART_HOURS` hours
        ending with ``now``'s, its baseline per hour (the spike block's average window
        scaled to an hour, else the mean of those hours), and its signals within them;
        None for a rule without a match in them."""
        self._pending()
        first = int(now // _HOUR) - CHART_HOURS + 1
        counts = self.hourly.counts(rule_id, first)
        if not any(counts):
            return None
        baseline = sum(counts) / len(counts)
        track = self.tracks.get(rule_id)
        if track is not None and track.spike is not None:
            average = track.spike.average()
            if average is not None:
                baseline = average * _HOUR / track.spike.spec.window
        marks = self.hourly.marks.get(rule_id, [])
        signals = [(t, kind) for t, kind in marks if first * _HOUR <= t < (first + CHART_HOURS) * _HOUR]
        return Chart(first, counts, baseline, signals)

    def active(self, now: float) -> list[str]:
        """The rules (those :meth:`watch` follows, once it was called) with a match in the
        last :data:`CHART_HOURS` hours, most matches first."""
        self._pending()
        totals = self.hourly.totals(int(now // _HOUR) - CHART_HOURS + 1)
        known = self._rules
        return sorted((r for r in totals if not known or r in known), key=lambda r: (-totals[r], r))


def _without_story(article: SignalArticle) -> SignalArticle:
    """The article with its story left out (its story's saved state already counts it)."""
    return SignalArticle(id=article.id, url=article.url, title=article.title, outlet=article.outlet, published=article.published)


def _story_shaped(document: dict[str, Any]) -> bool:
    """Whether a saved story has what :class:`~monitor.signals.detect.Escalations` reads."""
    first, outlets, rules, done, seen = (document.get(k) for k in ("first", "outlets", "rules", "done", "seen"))
    return (
        isinstance(first, list) and len(first) >= 7 and isinstance(first[0], (int, float))
        and isinstance(outlets, list) and all(isinstance(o, str) for o in outlets)
        and isinstance(rules, dict) and all(isinstance(r, list) and len(r) == 3 and isinstance(r[2], list) for r in rules.values())
        and isinstance(done, list) and isinstance(seen, (int, float)) and isinstance(document.get("seq", -1), int)
    )  # fmt: skip


def _load_track(track: Track, document: Mapping[str, Any], now: float) -> None:
    rule = track.rule
    track.seq = int(document.get("seq", -1))
    burst, spike = document.get("burst"), document.get("spike")
    if rule.burst is not None and isinstance(burst, dict):
        track.burst = BurstState.load(rule.burst, burst)
    if rule.spike is not None and isinstance(spike, dict):
        track.spike = SpikeState.load(rule.spike, spike, now)
