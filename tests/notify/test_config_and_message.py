"""The pure part of ``news-monitor notify``: schedules, quiet hours, rate limits, filters,
records (alerts and signals) and templates."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import orjson
import pytest

from monitor.errors import ConfigError
from monitor.notify.config import destination_from_table
from monitor.notify.items import decode_item
from monitor.notify.message import Renderer, Template, TemplateError
from monitor.notify.schedule import Policy, parse_digest, parse_duration, parse_quiet_hours, parse_rate_limit
from tests.notify.support import alert_value

UTC = ZoneInfo("UTC")
BERLIN = ZoneInfo("Europe/Berlin")


def at(zone: ZoneInfo, *parts: int) -> float:
    return datetime(*parts, tzinfo=zone).timestamp()  # type: ignore[misc]


def test_digest_periods_are_aligned_to_local_midnight_and_cut_at_the_next_one():
    quarter = parse_digest("15m", UTC)
    assert quarter is not None
    assert quarter.next_boundary(at(UTC, 2026, 12, 1, 10, 3)) == at(UTC, 2026, 12, 1, 10, 15)
    assert quarter.next_boundary(at(UTC, 2026, 12, 1, 10, 15)) == at(UTC, 2026, 12, 1, 10, 30), "strictly after"
    seven = parse_digest("7h", UTC)
    assert seven is not None and seven.next_boundary(at(UTC, 2026, 12, 1, 22, 0)) == at(UTC, 2026, 12, 2, 0, 0)
    hourly = parse_digest("1h", ZoneInfo("Asia/Kolkata"))  # UTC+05:30: local hours, not UTC hours
    assert hourly is not None and hourly.next_boundary(at(UTC, 2026, 12, 1, 10, 10)) == at(UTC, 2026, 12, 1, 10, 30)


def test_daily_digests_follow_the_wall_clock_across_daylight_saving_changes():
    daily = parse_digest("daily@08:00,17:30", BERLIN)
    assert daily is not None
    assert daily.next_boundary(at(BERLIN, 2026, 3, 28, 9, 0)) == at(BERLIN, 2026, 3, 28, 17, 30)
    # The night the clocks go forward (29 March 2026): still 08:00 local, 23 hours after 09:00 UTC+1.
    assert daily.next_boundary(at(BERLIN, 2026, 3, 28, 18, 0)) == at(BERLIN, 2026, 3, 29, 8, 0)
    assert at(BERLIN, 2026, 3, 29, 8, 0) - at(BERLIN, 2026, 3, 28, 8, 0) == 23 * 3600


@pytest.mark.parametrize("text", ["every 15m", "0m", "25h", "daily@8", "daily@24:00", "15", "1w"])
def test_malformed_digests_are_refused(text):
    with pytest.raises(ValueError, match=r"digest|time of day|1s to 24h"):
        parse_digest(text, UTC)


def test_quiet_hours_cross_midnight_and_end_at_their_local_end():
    quiet = parse_quiet_hours("22:00-07:00", BERLIN)
    assert quiet is not None
    assert quiet.contains(at(BERLIN, 2026, 12, 1, 23, 0)) and quiet.contains(at(BERLIN, 2026, 12, 2, 6, 59))
    assert not quiet.contains(at(BERLIN, 2026, 12, 2, 7, 0)) and not quiet.contains(at(BERLIN, 2026, 12, 1, 21, 59))
    assert quiet.end_after(at(BERLIN, 2026, 12, 1, 23, 0)) == at(BERLIN, 2026, 12, 2, 7, 0)
    assert quiet.end_after(at(BERLIN, 2026, 12, 2, 1, 0)) == at(BERLIN, 2026, 12, 2, 7, 0)
    lunch = parse_quiet_hours("12:00-13:00", UTC)
    assert lunch is not None and lunch.contains(at(UTC, 2026, 12, 1, 12, 30)) and not lunch.contains(at(UTC, 2026, 12, 1, 13, 0))
    with pytest.raises(ValueError):
        parse_quiet_hours("22:00", UTC)


def test_the_rate_limit_is_a_sliding_window_and_held_alerts_wait_for_it_and_for_quiet_hours():
    assert parse_rate_limit("10/h") == parse_rate_limit("10/1h")
    assert parse_duration("90s") == 90
    policy = Policy(rate=parse_rate_limit("2/1h"), quiet=parse_quiet_hours("22:00-07:00", UTC))
    t = at(UTC, 2026, 12, 1, 20, 0)
    assert not policy.holds(t)
    policy.record_sent(t)
    policy.record_sent(t + 60)
    assert policy.holds(t + 120), "the third message in the hour waits"
    assert policy.rate_free_at(t + 120) == t + 3600
    assert policy.digest_due(t + 120, t + 120) == t + 3600
    assert not policy.holds(t + 3600)
    # A digest due in quiet hours goes out when they end.
    assert policy.digest_due(at(UTC, 2026, 12, 1, 23, 0), at(UTC, 2026, 12, 1, 23, 0)) == at(UTC, 2026, 12, 2, 7, 0)
    restored = Policy(rate=parse_rate_limit("2/1h"))
    restored.restore([t, t + 60])
    assert restored.holds(t + 120), "a restart keeps the window"


def _table(**keys):
    return {"name": "desk", "url": "json://hooks.example.org/x", **keys}


def test_filters_by_rule_glob_severity_tags_and_kind():
    dest = destination_from_table(
        _table(rules=["sanc*", "summit"], min_severity="medium", tags=["geopolitics"]), 0, where="m.toml", environ={}
    )

    def item(**kw):
        _key, value, headers = alert_value(1, **kw)
        decoded, _ = decode_item("alerts.x", value, headers)
        assert decoded is not None
        return decoded

    assert dest.filter.accepts(item(rule="sanctions", severity="high"))
    assert not dest.filter.accepts(item(rule="sanctions", severity="low"))
    assert not dest.filter.accepts(item(rule="arms-control", severity="critical"))
    signal = _signal()
    assert not dest.filter.accepts(signal), "signals only when kinds says so"
    both = destination_from_table(_table(kinds=["alerts", "signals"], min_severity="high"), 0, where="m.toml", environ={})
    assert both.filter.accepts(signal), "a signal without severity or tags passes those filters"


def _signal(**extra):
    document = {"schema_version": 1, "signal_id": "sig-1", "kind": "burst", "rule_id": "summit",
                "detected_at": "2026-12-01T08:00:00Z", "window": "15m", "count": 12, **extra}  # fmt: skip
    item, problem = decode_item("alerts.summit.signals", orjson.dumps(document), [("ce_type", b"news.signal.burst.v1")])
    assert item is not None, problem
    return item


def test_records_are_alerts_or_signals_by_ce_type_or_topic_suffix_and_the_rest_is_explained():
    assert _signal().kind == "signals" and _signal().key == "signal:sig-1"
    no_header, _ = decode_item("alerts.summit.signals", orjson.dumps({"schema_version": 1, "signal_id": "s", "kind": "spike",
                               "rule_id": "summit", "detected_at": "x"}), [])  # fmt: skip
    assert no_header is not None and no_header.kind == "signals"
    cases = {
        b"": "empty value",
        b"{nope": "not JSON",
        orjson.dumps({"schema_version": 1}): "no alert_id",
    }
    for value, reason in cases.items():
        item, problem = decode_item("alerts.x", value, [])
        assert item is None and problem.startswith(reason), problem
    _key, value, _headers = alert_value(1)
    item, problem = decode_item("alerts.x", value, [("ce_type", b"news.alert.v2")])
    assert item is None and "news.alert.v1" in problem
    item, problem = decode_item(
        "alerts.x.signals", b'{"schema_version": 1, "kind": "burst"}', [("ce_type", b"news.signal.burst.v1")]
    )
    assert item is None and problem == "no signal_id: not a signal"
    signal = {"schema_version": 1, "signal_id": "s", "kind": "burst", "rule_id": "r", "detected_at": "x"}
    item, problem = decode_item("alerts.x.signals", orjson.dumps(signal), [("ce_type", b"news.signal.burst.v2")])
    assert item is None and problem.startswith("ce_type") and "version 1" in problem
    item, problem = decode_item("alerts.x.signals", orjson.dumps(signal | {"schema_version": 2}), [])
    assert item is None and problem.startswith("schema_version 2 is not supported")


def test_templates_accept_only_known_plain_fields():
    assert Template.parse("{rule}: {title} {{literal}}").fields == ("rule", "title")
    for source, message in (("{headline}", "unknown field {headline}"), ("{title!r}", "only plain"), ("{title", "braces"),
                            ("{title.upper}", "unknown field")):  # fmt: skip
        with pytest.raises(TemplateError, match=message):
            Template.parse(source)
    with pytest.raises(
        ConfigError, match=r"m\.toml: \[\[notify.destination\]\] #1 \(desk\): title template: unknown field \{titel\}"
    ):
        destination_from_table(_table(title="{titel}"), 0, where="m.toml", environ={})


def test_markdown_messages_escape_what_comes_from_feeds_and_text_ones_keep_it():
    _key, value, headers = alert_value(1, url="https://example.net/a(b)")
    item, _ = decode_item("alerts.x", value, headers)
    assert item is not None
    markdown, problem = Renderer(markdown=True).alert(item)
    assert problem is None
    assert "Snippet of story 1 \\<b\\>bold\\</b\\>" in markdown.body
    assert "[Read the article](https://example.net/a%28b%29-1)" in markdown.body
    text, _ = Renderer(markdown=False).alert(item)
    assert "Snippet of story 1 <b>bold</b>" in text.body and "https://example.net/a(b)-1" in text.body
    user = Renderer(title=Template.parse("{rule} [{title}]({link})"), markdown=True).alert(item)[0]
    assert user.title == "sanctions [Story 1 run](https://example.net/a%28b%29-1)"
    # A record whose link is not http(s) (none of the monitor's): no live link, the default message.
    hostile, _ = decode_item("alerts.x", value.replace(b"https://example.net/a(b)-1", b"javascript:alert(1)"), headers)
    assert hostile is not None
    message, problem = Renderer(body=Template.parse("[read]({link})"), markdown=True).alert(hostile)
    assert problem == "field {link} has no value" and "](javascript" not in message.body


def test_signals_get_a_generic_message_listing_their_fields():
    message, _ = Renderer(markdown=False).alert(_signal(severity="high", url="https://example.org/x"))
    assert message.title == "[burst] summit (high)"
    assert "window: 15m" in message.body and "count: 12" in message.body and "signal_id: sig-1" in message.body


def test_secrets_in_urls_come_from_the_environment_or_a_file_and_never_into_errors(tmp_path):
    dest = destination_from_table(
        _table(url="json://h/x?token=${HOOK_TOKEN}"), 0, where="m.toml", environ={"HOOK_TOKEN": "s3cr3t"}
    )
    assert dest.url == "json://h/x?token=s3cr3t" and "s3cr3t" not in repr(dest)
    secret = tmp_path / "url"
    secret.write_text("slack://a/b/c\n")
    table = {"name": "desk", "url_file": "url"}
    assert destination_from_table(table, 0, where="m.toml", environ={}, resolve=lambda p: tmp_path / p).url == "slack://a/b/c"
    with pytest.raises(ConfigError, match=r"url_file .* cannot be read") as raised:
        destination_from_table({"name": "desk", "url_file": str(tmp_path / "missing")}, 0, where="m.toml", environ={})
    assert "slack" not in str(raised.value)
    with pytest.raises(ConfigError, match="has both url and url_file"):
        destination_from_table({**table, "url": "json://x"}, 0, where="m.toml", environ={})


@pytest.mark.parametrize("zone", ["Europe", "x" * 300, "Mars/Olympus_Mons"])
def test_a_time_zone_that_does_not_exist_is_an_error_naming_the_table_and_key(zone):
    with pytest.raises(ConfigError, match=r"#1 \(desk\): timezone '.*' is not a time zone"):
        destination_from_table({"name": "desk", "url": "json://h/x", "timezone": zone}, 0, where="m.toml", environ={})


@pytest.mark.parametrize("text", ["10/", "\u00b2/h", "10 per hour"])
def test_malformed_rate_limits_say_what_a_rate_limit_is(text):
    with pytest.raises(ValueError, match="is not a rate limit: N/PERIOD"):
        parse_rate_limit(text)
