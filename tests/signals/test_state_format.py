"""Saved detector state across releases, and the bookkeeping's shortcuts (docs/signals.md, "Cost").

``SAVED`` is a state store as the release before the compact hot path wrote it (rule,
story, journal, hours and marks entries, taken from a run of that code): it must restore
whole. The other tests pin the shortcuts of the hot path to the detectors' behaviour.
"""

from __future__ import annotations

import orjson

from monitor.model import Burst, Rule, SignalArticle, Spike
from monitor.signals import Signals

HOUR = 3600.0
T0 = 1_790_000_000.0
BURST = Rule(id="summit", query="summit", topic="alerts.summit", burst=Burst(min_outlets=3, window=1800.0, cooldown=6 * HOUR))
SPIKE = Rule(id="quake", query="quake", topic="alerts.quake", spike=Spike(window=HOUR, baseline=6 * HOUR, factor=3.0, min_count=3))

# Written by the previous release: six hours of one quake an hour (a checkpoint), then three
# outlets of one story on summit at T0..T0+120 (a burst and a level-3 escalation, saved
# with them), then a fourth outlet of the story matching both rules at T0+600 (a journal
# entry newer than either rule's state).
SAVED = {
    "hours:497215": '{"quake":1}',
    "hours:497216": '{"quake":1}',
    "hours:497217": '{"quake":1}',
    "hours:497218": '{"quake":1}',
    "hours:497219": '{"quake":1}',
    "hours:497220": '{"quake":1}',
    "hours:497221": '{"quake":1}',
    "hours:497222": '{"summit":1}',
    "journal:000000000003": '[[1790000060.0,"a8","https://b.com/8","article 8","b.com",1790000060.0,"story-1",["summit"]]]',
    "journal:000000000004": '[[1790000120.0,"a9","https://c.com/9","article 9","c.com",1790000120.0,"story-1",["summit"]]]',
    "journal:000000000005": '[[1790000600.0,"a10","https://d.com/10","article 10","d.com",1790000600.0,"story-1",["summit","quake"]]]',
    "marks:summit": '[[1790000120.0,"burst"],[1790000120.0,"escalation"]]',
    "rule:quake": (
        '{"seq":1,"burst":null,"spike":{"spec":[3600.0,21600.0,3.0,3,21600.0],"since":1789974800.0,'
        '"recent":[[1789996400.0,"a6","https://q.com/6","article 6","q.com",1789996400.0,null]],'
        '"buckets":[[497215,1],[497216,1],[497217,1],[497218,1],[497219,1],[497220,1]],"latest":1789996400.0,"fired":null}}'
    ),
    "rule:summit": '{"seq":4,"burst":{"spec":[3,1800.0,21600.0],"entries":[],"latest":1790000120.0,"fired":1790000120.0},"spike":null}',
    "story:story-1": (
        '{"first":[1790000000.0,"a7","https://a.com/7","article 7","a.com",1790000000.0,"story-1"],'
        '"outlets":["a.com","b.com","c.com"],"rules":{"summit":["alerts.summit","medium",[]]},"done":[3],"seen":1790000120.0,"seq":4}'
    ),
}


def article(n: int, outlet: str, at: float, story: str | None = None) -> SignalArticle:
    return SignalArticle(id=f"n{n}", url=f"https://{outlet}/{n}", title=f"new {n}", outlet=outlet, published=at, story_id=story)


def restored(now: float) -> Signals:
    signals = Signals(flush_interval=5.0)
    assert signals.restore((key, value.encode()) for key, value in SAVED.items()) == len(SAVED)
    signals.watch([BURST, SPIKE], now)
    return signals


def test_state_saved_by_the_previous_release_restores_whole() -> None:
    now = T0 + 700
    signals = restored(now)
    # The hourly counts: the checkpoint's, plus every journal row after it.
    chart = signals.chart("summit", now)
    assert chart is not None and chart.counts[-1] == 4 and [k for _, k in chart.signals] == ["burst", "escalation"]
    quake = signals.chart("quake", now)
    assert quake is not None and quake.counts[-1] == 1 and sum(quake.counts) == 8
    # summit's burst state covers journal 3 and 4 and its cool-down holds through journal 5.
    raised = [
        s.kind
        for i, o in enumerate(["x.com", "y.com", "z.com"])
        for s in signals.observe_article(article(i, o, now + i), [BURST], now + i, now + i)
    ]
    assert raised == []
    # quake's spike state: a baseline of one an hour, and journal 5's article in the window:
    # two more make three, three times the average.
    assert signals.observe_article(article(10, "q.com", now + 10), [SPIKE], now + 10, now + 10) == ()
    assert [s.kind for s in signals.observe_article(article(11, "q.com", now + 11), [SPIKE], now + 11, now + 11)] == ["spike"]
    # The story has journal 5's outlet and rules too (four outlets): six more make ten, one
    # escalation per rule that matched the story, no repeat of three.
    levels = []
    for i, outlet in enumerate(["e.com", "f.com", "g.com", "h.com", "i.com", "j.com"]):
        t = now + 20 + i
        levels += [
            (s.rule_id, s.level)
            for s in signals.observe_article(article(20 + i, outlet, t, "story-1"), [BURST], t, t)
            if s.kind == "escalation"
        ]
    assert sorted(levels) == [("quake", 10), ("summit", 10)]


def test_the_journal_is_written_as_before() -> None:
    signals = Signals(flush_interval=5.0)
    signals.watch([BURST, SPIKE], T0)
    signals.changes(T0)
    signals.observe_article(article(1, "a.com", T0 + 1, "story-9"), [BURST, SPIKE], T0 + 1, T0 + 1)
    signals.observe_article(SignalArticle("n2", None, "no link", None, None), [SPIKE], T0 + 2, T0 + 2)
    written = dict(signals.changes(T0 + 6))
    (key,) = [k for k in written if k.startswith("journal:")]
    assert orjson.loads(written[key] or b"") == [
        [T0 + 1, "n1", "https://a.com/1", "new 1", "a.com", T0 + 1, "story-9", ["summit", "quake"]],
        [T0 + 2, "n2", None, "no link", None, None, None, ["quake"]],
    ]


def _after_a_burst(signals: Signals) -> float:
    """A burst of summit; the floor of its cool-down (before it no sighting is kept)."""
    raised = [
        s
        for i, o in enumerate(["a.com", "b.com", "c.com"])
        for s in signals.observe_article(article(i, o, T0 + i), [BURST], T0 + i, T0 + i)
    ]
    assert [s.kind for s in raised] == ["burst"]
    return T0 + 2 + 6 * HOUR - 1800.0


def _edge(signals: Signals, floor: float) -> list[str]:
    """Sightings around the floor: before it (passed over), detected before it but published
    after it (counted), and two more outlets once the cool-down is over."""
    got = list(signals.observe_article(article(10, "x.com", floor - 400), [BURST], floor - 400, floor - 400))
    got += signals.observe_article(article(11, "y.com", floor + 10), [BURST], floor - 200, floor - 200)
    got += signals.observe_article(article(12, "v.com", floor - 300), [BURST], floor - 300, floor - 300)
    got += signals.observe_article(article(13, "z.com", floor + 1800), [BURST], floor + 1800, floor + 1800)
    got += signals.observe_article(article(14, "w.com", floor + 1801), [BURST], floor + 1801, floor + 1801)
    return [f"{s.kind}:{','.join(sorted(s.outlets))}" for s in got]


def test_a_rule_passed_over_in_its_cool_down_counts_again_at_its_floor() -> None:
    # Live: the sightings before the floor are passed over, the first one that can reach
    # it (a published time after it, within the clock skew) is counted.
    live = Signals()
    live.watch([BURST], T0)
    floor = _after_a_burst(live)
    assert _edge(live, floor) == ["burst:w.com,y.com,z.com"]
    # The same after a restart in the middle of the cool-down.
    first = Signals()
    first.watch([BURST], T0)
    floor = _after_a_burst(first)
    saved = {k: v for k, v in first.changes() if v is not None}
    second = Signals()
    second.restore(saved.items())
    second.watch([BURST], T0 + HOUR)
    assert _edge(second, floor) == ["burst:w.com,y.com,z.com"]


def test_a_checkpoint_rewrites_only_the_detectors_that_changed() -> None:
    store: dict[str, bytes] = {}
    signals = Signals(flush_interval=5.0, checkpoint_interval=HOUR)
    signals.watch([BURST, SPIKE], T0)
    store.update((k, v) for k, v in signals.changes() if v is not None)
    _after_a_burst(signals)
    store.update((k, v) for k, v in signals.changes() if v is not None)  # a checkpoint after the burst
    # In the cool-down summit's sightings change nothing: the checkpoint leaves it alone
    # but counts them, and writes quake, whose spike window took a sighting.
    for i in range(5):
        t = T0 + 60 * (i + 1)
        signals.observe_article(article(100 + i, f"o{i}.com", t), [BURST, SPIKE], t, t)
    written = dict(signals.changes(T0 + HOUR + 10))
    assert "rule:quake" in written and "rule:summit" not in written
    assert orjson.loads(written["hours:497222"] or b"") == {"summit": 8, "quake": 5}
    store.update((k, v) for k, v in written.items() if v is not None)
    # A restart from that checkpoint: the cool-down holds and the counts are whole.
    again = Signals()
    again.restore(store.items())
    again.watch([BURST, SPIKE], T0 + HOUR + 20)
    t = T0 + HOUR + 30
    assert again.observe_article(article(200, "p.com", t), [BURST], t, t) == ()
    chart = again.chart("summit", T0 + HOUR)
    assert chart is not None and chart.counts[-2] == 8


def test_saved_entries_of_another_shape_are_skipped_and_the_detectors_still_work() -> None:
    # JSON, but not what this code writes (a hand edit, a torn disk): each one used to stop
    # the daemon at start (restore, watch) or at the first article of its rule or story.
    garbage = {
        "hours:497222": '{"summit": "many"}',
        "marks:summit": "[[1]]",
        "rule:summit": '{"seq": "x", "burst": {"spec": [3, 1800.0, 21600.0], "entries": [[1]], "fired": "then"}}',
        "rule:quake": '{"seq": 1, "spike": {"spec": [3600.0, 21600.0, 3.0, 3, 21600.0], "buckets": [[1]], "fired": "x"}}',
        "story:story-1": '{"first": [1], "outlets": 3, "rules": [], "done": [], "seen": "now"}',
        "journal:000000000003": '[[1790000060.0, "a8", null, "t", "b.com", "noon", null, ["summit"]], [1.0, "a9", null, "t", null, null, null, 7]]',
    }
    signals = Signals()
    signals.restore((key, value.encode()) for key, value in garbage.items())
    signals.watch([BURST, SPIKE], T0)
    got = []
    for i, outlet in enumerate(["a.com", "b.com", "c.com"]):
        article = SignalArticle(f"n{i}", f"https://{outlet}/{i}", "t", outlet, T0 + i, "story-1")
        got += signals.observe_article(article, [BURST, SPIKE], T0 + i, T0 + i)
    assert sorted(s.kind for s in got) == ["burst", "escalation", "escalation"]
    assert signals.chart("summit", T0) is not None
