"""The detectors with a controllable clock: bursts, spikes, escalations, absurd times, restarts."""

from __future__ import annotations

import itertools
import time

import orjson

from monitor.model import Burst, Rule, SignalArticle, Spike
from monitor.signals import Sighting, Signals, event_time

HOUR = 3600.0
T0 = 1_790_000_000.0
_ids = itertools.count()

BURST = Rule(id="summit", query="summit", topic="alerts.summit", burst=Burst(min_outlets=3, window=1800.0, cooldown=6 * HOUR))
SPIKE = Rule(id="quake", query="quake", topic="alerts.quake", spike=Spike(window=HOUR, baseline=7 * 24 * HOUR, factor=3.0, min_count=5))
PLAIN = Rule(id="plain", query="plain", topic="alerts.plain")


def seen(rule: Rule, outlet: str | None, at: float, *, published: float | None = ..., story: str | None = None) -> Sighting:  # type: ignore[assignment]
    n = next(_ids)
    article = SignalArticle(
        id=f"a{n}",
        url=f"https://{outlet}/{n}" if outlet else None,
        title=f"article {n}",
        outlet=outlet,
        published=at if published is ... else published,
        story_id=story,
    )
    return Sighting.of(rule, article, at)


def test_three_outlets_within_the_window_give_one_burst_and_a_fourth_gives_none() -> None:
    signals = Signals()
    got = []
    for i, outlet in enumerate(["bbc.co.uk", "lemonde.fr", "reuters.com", "apnews.com"]):
        got += signals.observe([seen(BURST, outlet, T0 + i * 300)], T0 + i * 300)
    assert [s.kind for s in got] == ["burst"]
    burst = got[0]
    assert burst.outlets == ("bbc.co.uk", "lemonde.fr", "reuters.com")
    assert burst.topic == "alerts.summit.signals" and burst.articles == 3
    assert (burst.window_start, burst.window_end) == (T0, T0 + 600)
    assert burst.first.outlet == "bbc.co.uk" and burst.latest.outlet == "reuters.com"
    # After the cool-down, three new outlets make a second burst.
    later = T0 + 7 * HOUR
    again = [s for i, o in enumerate(["a.com", "b.com", "c.com"]) for s in signals.observe([seen(BURST, o, later + i)], later + i)]
    assert [s.kind for s in again] == ["burst"] and again[0].signal_id != burst.signal_id


def test_ten_articles_from_one_outlet_are_not_a_burst() -> None:
    signals = Signals()
    assert signals.observe([seen(BURST, "bbc.co.uk", T0 + i * 60) for i in range(10)], T0 + 600) == []


def test_outlets_further_apart_than_the_window_are_not_a_burst() -> None:
    signals = Signals()
    got = [s for i, o in enumerate(["a.com", "b.com", "c.com"]) for s in signals.observe([seen(BURST, o, T0 + i * 1000)], T0 + i * 1000)]
    assert got == []


def _baseline(signals: Signals, rule: Rule, start: float, hours: int) -> None:
    signals.watch([rule], start)
    for h in range(hours):
        signals.observe([seen(rule, "bbc.co.uk", start + h * HOUR + 10)], start + h * HOUR + 10)


def test_a_week_at_one_an_hour_then_twelve_in_an_hour_is_a_spike_and_three_is_not() -> None:
    quiet, loud = Signals(), Signals()
    for signals in (quiet, loud):
        _baseline(signals, SPIKE, T0, 24 * 7 + 1)
    now = T0 + (24 * 7 + 1) * HOUR
    assert quiet.observe([seen(SPIKE, "x.com", now + i * 60) for i in range(3)], now + 180) == []
    got = loud.observe([seen(SPIKE, "x.com", now + i * 60) for i in range(12)], now + 720)
    assert [s.kind for s in got] == ["spike"]
    spike = got[0]
    assert spike.baseline is not None and 0.9 <= spike.baseline <= 1.1
    assert spike.ratio is not None and spike.ratio >= 3 and spike.articles >= 5


def test_no_spike_before_the_baseline_was_watched_whole() -> None:
    signals = Signals()
    _baseline(signals, SPIKE, T0, 24)
    now = T0 + 24 * HOUR
    assert signals.observe([seen(SPIKE, "x.com", now + i) for i in range(12)], now + 12) == []


def test_a_story_copied_by_three_then_ten_outlets_escalates_twice() -> None:
    signals = Signals(levels=(3, 10, 30))
    got = []
    for i in range(12):
        got += signals.observe([seen(PLAIN, f"outlet{i}.com", T0 + i * 60, story="story-1")], T0 + i * 60)
    assert [(s.kind, s.level) for s in got] == [("escalation", 3), ("escalation", 10)]
    assert got[1].outlets == tuple(f"outlet{i}.com" for i in range(10))
    assert got[1].first.id == got[0].first.id and got[0].story_id == "story-1"
    # The same outlet again is not a new one.
    assert signals.observe([seen(PLAIN, "outlet0.com", T0 + 900, story="story-1")], T0 + 900) == []


def test_absurd_published_times_count_at_their_detection_time() -> None:
    assert event_time(0.0, T0, 1800.0) == T0  # 1970
    assert event_time(T0 + 365 * 86400, T0, 1800.0) == T0  # next year
    assert event_time(T0 - 600, T0, 1800.0) == T0 - 600
    signals = Signals()
    # A 1970 article neither opens a window that the next ones fall out of ...
    got = signals.observe([seen(BURST, "a.com", T0, published=0.0)], T0)
    got += signals.observe([seen(BURST, "b.com", T0 + 60)], T0 + 60)
    # ... nor does one dated next year stretch the window or start a cool-down.
    got += signals.observe([seen(BURST, "c.com", T0 + 120, published=T0 + 365 * 86400)], T0 + 120)
    assert [s.kind for s in got] == ["burst"] and got[0].window_end == T0 + 120


def test_state_survives_a_restart_without_repeating_or_forgetting() -> None:
    first = Signals()
    first.watch([BURST], T0)
    got = first.observe([seen(BURST, "a.com", T0), seen(BURST, "b.com", T0 + 1)], T0 + 1)
    saved = dict(first.changes())
    assert got == [] and "rule:summit" in saved
    # Restart: the third outlet completes the burst the first two started.
    second = Signals()
    second.restore((k, v) for k, v in saved.items() if v is not None)
    second.watch([BURST], T0 + 2)
    got = second.observe([seen(BURST, "c.com", T0 + 2)], T0 + 2)
    assert [s.kind for s in got] == ["burst"]
    saved.update(second.changes())
    # Restart again: the cool-down is remembered.
    third = Signals()
    third.restore((k, v) for k, v in saved.items() if v is not None)
    third.watch([BURST], T0 + 3)
    assert third.observe([seen(BURST, o, T0 + 3 + i) for i, o in enumerate(["d.com", "e.com", "f.com"])], T0 + 6) == []


def test_a_rule_gone_from_the_set_drops_its_state() -> None:
    signals = Signals()
    signals.watch([BURST, SPIKE], T0)
    signals.changes()
    signals.watch([SPIKE], T0 + 1)
    assert dict(signals.changes()) == {"rule:summit": None}


def _saved(store: dict[str, bytes], changes: list[tuple[str, bytes | None]]) -> dict[str, bytes]:
    """``changes`` applied to ``store`` as the state store does (None deletes)."""
    for key, value in changes:
        if value is None:
            store.pop(key, None)
        else:
            store[key] = value
    return store


def _restarted(store: dict[str, bytes], now: float) -> Signals:
    signals = Signals(flush_interval=5.0)
    signals.restore(store.items())
    signals.watch([BURST], now)
    return signals


def test_a_crash_loses_no_flushed_sighting_and_repeats_no_burst() -> None:
    store: dict[str, bytes] = {}
    first = Signals(flush_interval=5.0)
    first.watch([BURST], T0)
    _saved(store, first.changes(T0))
    assert first.observe([seen(BURST, "a.com", T0 + 1)], T0 + 1) == []
    # Within the flush interval nothing is written: no serialisation per alert.
    assert first.changes(T0 + 1) == []
    first.observe([seen(BURST, "b.com", T0 + 6)], T0 + 6)
    written = first.changes(T0 + 6)
    assert [key.partition(":")[0] for key, _ in written] == ["journal"]
    _saved(store, written)
    # A crash (no shutdown checkpoint): the journal brings both sightings back.
    second = _restarted(store, T0 + 7)
    got = second.observe([seen(BURST, "c.com", T0 + 7)], T0 + 7)
    assert [s.kind for s in got] == ["burst"] and set(got[0].outlets) == {"a.com", "b.com", "c.com"}
    written = second.changes(T0 + 7)
    assert {key.partition(":")[0] for key, _ in written} == {"journal", "rule", "marks"}  # saved with the signal
    _saved(store, written)
    # Another crash: the journal is replayed, but the burst's state covers it: no repeat,
    # and the cool-down holds.
    third = _restarted(store, T0 + 8)
    assert third.observe([seen(BURST, o, T0 + 8 + i) for i, o in enumerate(["d.com", "e.com", "f.com"])], T0 + 11) == []
    assert third.raised == {}
    # A checkpoint deletes the journal it covers.
    _saved(store, third.changes())
    assert not [key for key in store if key.startswith("journal:")]
    fourth = _restarted(store, T0 + 12)
    assert fourth.tracks["summit"].burst is not None and fourth.tracks["summit"].burst.fired == T0 + 7


def test_the_chart_counts_matches_per_hour_with_the_signals() -> None:
    signals = Signals()
    for i, outlet in enumerate(["a.com", "b.com", "c.com"]):
        signals.observe([seen(BURST, outlet, T0 + i * 60)], T0 + i * 60)
    signals.observe([seen(BURST, "a.com", T0 - 3 * HOUR)], T0 - 3 * HOUR)
    chart = signals.chart("summit", T0 + 600)
    assert chart is not None and len(chart.counts) == 48 and sum(chart.counts) == 4
    assert chart.counts[-1] == 3 and chart.counts[-4] == 1
    assert [kind for _, kind in chart.signals] == ["burst"]
    assert chart.baseline == 4 / 48
    assert signals.active(T0 + 600) == ["summit"]
    # Two days later the rule has no chart.
    assert signals.chart("summit", T0 + 49 * HOUR) is None and signals.active(T0 + 49 * HOUR) == []


def test_the_chart_survives_a_restart_and_a_crash() -> None:
    store: dict[str, bytes] = {}
    signals = Signals(flush_interval=5.0)
    signals.watch([BURST], T0 - 3 * HOUR)
    _saved(store, signals.changes(T0 - 3 * HOUR))
    for i, outlet in enumerate(["a.com", "b.com", "c.com", "d.com"]):
        signals.observe([seen(BURST, outlet, T0 + i * 60 - 2 * HOUR)], T0 + i * 60 - 2 * HOUR)
        _saved(store, signals.changes(T0 + i * 60 - 2 * HOUR))
    before = signals.chart("summit", T0)
    assert before is not None and sum(before.counts) == 4 and [k for _, k in before.signals] == ["burst"]
    # A crash: the journal (and the burst's own state) bring the counts back.
    crashed = _restarted(store, T0)
    assert crashed.chart("summit", T0) == before
    # A shutdown's checkpoint: the hourly counts and the marks are saved, the journal gone.
    _saved(store, signals.changes())
    assert not [key for key in store if key.startswith("journal:")]
    assert _restarted(store, T0).chart("summit", T0) == before


def test_a_rule_without_blocks_is_charted_from_the_journal_but_has_no_detector() -> None:
    store: dict[str, bytes] = {}
    signals = Signals(flush_interval=5.0)
    signals.watch([PLAIN, BURST], T0)
    _saved(store, signals.changes(T0))
    for i, outlet in enumerate(["a.com", "b.com", "c.com"]):
        assert signals.observe([seen(PLAIN, outlet, T0 + i * 60), seen(BURST, "z.com", T0 + i * 60)], T0 + i * 60) == []
        _saved(store, signals.changes(T0 + i * 60))
    assert "plain" not in signals.tracks and not any(key == "rule:plain" for key in store)
    chart = signals.chart("plain", T0 + 600)
    assert chart is not None and sum(chart.counts) == 3 and chart.signals == []
    # A crash: the journal's rows (each rule id read once at the flush) bring the counts back.
    assert _restarted(store, T0 + 600).chart("plain", T0 + 600) == chart
    assert _restarted(store, T0 + 600).chart("summit", T0 + 600) == signals.chart("summit", T0 + 600)


def test_state_of_the_first_release_is_rewritten_in_the_step_that_deletes_it() -> None:
    # The first release saved one entry per rule and detector (burst:<id>), no journal.
    # A crash right after the first write must not lose the burst's cool-down.
    old = Signals()
    old.watch([BURST], T0)
    fired = old.observe([seen(BURST, o, T0 + i) for i, o in enumerate(["a.com", "b.com", "c.com"])], T0 + 2)
    assert [s.kind for s in fired] == ["burst"]
    legacy = {"burst:summit": orjson.dumps(old.tracks["summit"].dump()["burst"])}
    upgraded = Signals()
    upgraded.restore(legacy.items())
    upgraded.watch([BURST], T0 + 3)
    store = _saved(dict(legacy), upgraded.changes(T0 + 3))
    assert "burst:summit" not in store and "rule:summit" in store
    # Crash, restart from what the first write left: the cool-down holds.
    again = _restarted(store, T0 + 4)
    assert again.observe([seen(BURST, o, T0 + 4 + i) for i, o in enumerate(["d.com", "e.com", "f.com"])], T0 + 7) == []


def test_sightings_of_a_burst_read_again_are_not_counted_again() -> None:
    # A cool-down shorter than the window: the burst's own sightings lie above its new floor.
    quick = Rule(id="quick", query="q", topic="alerts.quick", burst=Burst(min_outlets=2, window=1800.0, cooldown=600.0))
    batch = [seen(quick, "a.com", T0), seen(quick, "b.com", T0 + 1)]
    first = Signals()
    first.watch([quick], T0)
    assert [s.kind for s in first.observe(batch, T0 + 1)] == ["burst"]
    # The consumer's state was saved, its offsets not committed: the batch is read again.
    again = Signals()
    again.restore((k, v) for k, v in first.changes() if v is not None)
    again.watch([quick], T0 + 2)
    assert again.observe(batch, T0 + 2) == []
    # Ten minutes on, one new outlet alone is not a second burst.
    assert again.observe([seen(quick, "c.com", T0 + 601)], T0 + 601) == []


def test_two_spikes_of_one_window_start_have_different_ids() -> None:
    # A cool-down shorter than the window: the second spike's window starts with the first's
    # first article; the same id would make notify drop it as a repeat.
    eager = Rule(id="eager", query="q", topic="alerts.eager", spike=Spike(window=HOUR, baseline=2 * HOUR, factor=1.0, min_count=2, cooldown=60.0))
    signals = Signals(levels=())
    _baseline(signals, eager, T0, 3)
    start = T0 + 3 * HOUR + 10
    got = [s for i in range(4) for s in signals.observe([seen(eager, f"o{i}.com", start + i * 120)], start + i * 120)]
    assert [s.kind for s in got] == ["spike", "spike", "spike"]
    assert len({s.window_start for s in got}) == 1 and len({s.signal_id for s in got}) == 3


def test_a_spike_average_over_a_long_baseline_of_short_windows_is_quick() -> None:
    # 1s windows over a 366-day baseline: 31.6 million windows, one of them with an article.
    fine = Rule(id="fine", query="q", topic="alerts.fine", spike=Spike(window=1.0, baseline=366 * 86400.0))
    signals = Signals(levels=())
    signals.watch([fine], T0)
    signals.observe([seen(fine, "a.com", T0 + 5)], T0 + 5)
    signals.observe([seen(fine, "a.com", T0 + 9)], T0 + 9)
    spike = signals.tracks["fine"].spike
    assert spike is not None
    began = time.perf_counter()
    average = spike.average()
    assert average is not None and 0 < average * 366 * 86400 < 1.01
    chart = signals.chart("fine", T0 + 10)
    # The old sum over every window took about 1 s per call here (a status page's chart).
    assert chart is not None and time.perf_counter() - began < 0.25
