"""When feeds are polled: adaptive intervals within the operator's bounds, and the heap."""

from __future__ import annotations

import random

import pytest

from monitor.feeds.schedule import MAX_RETRY_AFTER, PollOutcome, Schedule, next_interval, publish_gap

HOUR = 3600.0


def interval(configured: float, outcome: PollOutcome, *, low: float | None = None, high: float = HOUR) -> float:
    return next_interval(configured, outcome, min_interval=configured if low is None else low, max_interval=high)


class TestActivity:
    def test_publishing_feed_is_never_polled_less_often_than_configured(self):
        # Its items' dates say "every two hours", but it just published: stay on 5 minutes.
        outcome = PollOutcome(ok=True, new_items=3, publish_gap=2 * HOUR)
        assert interval(300, outcome) == 300

    def test_busy_feed_is_polled_faster_down_to_min_interval(self):
        outcome = PollOutcome(ok=True, new_items=5, publish_gap=40)
        assert interval(300, outcome, low=60) == 60
        assert interval(300, PollOutcome(ok=True, new_items=5, publish_gap=120), low=60) == 120

    def test_configured_interval_below_min_interval_is_honoured_down_to_one_second(self):
        outcome = PollOutcome(ok=True, new_items=1)
        assert next_interval(1, outcome, min_interval=300, max_interval=HOUR) == 1
        assert next_interval(0.2, outcome, min_interval=300, max_interval=HOUR) == 1

    def test_quiet_feed_is_polled_less_often_up_to_max_interval(self):
        assert interval(300, PollOutcome(ok=True, since_new=1200)) == 1200
        assert interval(300, PollOutcome(ok=True, publish_gap=3 * 86400)) == HOUR

    def test_quiet_feed_is_never_polled_faster_than_configured(self):
        assert interval(300, PollOutcome(ok=True, since_new=10, publish_gap=30)) == 300

    def test_first_poll_uses_the_dates_of_the_items(self):
        # A month-old feed: no reason to come back in 5 minutes.
        gap = publish_gap([1000.0, 2000.0], now=40 * 86400)
        assert interval(300, PollOutcome(ok=True, publish_gap=gap)) == HOUR

    def test_not_modified_without_history_keeps_previous_interval(self):
        assert interval(300, PollOutcome(ok=True, previous=900)) == 900


class TestServerHints:
    def test_max_age_and_ttl_lengthen_within_max_interval(self):
        assert interval(300, PollOutcome(ok=True, new_items=1, max_age=1800)) == 1800
        assert interval(300, PollOutcome(ok=True, new_items=1, ttl=2 * HOUR)) == HOUR
        assert interval(300, PollOutcome(ok=True, new_items=1, max_age=10)) == 300

    def test_retry_after_is_honoured_beyond_max_interval(self):
        outcome = PollOutcome(ok=False, consecutive_errors=1, retry_after=2 * HOUR)
        assert interval(300, outcome) == 2 * HOUR

    def test_absurd_retry_after_is_capped(self):
        outcome = PollOutcome(ok=False, consecutive_errors=1, retry_after=10 * 365 * 86400)
        assert interval(300, outcome) == MAX_RETRY_AFTER

    @pytest.mark.parametrize(("errors", "expected"), [(1, 600), (2, 1200), (3, 2400), (4, HOUR), (40, HOUR)])
    def test_errors_back_off_exponentially_up_to_max_interval(self, errors, expected):
        assert interval(300, PollOutcome(ok=False, consecutive_errors=errors)) == expected


class TestPublishGap:
    def test_spacing_of_recent_items(self):
        now = 100 * 86400.0
        dates = [now - 600 * i for i in range(10)]
        assert publish_gap(dates, now) == pytest.approx(600)

    def test_stopped_feed_looks_quiet(self):
        now = 100 * 86400.0
        dates = [now - 86400 - 60 * i for i in range(10)]
        assert publish_gap(dates, now) == pytest.approx(86400 + 0, rel=0.01)

    def test_undated_and_future_items(self):
        assert publish_gap([None, None], 1000.0) is None
        now = 100 * 86400.0
        assert publish_gap([now + 86400, now - 100, now - 200], now) == pytest.approx(100)


class TestSchedule:
    def test_first_polls_of_ten_thousand_feeds_are_spread_not_bursted(self):
        schedule = Schedule(rng=random.Random(7))
        urls = [f"https://feeds.example/{i}" for i in range(10_000)]
        schedule.start(urls, now=0.0, window=60.0)
        times = sorted(schedule.due_at(u) for u in urls)
        assert times[0] == 0.0 and times[-1] < 60.0
        # No 100 ms window holds more than a few dozen first polls.
        busiest = max(sum(1 for t in times[i : i + 100] if t - times[i] < 0.1) for i in range(0, len(times), 50))
        assert busiest <= 30
        assert len(schedule.pop_due(60.0)) == 10_000

    def test_few_feeds_all_start_at_once(self):
        schedule = Schedule()
        schedule.start(["a", "b", "c"], now=5.0, window=300)
        # A handful of feeds start within milliseconds: "first poll at start-up".
        assert sorted(schedule.pop_due(5.02)) == ["a", "b", "c"]

    def test_reschedule_jitter_stays_within_bounds(self):
        schedule = Schedule(jitter=0.1, rng=random.Random(1))
        whens = [schedule.reschedule(f"f{i}", 0.0, 100.0) for i in range(1000)]
        assert min(whens) >= 90.0 and max(whens) <= 110.0
        assert max(whens) - min(whens) > 10.0, "jitter actually spreads feeds"

    def test_pop_due_is_ordered_and_lazy_removal_works(self):
        schedule = Schedule(jitter=0)
        schedule.set("late", 10.0)
        schedule.set("early", 1.0)
        schedule.set("gone", 2.0)
        schedule.remove("gone")
        schedule.set("early", 3.0)  # rescheduled: the old entry is stale
        assert schedule.pop_due(5.0) == ["early"]
        assert schedule.next_time() == 10.0
        assert schedule.pop_due(20.0, limit=5) == ["late"]
