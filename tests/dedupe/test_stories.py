"""Story clusters: one wire story republished by several outlets under different URLs.

The daemon runs against local feed servers and the real broker. Outlets carry the same
agency text with their own headline, link, guid and boilerplate; the monitor must alert
once per rule for the story, name the story in the alert, count the later copies, keep
recognising them after a restart within ``[stories] window_hours``, and treat a copy
that arrives after the window as news again. A different story on the same topic is a
different story.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import unicodedata
from collections import Counter
from dataclasses import replace
from xml.sax.saxutils import escape

import pytest

from monitor.adapters.store import Store
from monitor.dedupe import Candidate, admit
from monitor.dedupe.stories import StoryIndex, _Shards, shingles
from monitor.delivery.records import alert_record, build_alert
from monitor.model import Article, Match, Rule
from monitor.worker import Monitor
from tests.support import DATA, REFERENCE_TOPICS, FeedServer, make_settings, read_alerts

STORIES = DATA / "stories"
WIRE = (STORIES / "wire-sanctions.txt").read_text().strip().split("\n")
OTHER = (STORIES / "other-sanctions.txt").read_text().strip().split("\n")

#: Each outlet's copy: its own headline and boilerplate; some trim or reorder paragraphs.
COPIES = {
    "daily": (
        "EU agrees 20th sanctions package targeting Russia's shadow fleet",
        [*WIRE, "Reporting by the Brussels bureau; editing by the world desk."],
    ),
    "courier": (
        "EU adopts new Russia sanctions aimed at oil tankers and banks",
        ["(Adds Kremlin comment, analyst reaction)", *WIRE[:-1], "Read more: Europe's energy crisis explained.", "Sign up for our newsletter."],
    ),
    "herald": (
        "Brussels tightens the screws on Moscow's oil trade",
        WIRE[:3] + WIRE[4:] + ["This story has been updated with the Kremlin's reaction."],
    ),
}


def _rss(outlet: str, items: list[tuple[str, str, list[str]]]) -> str:
    entries = "\n".join(
        f"<item><title>{escape(title)}</title><link>https://{outlet}.example/{slug}</link>"
        f"<guid isPermaLink=\"false\">urn:{outlet}:{slug}</guid>"
        f"<pubDate>Thu, 20 Nov 2025 12:00:00 +0000</pubDate>"
        f"<description>{escape(''.join(f'<p>{p}</p>' for p in paragraphs))}</description></item>"
        for slug, title, paragraphs in items
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>{outlet}</title><link>https://{outlet}.example/</link>{entries}</channel></rss>"
    )


def _serve_copy(server: FeedServer, outlet: str, slug: str = "eu-sanctions") -> str:
    title, paragraphs = COPIES[outlet]
    return server.serve(f"/{outlet}.rss", _rss(outlet, [(f"{slug}-{outlet}", title, paragraphs)]))


async def _alerts(broker, feeds: list[str], expect: int | None = None) -> list[dict]:
    return await read_alerts(broker.bootstrap_servers, feeds, REFERENCE_TOPICS, expect=expect)


def _per_rule(alerts: list[dict]) -> Counter[str]:
    return Counter(a["rule_id"] for a in alerts)


# -- the daemon against the real broker ------------------------------------------------------


@pytest.mark.integration
async def test_one_wire_story_from_two_feeds_alerts_once_and_names_the_story(broker, feed_server, tmp_path):
    daily = _serve_copy(feed_server, "daily")
    courier = _serve_copy(feed_server, "courier")
    settings = make_settings(tmp_path, broker.bootstrap_servers, [daily, courier])

    summary = await Monitor(settings).run(once=True, handle_signals=False)

    assert summary.new_articles == 2 and not summary.failed
    alerts = await _alerts(broker, [daily, courier], expect=1)
    assert alerts and set(_per_rule(alerts).values()) == {1}, f"one alert per rule: {_per_rule(alerts)}"
    assert "sanctions" in _per_rule(alerts)
    story_ids = {a["story_id"] for a in alerts}
    assert len(story_ids) == 1 and None not in story_ids
    (story_id,) = story_ids

    store = Store(settings.state_dir)
    try:
        story = store.story(story_id)
        assert story is not None and story["copies"] == 1, story
        assert "sanctions" in story["rules"]
        # Both copies are remembered as members of the one story.
        members = {article_id: sid for article_id, sid, _at, _sig in store.story_members_since(0)}
        assert sorted(members) == ["urn:courier:eu-sanctions-courier", "urn:daily:eu-sanctions-daily"]
        assert set(members.values()) == {story_id}
    finally:
        store.close()


@pytest.mark.integration
async def test_a_different_story_on_the_same_topic_alerts_separately(broker, feed_server, tmp_path):
    daily = _serve_copy(feed_server, "daily")
    other = feed_server.serve(
        "/wire2.rss", _rss("wire2", [("us-sanctions-drones", "US sanctions Iranian drone parts network", OTHER)])
    )
    settings = make_settings(tmp_path, broker.bootstrap_servers, [daily, other])

    await Monitor(settings).run(once=True, handle_signals=False)

    alerts = await _alerts(broker, [daily, other], expect=2)
    sanctions = [a for a in alerts if a["rule_id"] == "sanctions"]
    assert len(sanctions) == 2
    assert len({a["story_id"] for a in sanctions}) == 2
    assert {a["article"]["feed_url"] for a in sanctions} == {daily, other}


@pytest.mark.integration
async def test_copies_are_recognised_after_a_restart_and_counted(broker, feed_server, tmp_path):
    daily = _serve_copy(feed_server, "daily")
    courier = _serve_copy(feed_server, "courier")
    herald = _serve_copy(feed_server, "herald")

    first = await Monitor(make_settings(tmp_path, broker.bootstrap_servers, [daily])).run(once=True, handle_signals=False)
    assert first.alerts_by_topic["alerts.sanctions"] == 1
    # A new process on the same state dir: the story window is reloaded from the store.
    second = await Monitor(make_settings(tmp_path, broker.bootstrap_servers, [daily, courier, herald])).run(
        once=True, handle_signals=False
    )

    # The daily feed's bytes are unchanged, so it is not even parsed again.
    assert second.new_articles == 2
    assert sum(second.alerts_by_topic.values()) == 0
    alerts = await _alerts(broker, [daily, courier, herald])
    assert set(_per_rule(alerts).values()) == {1}
    assert {a["article"]["feed_url"] for a in alerts} == {daily}
    store = Store(tmp_path / "state")
    try:
        story = store.story(alerts[0]["story_id"])
        assert story is not None and story["copies"] == 2
    finally:
        store.close()


@pytest.mark.integration
async def test_a_copy_after_the_story_window_alerts_again(broker, feed_server, tmp_path):
    daily = _serve_copy(feed_server, "daily")
    courier = _serve_copy(feed_server, "courier")
    window = 1.0
    settings = make_settings(
        tmp_path, broker.bootstrap_servers, [daily], overrides={"stories": {"window_hours": window / 3600}}
    )
    started = time.time()
    await Monitor(settings).run(once=True, handle_signals=False)
    # The window is wall-clock time: let it pass (there is no event to wait for).
    await asyncio.sleep(max(0.0, started + window + 0.2 - time.time()))
    later = make_settings(
        tmp_path, broker.bootstrap_servers, [daily, courier], overrides={"stories": {"window_hours": window / 3600}}
    )

    summary = await Monitor(later).run(once=True, handle_signals=False)

    assert summary.alerts_by_topic["alerts.sanctions"] == 1
    alerts = [a for a in await _alerts(broker, [daily, courier], expect=2) if a["rule_id"] == "sanctions"]
    assert len(alerts) == 2
    assert len({a["story_id"] for a in alerts}) == 2


# -- the story index and the store, directly -------------------------------------------------


def _article(outlet: str, title: str, paragraphs: list[str]) -> Article:
    return Article(id=f"urn:{outlet}:1", feed_url=f"https://{outlet}.example/rss", title=title, summary=" ".join(paragraphs))


def test_copies_are_similar_and_the_other_story_is_not():
    index = StoryIndex(threshold=0.5, window=3600.0)
    first = index.assign(_article("daily", *COPIES["daily"]), now=1000.0)
    assert first is not None and not first.copy
    for outlet in ("courier", "herald"):
        copy = index.assign(_article(outlet, *COPIES[outlet]), now=1001.0)
        assert copy is not None and copy.copy and copy.story_id == first.story_id
        assert copy.similarity >= 0.5
    other = index.assign(_article("wire2", "US sanctions Iranian drone parts network", OTHER), now=1002.0)
    assert other is not None and not other.copy and other.story_id != first.story_id


def test_the_window_is_measured_from_the_earlier_copy():
    index = StoryIndex(threshold=0.5, window=3600.0)
    first = index.assign(_article("daily", *COPIES["daily"]), now=0.0)
    inside = index.assign(_article("courier", *COPIES["courier"]), now=3599.0)
    assert inside.copy and inside.story_id == first.story_id
    # The courier copy (seen at 3599) keeps the story findable after the first copy expires.
    late = index.assign(_article("herald", *COPIES["herald"]), now=3600.0 + 3599.0)
    assert late.copy and late.story_id == first.story_id
    alone = StoryIndex(threshold=0.5, window=3600.0)
    alone.assign(_article("daily", *COPIES["daily"]), now=0.0)
    after = alone.assign(_article("herald", *COPIES["herald"]), now=3601.0)
    assert not after.copy


def test_a_headline_alone_is_not_clustered():
    index = StoryIndex()
    assert index.assign(Article(id="a", feed_url="f", title="EU agrees new sanctions on Russia"), now=0.0) is None


# A flood in Bihar, and a different flood story (Assam): Hindi, whose vowel signs and nukta
# are combining marks.
HINDI_FLOOD = (
    "बिहार में बाढ़ से बड़ी तबाही: कोसी नदी का पानी बढ़ने से बीस ज़िलों के गांवों में पानी घुस गया और सड़कें टूट गईं। "
    "राज्य सरकार ने बताया कि बाढ़ से ज़्यादा प्रभावित इलाक़ों में सेना की मदद ली जा रही है और लोगों को ऊंची जगहों पर ले जाया जा रहा है। "
    "मुख्यमंत्री ने बाढ़ पीड़ितों के लिए राहत शिविर खोलने का फ़ैसला किया है।"
)
HINDI_OTHER = (
    "असम में भारी बारिश के बाद ब्रह्मपुत्र नदी ख़तरे के निशान से ऊपर बह रही है और गुवाहाटी के कई मोहल्लों में पानी भर गया है। "
    "मौसम विभाग ने अगले तीन दिन और बारिश की चेतावनी दी है, जिससे हालात और बिगड़ सकते हैं। प्रशासन ने स्कूल बंद कर दिए हैं।"
)


def _precomposed(text: str) -> str:
    """``text`` with its nukta letters as the single characters U+0958-U+095F (ड़ as U+095C),
    as some keyboards and sites write them; NFC writes each as the letter and the nukta mark."""
    for letter in map(chr, range(0x958, 0x960)):
        text = text.replace(unicodedata.normalize("NFC", letter), letter)
    return text


def test_hindi_words_are_whole_words_as_the_rule_engine_reads_them():
    # The vowel signs are marks: \w+ cut भारतीय into भ, रत, य.
    assert shingles("भारतीय संसद में आज बहस हुई", 4) == {
        "भारतीय संसद में आज".encode(), "संसद में आज बहस".encode(), "में आज बहस हुई".encode()
    }


def test_two_copies_of_a_hindi_story_are_one_story_and_another_story_is_not():
    # One outlet writes the nukta letters precomposed, the other (with its dateline, and the
    # last sentence cut) as NFC does, the letter and then the mark: the words cut at the
    # mark made the copies 0.36 alike, now 0.78.
    index = StoryIndex(threshold=0.5, window=3600.0)
    first = index.assign(Article(id="urn:a:1", feed_url="https://a.example/rss", summary=_precomposed(HINDI_FLOOD)), now=0.0)
    trimmed = unicodedata.normalize("NFC", "पटना: " + HINDI_FLOOD.rsplit("।", 2)[0] + "।")
    copy = index.assign(Article(id="urn:b:1", feed_url="https://b.example/rss", summary=trimmed), now=1.0)
    assert first is not None and copy is not None
    assert copy.copy and copy.story_id == first.story_id
    other = index.assign(Article(id="urn:c:1", feed_url="https://c.example/rss", summary=HINDI_OTHER), now=2.0)
    assert other is not None and not other.copy and other.story_id != first.story_id


def test_a_hindi_headline_alone_is_not_clustered():
    # Eight words: cut at their vowel signs they were 19 fragments, 16 shingles, and clustered.
    index = StoryIndex()
    assert index.assign(Article(id="a", feed_url="f", title="भारत और पाकिस्तान के विदेश मंत्रियों की बैठक"), now=0.0) is None


CHINESE = (
    "新华社莫斯科5月8日电 国家主席习近平8日在莫斯科克里姆林宫同俄罗斯总统普京举行会谈。"
    "两国元首一致同意，进一步深化新时代全面战略协作伙伴关系，扩大能源、农业和人工智能领域合作。"
    "会谈后，两国元首签署并发表联合声明。"
)
CHINESE_OTHER = (
    "新华社阿斯塔纳6月17日电 第二届中国—中亚峰会17日在哈萨克斯坦首都阿斯塔纳举行。习近平同中亚五国元首共同签署"
    "《永久睦邻友好合作条约》，并宣布2025年和2026年为“中国—中亚合作高质量发展年”。"
)


def test_two_copies_of_a_chinese_story_are_one_story_and_another_story_is_not():
    # Each character is a word, as for rules: \w+ took a clause for a word, so few Chinese
    # texts had the 8 shingles to be clustered at all (1 of the 29 passages of tests/data).
    index = StoryIndex(threshold=0.5, window=3600.0)
    first = index.assign(Article(id="urn:a:1", feed_url="https://a.example/rss", summary=CHINESE), now=0.0)
    trimmed = "【环球网】" + CHINESE.rsplit("会谈后", 1)[0]
    copy = index.assign(Article(id="urn:b:1", feed_url="https://b.example/rss", summary=trimmed), now=1.0)
    assert first is not None and copy is not None
    assert copy.copy and copy.story_id == first.story_id
    other = index.assign(Article(id="urn:c:1", feed_url="https://c.example/rss", summary=CHINESE_OTHER), now=2.0)
    assert other is not None and not other.copy and other.story_id != first.story_id


def test_story_rules_are_recorded_in_the_articles_own_transaction(tmp_path):
    """If the article's row or its alerts cannot be written, the story must not record the
    rule as alerted: otherwise every later copy would be silenced for an alert never sent."""
    store = Store(tmp_path)
    rule = Rule(id="sanctions", query="sanctions", topic="alerts.sanctions")
    article = _article("daily", *COPIES["daily"])

    candidate = Candidate(article, [Match(rule, ())], story_id="story-x", story_copy=False)

    def unserialisable(alert):
        raise ValueError("cannot serialise the alert")

    # Admission fails between deciding on the alert and writing it (a bug met on the
    # article, left out): nothing of it may be left, the story's rule record included.
    failed = admit(store, [candidate], lambda m, a: build_alert(m, a, ruleset_version="v1"), unserialisable)
    assert failed.verdicts == [] and [f.step for f in failed.failed] == ["alert"]
    assert store.story_rules("story-x") is None
    assert store.find_article(article.id, None) is None and store.pending() == []
    # The articles table refusing the row (feed_url NOT NULL) is the same: nothing noted.
    broken = Candidate(replace(article, feed_url=None), [], story_id="story-x")  # type: ignore[arg-type]
    with pytest.raises(sqlite3.IntegrityError, match="NOT NULL"):
        admit(store, [broken], lambda m, a: build_alert(m, a, ruleset_version="v1"), alert_record)
    assert store.story("story-x") is None

    admission = admit(store, [candidate], lambda m, a: build_alert(m, a, ruleset_version="v1"), alert_record)
    assert [a.story_id for a in admission.alerts] == ["story-x"]
    assert store.story_rules("story-x") == {"sanctions"}
    copy = Candidate(_article("courier", *COPIES["courier"]), [Match(rule, ())], story_id="story-x", story_copy=True)
    again = admit(store, [copy], lambda m, a: build_alert(m, a, ruleset_version="v1"), alert_record)
    assert again.alerts == [] and again.story_copies == 1
    assert store.story("story-x")["copies"] == 1


# -- cost bounds: signatures made elsewhere, a burst of one wire text, the garbage collector ----


def _wire_copy(n: int) -> Article:
    """The daily's copy of the wire story as outlet ``n`` republished it (its own sign-off)."""
    title, paragraphs = COPIES["daily"]
    return _article(f"outlet{n}", title, [*paragraphs, f"Published by outlet number {n}."])


def test_a_signature_made_in_a_worker_process_places_the_article_like_one_made_here():
    from concurrent.futures import ProcessPoolExecutor

    from monitor.dedupe.stories import story_text

    here = StoryIndex(threshold=0.5, window=3600.0)
    there = StoryIndex(threshold=0.5, window=3600.0)
    articles = [_article(outlet, *COPIES[outlet]) for outlet in ("daily", "courier", "herald")]
    articles.append(_article("wire2", "US sanctions Iranian drone parts network", OTHER))
    articles.append(Article(id="short", feed_url="f", title="EU agrees new sanctions"))
    with ProcessPoolExecutor(max_workers=1) as pool:
        signatures = pool.submit(there.signer, [story_text(a) for a in articles]).result()

    assert signatures[-1] is None  # a headline alone is too short, there as here
    for article, signature in zip(articles, signatures):
        local, remote = here.assign(article, now=1000.0), there.assign(article, now=1000.0, signature=signature)
        assert (local is None) == (remote is None)
        if local is not None:
            assert (remote.story_id, remote.copy, remote.signature) == (local.story_id, local.copy, local.signature)


def test_a_burst_of_one_wire_text_is_one_story_at_linear_cost():
    from monitor.dedupe.stories import INDEXED_PER_STORY

    index = StoryIndex(threshold=0.5, window=3600.0)
    placed = [index.assign(_wire_copy(n), now=1000.0 + n) for n in range(400)]

    assert len({p.story_id for p in placed}) == 1
    assert sum(p.copy for p in placed) == 399
    # Only the first copies are indexed, so each later copy is compared with a handful of
    # earlier ones, not with all of them.
    assert len(index._lsh.query(index._values_of[index._serial_of["urn:outlet399:1"]])) == INDEXED_PER_STORY


def test_a_story_stays_findable_when_its_indexed_copies_expire():
    from monitor.dedupe.stories import INDEXED_PER_STORY

    index = StoryIndex(threshold=0.5, window=3600.0)
    # The first copies at t=0 (indexed), the rest later (not indexed while those live).
    first = [index.assign(_wire_copy(n), now=0.0) for n in range(INDEXED_PER_STORY)]
    later = [index.assign(_wire_copy(n), now=3000.0) for n in range(INDEXED_PER_STORY, INDEXED_PER_STORY + 5)]
    assert {p.story_id for p in first + later} == {first[0].story_id}

    # At t=4000 every indexed copy has expired; the later ones, still in the window, take over.
    copy = index.assign(_wire_copy(99), now=4000.0)
    assert copy.copy and copy.story_id == first[0].story_id
    assert len(index) == 5 + 1


def test_the_story_window_adds_no_objects_for_the_garbage_collector_to_walk():
    """A day's window holds ~100,000 articles; containers per article made every full
    collection walk millions of objects and stall the event loop for hundreds of ms."""
    import gc
    import random

    rng = random.Random(7)
    words = [f"word{n}" for n in range(5000)]
    index = StoryIndex(threshold=0.5, window=86400.0)
    gc.collect()
    before = len(gc.get_objects())
    for n in range(2000):
        text = " ".join(rng.choice(words) for _ in range(80))
        index.assign(Article(id=f"a{n}", feed_url="f", body=text), now=float(n))
    gc.collect()
    assert len(index) == 2000
    assert len(gc.get_objects()) - before < 200, "the index keeps GC-tracked containers per article"


def test_the_index_is_invisible_to_the_garbage_collector():
    """A day's window holds ~100,000 articles. A container the cyclic GC tracks is walked
    reference by reference on every full collection (50-130 ms stalls of the event loop
    with dicts of tuples), so the index keeps none: this fails if one creeps back in."""
    import gc

    from monitor.dedupe.stories import INDEXED_PER_STORY

    index = StoryIndex(threshold=0.5, window=3600.0)
    for n in range(INDEXED_PER_STORY + 20):
        index.assign(_wire_copy(n), now=1000.0 + n)
    for n in range(30):
        index.assign(_article(f"other{n}", f"Story {n}", [" ".join(f"word{n}x{k}" for k in range(40))]), now=1100.0 + n)
    index.expire(1000.0 + 3600.0 + 5)  # expiry and promotion touch every structure

    assert len(index) > 30
    big = {name: value for name, value in vars(index).items() if isinstance(value, _Shards)}
    assert {"_serial_of", "_article_of", "_story_of", "_values_of", "_added_at", "_in_index", "_indexed"} <= set(big)
    big["band table"] = index._lsh._table
    tracked = [name for name, sharded in big.items() if any(gc.is_tracked(shard) for shard in sharded.shards)]
    assert tracked == []
    # Every member is in each per-member map exactly once.
    assert sum(len(shard) for shard in index._story_of.shards) == len(index)


def test_the_index_maps_grow_in_small_steps():
    """Each per-member map is split into many dicts, so none of them rebuilds a table of
    the whole window in one step (one insert made ~20 dicts double: 680 ms stalls)."""
    from monitor.dedupe.stories import _SHARDS

    sharded = _Shards()
    for serial in range(20_000):
        sharded[serial] = float(serial)
    assert len(sharded) == 20_000
    assert max(len(shard) for shard in sharded.shards) <= 2 * 20_000 // _SHARDS
    assert sharded[12_345] == 12_345.0 and 12_345 in sharded and sharded.get(-1) is None
    del sharded[12_345]
    assert 12_345 not in sharded and sharded.pop(12_346) == 12_346.0 and len(sharded) == 19_998
