"""The dedupe stage against a real SQLite store: ids, canonical links, changed entries."""

from __future__ import annotations

import pytest

from monitor.adapters.store import Store
from monitor.dedupe import Candidate, Verdict, admit
from monitor.delivery.records import alert_record, build_alert
from monitor.errors import StoreError
from monitor.model import Article, Match, Rule

SUMMIT = Rule(id="summit", query="summit", topic="alerts.summit")
SANCTIONS = Rule(id="sanctions", query="sanctions", topic="alerts.sanctions")


def _admit(store: Store, article: Article, *rules: Rule):
    matches = [Match(rule, ()) for rule in rules]
    return admit(
        store,
        [Candidate(article, matches)],
        lambda m, a: build_alert(m, a, ruleset_version="v1"),
        alert_record,
    )


def _article(**kwargs) -> Article:
    base = dict(id="guid-1", feed_url="https://a.example/rss", title="t", body="summit", url="https://a.example/story")
    base.update(kwargs)
    return Article(**base)


def test_new_article_is_recorded_with_its_alerts_in_the_outbox(tmp_path):
    store = Store(tmp_path)
    result = _admit(store, _article(), SUMMIT, SANCTIONS)
    assert result.verdicts == [Verdict.NEW]
    assert [a.rule_id for a in result.alerts] == ["summit", "sanctions"]
    assert {r.alert_id for r in store.pending()} == {a.alert_id for a in result.alerts}
    seen = store.find_article("guid-1", None)
    assert seen is not None and seen.state == "pending" and seen.rules == {"summit", "sanctions"}


def test_ack_of_last_alert_marks_article_published(tmp_path):
    store = Store(tmp_path)
    result = _admit(store, _article(), SUMMIT, SANCTIONS)
    first, second = result.records
    store.ack(first.alert_id, first.topic, first.article_id)
    assert store.find_article("guid-1", None).state == "pending"
    store.ack(second.alert_id, second.topic, second.article_id)
    assert store.find_article("guid-1", None).state == "published"
    assert store.pending() == []


def test_same_link_under_another_guid_is_the_same_article(tmp_path):
    store = Store(tmp_path)
    _admit(store, _article(), SUMMIT)
    again = _admit(store, _article(id="tag:other-feed:9", feed_url="https://b.example/atom"), SUMMIT)
    assert again.verdicts == [Verdict.DUPLICATE]
    assert again.alerts == []


def test_same_guid_with_changed_link_is_not_realerted(tmp_path):
    store = Store(tmp_path)
    _admit(store, _article(), SUMMIT)
    again = _admit(store, _article(url="https://a.example/renamed"), SUMMIT)
    assert again.alerts == []


def test_updated_entry_alerts_only_for_newly_matching_rules(tmp_path):
    store = Store(tmp_path)
    _admit(store, _article(), SUMMIT)
    updated = _admit(store, _article(body="summit and new sanctions"), SUMMIT, SANCTIONS)
    assert updated.verdicts == [Verdict.UPDATED]
    assert [a.rule_id for a in updated.alerts] == ["sanctions"]
    # The alert id keeps to the first id the story was known by.
    assert updated.alerts[0].article_id == "guid-1"


def test_alert_ids_are_deterministic_across_stores(tmp_path):
    one = _admit(Store(tmp_path / "a"), _article(), SUMMIT)
    two = _admit(Store(tmp_path / "b"), _article(), SUMMIT)
    assert one.alerts[0].alert_id == two.alerts[0].alert_id


def test_store_survives_reopen(tmp_path):
    store = Store(tmp_path)
    _admit(store, _article(), SUMMIT)
    store.close()
    reopened = Store(tmp_path)
    assert len(reopened.pending()) == 1
    assert reopened.find_article("guid-1", None) is not None


def test_an_article_whose_alert_cannot_be_built_is_left_out_and_the_others_admitted(tmp_path):
    """A bug met on one article costs that article only: nothing of it is written (a
    restart would otherwise find half of it), the articles around it are admitted. A
    fault of the system (the store) is no article's: it is raised, as before."""
    store = Store(tmp_path)
    articles = [_article(id=f"guid-{n}", url=f"https://a.example/{n}") for n in range(3)]

    def make_alert(match: Match, article: Article):
        if article.id == "guid-1":
            raise ValueError("injected bug")
        return build_alert(match, article, ruleset_version="v1")

    result = admit(store, [Candidate(a, [Match(SUMMIT, ())]) for a in articles], make_alert, alert_record)
    assert result.verdicts == [Verdict.NEW, Verdict.NEW]
    assert [(f.article.id, f.step, str(f.error)) for f in result.failed] == [("guid-1", "alert", "injected bug")]
    assert store.find_article("guid-1", None) is None
    assert {r.article_id for r in store.pending()} == {"guid-0", "guid-2"}

    def store_fails(match: Match, article: Article):
        raise StoreError("state.db: disk I/O error", kind="unavailable")

    with pytest.raises(StoreError):
        admit(store, [Candidate(_article(id="guid-3", url="https://a.example/3"), [Match(SUMMIT, ())])], store_fails, alert_record)
