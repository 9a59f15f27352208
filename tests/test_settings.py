"""Configuration: one TOML file, environment overrides, strict about unknown keys."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.errors import ConfigError
from monitor.feeds.sources import load_feeds
from monitor.settings import load_settings
from tests.support import ROOT


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "monitor.toml"
    path.write_text(text)
    return path


def test_shipped_config_uses_embedded_broker_and_sample_feeds():
    settings = load_settings(ROOT / "monitor.toml", environ={})
    assert settings.kafka.embedded
    assert settings.kafka.idempotence is False
    feeds = load_feeds(settings)
    assert sorted(Path(f.url).name for f in feeds) == ["world-news.atom.xml", "world-news.rss.xml"]
    assert all(Path(f.url).is_file() for f in feeds)


def test_required_keys_exist_under_documented_names(tmp_path):
    path = _write(
        tmp_path,
        '[kafka]\nbootstrap_servers = "k1:9092,k2:9092"\n[state]\ndir = "/var/lib/nm"\n'
        '[feeds]\nopml = "feeds.opml"\ninterval = 60\n[rules]\npaths = ["r1", "r2"]\n',
    )
    settings = load_settings(path, environ={})
    assert settings.kafka.bootstrap_servers == "k1:9092,k2:9092"
    assert settings.kafka.idempotence is True
    assert settings.state_dir == Path("/var/lib/nm")
    assert settings.resolve(settings.feeds.opml) == tmp_path / "feeds.opml"
    assert settings.feeds.interval == 60.0
    assert settings.rule_paths == [tmp_path / "r1", tmp_path / "r2"]


@pytest.mark.parametrize(
    ("variable", "value", "read"),
    [
        ("NEWS_MONITOR_KAFKA_BOOTSTRAP_SERVERS", "broker:9092", lambda s: s.kafka.bootstrap_servers == "broker:9092"),
        ("NEWS_MONITOR_STATE_DIR", "/tmp/x", lambda s: s.state.dir == "/tmp/x"),
        ("NEWS_MONITOR_FEEDS_INTERVAL", "42", lambda s: s.feeds.interval == 42.0),
        ("NEWS_MONITOR_FEEDS_OPML", "other.opml", lambda s: s.feeds.opml == "other.opml"),
        ("NEWS_MONITOR_RULES_PATHS", "a, b", lambda s: s.rules.paths == ("a", "b")),
        ("NEWS_MONITOR_RULES_WATCH", "false", lambda s: s.rules.watch is False),
    ],
)
def test_every_key_can_be_overridden_from_the_environment(tmp_path, variable, value, read):
    path = _write(tmp_path, '[kafka]\nbootstrap_servers = "file:9092"\n')
    assert read(load_settings(path, environ={variable: value}))


def test_unknown_section_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown section \[kafak\].*did you mean 'kafka'"):
        load_settings(_write(tmp_path, "[kafak]\nx = 1\n"), environ={})


def test_wrong_type_names_key_and_expectation(tmp_path):
    with pytest.raises(ConfigError, match=r"\[feeds\] interval must be a number"):
        load_settings(_write(tmp_path, '[feeds]\ninterval = "often"\n'), environ={})


def test_escalation_levels_a_story_can_reach_and_no_others(tmp_path):
    # A story keeps at most 1,000 outlets: a level above could never fire.
    assert load_settings(_write(tmp_path, "[signals]\nescalation = [2, 1000]\n"), environ={}).signals.escalation == (2, 1000)
    for levels in ("[1]", "[3, 1001]"):
        with pytest.raises(ConfigError, match=r"escalation levels must be from 2 to 1,000 outlets"):
            load_settings(_write(tmp_path, f"[signals]\nescalation = {levels}\n"), environ={})


def test_bad_environment_value_names_the_variable(tmp_path):
    with pytest.raises(ConfigError, match="NEWS_MONITOR_FEEDS_INTERVAL"):
        load_settings(_write(tmp_path, ""), environ={"NEWS_MONITOR_FEEDS_INTERVAL": "soon"})


def test_an_unknown_environment_variable_names_the_closest_and_its_section_only(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_settings(_write(tmp_path, ""), environ={"NEWS_MONITOR_FEEDS_INTERVALL": "5"})
    message = str(caught.value)
    assert "NEWS_MONITOR_FEEDS_INTERVALL matches no setting" in message and "did you mean 'NEWS_MONITOR_FEEDS_INTERVAL'" in message
    assert "NEWS_MONITOR_FEEDS_PER_HOST" in message and "NEWS_MONITOR_KAFKA_" not in message
    # The feed tables are file-only (README): their variable is never offered.
    assert "NEWS_MONITOR_FEEDS_FEED" not in message
    with pytest.raises(ConfigError, match=r"NEWS_MONITOR_<SECTION>_<KEY>, sections: cluster, delivery, feeds") as caught:
        load_settings(_write(tmp_path, ""), environ={"NEWS_MONITOR_NOSUCH_THING": "1"})
    assert "NEWS_MONITOR_FEEDS_" not in str(caught.value)


def test_feed_table_with_unknown_key_is_an_error(tmp_path):
    path = _write(tmp_path, '[[feeds.feed]]\nurl = "https://example.org/rss"\nintervl = 5\n')
    with pytest.raises(ConfigError, match=r"\[\[feeds.feed\]\] #1 \(https://example.org/rss\): unknown key 'intervl'.*did you mean 'interval'"):
        load_settings(path, environ={})


def test_feeds_from_config_and_local_paths_resolve_against_config_dir(tmp_path):
    path = _write(
        tmp_path,
        '[[feeds.feed]]\nurl = "feeds/local.xml"\ninterval = 5\n\n[[feeds.feed]]\nurl = "https://example.org/rss"\nfulltext = true\n',
    )
    feeds = load_settings(path, environ={}).configured_feeds()
    assert feeds[0].url == str(tmp_path / "feeds" / "local.xml") and feeds[0].interval == 5.0
    assert feeds[1].url == "https://example.org/rss" and feeds[1].fulltext


def test_no_feeds_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no feeds to poll"):
        load_feeds(load_settings(_write(tmp_path, ""), environ={}))


def test_acks_zero_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="acks"):
        load_settings(_write(tmp_path, '[kafka]\nacks = "0"\n'), environ={})


_THREE_FEEDS = '[[feeds.feed]]\nurl = "https://a.example/rss"\n\n[[feeds.feed]]\nurl = "https://b.example/rss"\n\n[[feeds.feed]]\nurl = "https://c.example/rss"\n'


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('interval = "abc"', "interval must be a number of seconds, at least 1, got 'abc'"),
        ("interval = -5", "interval must be a number of seconds, at least 1, got -5"),
        ("interval = 0.5", "interval must be a number of seconds, at least 1, got 0.5"),
        ("interval = nan", "interval must be a number of seconds, at least 1, got nan"),
        ("interval = true", "interval must be a number of seconds"),
        ('headers = "x"', "headers must be a table of header names and string values, got 'x'"),
        ("headers = { X-N = 5 }", "headers: header X-N must be a string, got 5"),
        ('headers = { "Bad Name" = "x" }', "header name 'Bad Name' is not a valid HTTP header name"),
        ('headers = { X-A = "1\\r\\nHost: evil" }', "header X-A has a line break"),
        ('enabled = "false"', "enabled must be true or false, got 'false'"),
        ("enabled = 0", "enabled must be true or false, got 0"),
        ('fulltext = "no"', "fulltext must be true or false, got 'no'"),
        ('expected_update_period = "soon"', "expected_update_period must be a number of seconds, at least 1, got 'soon'"),
        ("expected_update_period = 0", "expected_update_period must be a number of seconds, at least 1, got 0"),
        ("name = 5", "name must be a string, got 5"),
        ("intervall = 5", "unknown key 'intervall'"),
    ],
)
def test_every_feed_table_key_is_type_checked_with_table_url_and_line(tmp_path, line, problem):
    # Each of these gave a traceback at start-up, a crash on every poll, or silently did
    # the opposite of what was meant (enabled = "false" polled the feed).
    path = _write(tmp_path, _THREE_FEEDS + line + "\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    message = str(caught.value)
    assert message.startswith(f"{path}:9: [[feeds.feed]] #3 (https://c.example/rss): ")
    assert problem in message


def test_a_feed_table_without_a_usable_url_is_an_error(tmp_path):
    for url, problem in (('""', "url must be a non-empty string"), ("5", "url must be a non-empty string, got 5"),
                         ('"feed://x.example/rss"', "has the scheme 'feed'"), ('"https:///rss"', "has no host")):
        path = _write(tmp_path, f"[[feeds.feed]]\nname = 'x'\nurl = {url}\n")
        with pytest.raises(ConfigError, match=r":3: \[\[feeds.feed\]\] #1.*" + re.escape(problem)):
            load_settings(path, environ={})
    with pytest.raises(ConfigError, match=r":1: \[\[feeds.feed\]\] #1: needs a url"):
        load_settings(_write(tmp_path, "[[feeds.feed]]\nname = 'x'\n"), environ={})


def test_valid_feed_tables_keep_their_types(tmp_path):
    path = _write(
        tmp_path,
        '[[feeds.feed]]\nurl = "https://a.example/rss"\ninterval = 60\nenabled = false\nfulltext = true\n'
        'headers = { Authorization = "Bearer x", X-Client = "nm" }\nexpected_update_period = 7200\nname = "A"\n',
    )
    [feed] = load_settings(path, environ={}).configured_feeds()
    assert (feed.interval, feed.enabled, feed.fulltext, feed.expected_update_period, feed.name) == (60.0, False, True, 7200.0, "A")
    assert feed.headers == {"Authorization": "Bearer x", "X-Client": "nm"}


def test_a_feed_table_error_exits_2_with_one_line(tmp_path):
    path = _write(tmp_path, '[[feeds.feed]]\nurl = "https://a.example/rss"\nheaders = "x"\n')
    result = subprocess.run([sys.executable, "-m", "monitor", "run", "--once", "--config", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"{path}:3: [[feeds.feed]] #1 (https://a.example/rss): headers must be a table" in result.stderr


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("127.0.0.1:notaport", "the port in '127.0.0.1:notaport' must be a number from 1 to 65535"),
        ("127.0.0.1:99999", "the port in '127.0.0.1:99999' must be a number from 1 to 65535"),
        ("127.0.0.1:0", "must be a number from 1 to 65535"),
        ("kafka", "'kafka' has no port"),
        ("::1:9092", "an IPv6 address goes in brackets"),
        ("[::zz]:9092", "is not an IPv6 address"),
        ("PLAINTEXT://kafka:9092", "is a URL"),
        ("k1:9092,", "has an empty entry"),
        ("k1:9092,bad host:9092", "'bad host' in 'bad host:9092' is not a host name"),
    ],
)
def test_bootstrap_servers_are_checked_at_load(tmp_path, value, problem):
    # Both gave a ValueError / OverflowError traceback from aiokafka at connect time.
    path = _write(tmp_path, f'[kafka]\nbootstrap_servers = "{value}"\n')
    with pytest.raises(ConfigError, match=r"\[kafka\] bootstrap_servers: .*" + re.escape(problem)):
        load_settings(path, environ={})
    with pytest.raises(ConfigError, match=r"\[kafka\] bootstrap_servers: "):
        load_settings(_write(tmp_path, ""), environ={"NEWS_MONITOR_KAFKA_BOOTSTRAP_SERVERS": value})


@pytest.mark.parametrize("value", ["embedded", "EMBEDDED", "k1:9092", "k1:9092, k2.example.org:9093", "[::1]:9092", "10.0.0.1:1,[2001:db8::1]:65535"])
def test_valid_bootstrap_servers_load(tmp_path, value):
    assert load_settings(_write(tmp_path, f'[kafka]\nbootstrap_servers = "{value}"\n'), environ={}).kafka.bootstrap_servers == value


@pytest.mark.parametrize(
    ("listen", "ok"),
    [("127.0.0.1:8765", True), ("[::1]:0", True), ("localhost:8765", True), ("127.0.0.1:99999", False), ("::1:8765", False),
     ("127.0.0.1:", False), ("http://127.0.0.1:8765", False), ("a b:80", False)],
)
def test_http_listen_is_host_and_port(tmp_path, listen, ok):
    path = _write(tmp_path, f'[http]\nlisten = "{listen}"\n')
    if ok:
        assert load_settings(path, environ={}).http.listen == listen
    else:
        with pytest.raises(ConfigError, match=r"\[http\] listen: "):
            load_settings(path, environ={})


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[feeds]\ninterval = nan\n", r"\[feeds\] interval must be a finite number, got nan"),
        ("[http]\nrefresh = inf\n", r"\[http\] refresh must be a finite number, got inf"),
        ("[feeds]\nconcurrency = 2.5\n", r"\[feeds\] concurrency must be a whole number, got 2.5"),
        ("[stories]\nenabled = \"no\"\n", r"\[stories\] enabled must be true or false, got 'no'"),
        ("[rules]\npaths = [1]\n", r"\[rules\] paths must be a list of strings, got 1 in the list"),
        ("[rules]\npaths = [\"\"]\n", r"\[rules\] paths is empty or has an empty entry"),
        ("[feeds]\nmin_interval = -5\n", r"\[feeds\] min_interval must not be negative"),
        ("[feeds]\nparse_workers = -5\n", r"\[feeds\] parse_workers must be -1, 0 or more"),
        ("[feeds]\nparse_workers = 100000\n", r"\[feeds\] parse_workers must be -1, 0 or more, at most 256, got 100,000"),
        ("[feeds]\nuser_agent = \"a\\nb\"\n", r"\[feeds\] user_agent has a line break"),
        ("[kafka]\nconnect_timeout = -1\n", r"\[kafka\] connect_timeout must be above 0"),
        ("[kafka]\nembedded_port = 99999\n", r"\[kafka\] embedded_port must be 0 \(any free port\) to 65535"),
        ("[kafka]\ndead_letter_topic = \"dead letters\"\n", r"\[kafka\] dead_letter_topic = 'dead letters' is not a Kafka topic name"),
        ("[health]\ntopic = \"a/b\"\n", r"\[health\] topic = 'a/b' is not a Kafka topic name"),
        ("[rules]\nallow_empty = \"yes\"\n", r"\[rules\] allow_empty must be true or false"),
        # min_interval 0 stands for interval: the error names the key that was set.
        ("[feeds]\ninterval = 5000\n", r"\[feeds\] interval \(5000\) is above max_interval \(3600\)"),
        # Before: a struct.error traceback at the first produce request; a start-up stalled for minutes.
        ("[kafka]\nrequest_timeout_ms = 99999999999\n", r"\[kafka\] request_timeout_ms must be at most 2,147,483,647"),
        ("[feeds]\nconcurrency = 999999999\n", r"\[feeds\] concurrency must be at most 10,000"),
        # Before: accepted, the state store then went into the config file's directory.
        ("[state]\ndir = \"\"\n", r"\[state\] dir is empty"),
        ("[feeds.feed]\nurl = \"a.xml\"\n", r"\[feeds\] feed must be a list of tables, got one table \(write \[\[feeds.feed\]\], with two brackets\)"),
    ],
)
def test_other_values_are_checked_for_type_and_range(tmp_path, text, problem):
    with pytest.raises(ConfigError, match=problem):
        load_settings(_write(tmp_path, text), environ={})


def test_non_finite_numbers_from_the_environment_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="NEWS_MONITOR_FEEDS_INTERVAL='inf' is invalid: expected a finite number"):
        load_settings(_write(tmp_path, ""), environ={"NEWS_MONITOR_FEEDS_INTERVAL": "inf"})


def test_cluster_section_has_defaults_file_values_and_environment_overrides(tmp_path):
    config = tmp_path / "monitor.toml"
    config.write_text('[cluster]\nsession_timeout = 20\nfeeds_topic = "desk.feeds"\n', encoding="utf-8")
    settings = load_settings(config, environ={"NEWS_MONITOR_CLUSTER_MATCHER_GROUP": "desk-matchers"})
    assert settings.cluster.session_timeout == 20.0
    assert settings.cluster.feeds_topic == "desk.feeds"
    assert settings.cluster.matcher_group == "desk-matchers"
    assert settings.cluster.articles_topic == "news.articles"
    assert settings.cluster.poller_group == "news-monitor-pollers"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("session_timeout = 2", "session_timeout = 2.0 is out of range"),
        ('feeds_topic = "bad topic"', "is not a Kafka topic name"),
        ('feeds_topic = "news.articles"', "the topics must all differ"),
        ('matcher_group = "news-monitor-pollers"', "must differ"),
    ],
)
def test_a_bad_cluster_setting_is_refused(tmp_path, text, message):
    config = tmp_path / "monitor.toml"
    config.write_text(f"[cluster]\n{text}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings(config)


def test_websub_is_off_by_default_and_every_key_comes_from_the_environment_too(tmp_path):
    path = _write(tmp_path, '[[feeds.feed]]\nurl = "https://a.example/rss"\nwebsub = "off"\n\n[[feeds.feed]]\nurl = "https://b.example/rss"\n')
    assert load_settings(path, environ={}).websub.enabled is False
    environ = {
        "NEWS_MONITOR_WEBSUB_ENABLED": "true",
        "NEWS_MONITOR_WEBSUB_CALLBACK_URL": "https://monitor.example.org/websub/",
        "NEWS_MONITOR_WEBSUB_LISTEN": "0.0.0.0:8767",
        "NEWS_MONITOR_WEBSUB_FALLBACK_INTERVAL": "1800",
        "NEWS_MONITOR_WEBSUB_HUB_ALLOW": "10.0.0.0/8, hub.intranet",
    }
    settings = load_settings(path, environ=environ)
    websub = settings.websub
    assert (websub.enabled, websub.callback_url, websub.listen, websub.fallback_interval) == (
        True, "https://monitor.example.org/websub/", "0.0.0.0:8767", 1800.0)
    assert websub.hub_allow == ("10.0.0.0/8", "hub.intranet")
    assert [feed.websub for feed in settings.configured_feeds()] == ["off", "auto"]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[websub]\nenabled = true\n", r"\[websub\] callback_url = '' is not an http\(s\) base URL"),
        ('[websub]\nenabled = true\ncallback_url = "ftp://x/"\n', r"callback_url = 'ftp://x/' is not an http\(s\) base URL"),
        ('[websub]\nenabled = true\ncallback_url = "https://x:99999/"\n', r"callback_url = 'https://x:99999/': Port out of range 0-65535"),
        ('[websub]\nenabled = true\ncallback_url = "https://x:8o/"\n', r"callback_url = 'https://x:8o/': Port could not be cast"),
        ('[websub]\nenabled = true\ncallback_url = "https://x/"\nlisten = "8767"\n', r"\[websub\] listen: '8767' has no port"),
        ("[websub]\nfallback_interval = 0\n", r"\[websub\] fallback_interval must be at least 1 second"),
        ("[websub]\nretry_initial = 10\nretry_max = 5\n", r"\[websub\] retry_max must be at least retry_initial"),
        ('[websub]\nhub_allow = ["10.0.0.0/99"]\n', r"\[websub\] hub_allow entry '10.0.0.0/99'"),
        ('[[feeds.feed]]\nurl = "https://a.example/rss"\nwebsub = "on"\n', r"websub must be one of auto, off, got 'on'"),
    ],
)
def test_websub_values_are_checked(tmp_path, text, problem):
    with pytest.raises(ConfigError, match=problem):
        load_settings(_write(tmp_path, text), environ={})


def test_an_empty_sightings_topic_is_for_the_matchers_and_only_news_monitor_signals_needs_one(tmp_path):
    from monitor.app.signals import SignalsProcess

    config = _write(tmp_path, '[kafka]\nbootstrap_servers = "127.0.0.1:9"\n[signals]\nsightings_topic = ""\n')
    settings = load_settings(config, environ={})
    assert settings.signals.sightings_topic == "" and settings.signals.source == "sightings"
    with pytest.raises(ConfigError, match='source = "sightings" needs a sightings_topic'):
        SignalsProcess(settings)


_SECTIONS_FILE = '[kafka]\nbootstrap_servers = "k:9092"\n\n[feeds]\nopml = "f.opml"\n\n[[feeds.feed]]\nurl = "https://a.example/rss"\n\n[state]\n'


@pytest.mark.parametrize(
    ("lines", "at", "problem"),
    [
        ("flush_interval = 0", 11, "[state] retention_check and flush_interval must be above 0 seconds"),
        ("retention_days = -1", 11, "[state] retention_days must be above 0"),
        ("retention_dayz = 1", 11, "unknown key 'retention_dayz' in [state]"),
        ('retention_days = "30"', 11, "[state] retention_days must be a number, got '30'"),
        ("# a comment\nflush_interval = 1\ndir = ''", 13, "[state] dir is empty"),
        ("retention_check = 0\nflush_interval = 0", 10, "[state] retention_check and flush_interval"),
        ("[statez]", 11, "unknown section [statez]"),
    ],
)
def test_a_bad_setting_is_reported_at_its_line(tmp_path, lines, at, problem):
    # The file and line of the key (its section's header when the message names several
    # keys the file sets), as docs/operations.md says of every error: <file>:<line>: <problem>.
    path = _write(tmp_path, _SECTIONS_FILE + lines + "\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert str(caught.value).startswith(f"{path}:{at}: {problem}")


def test_a_bad_value_from_the_environment_names_the_variable_not_a_line(tmp_path):
    path = _write(tmp_path, "[feeds]\ninterval = 60\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={"NEWS_MONITOR_FEEDS_INTERVAL": "0"})
    assert str(caught.value) == "environment variable NEWS_MONITOR_FEEDS_INTERVAL: [feeds] interval must be at least 1 second"
    result = subprocess.run(
        [sys.executable, "-m", "monitor", "run", "--once", "--config", str(path)],
        capture_output=True, text=True, timeout=60, env={**os.environ, "NEWS_MONITOR_FEEDS_MAX_INTERVAL": "30"},
    )  # fmt: skip
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"news-monitor: error: {path}:2: [feeds] interval (60) is above max_interval (30)")


def test_enable_idempotence_takes_a_toml_boolean_as_the_readme_writes_it(tmp_path):
    # README: "auto", "or true/false"; a TOML boolean was refused ("must be a string, got False").
    for text, expected in (("false", False), ("true", True), ('"false"', False), ('"auto"', True)):
        path = _write(tmp_path, f'[kafka]\nbootstrap_servers = "k:9092"\nenable_idempotence = {text}\n')
        assert load_settings(path, environ={}).kafka.idempotence is expected, text


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("NEWS_MONITOR_FEEDS_CONCURRENCY", "2.5", "expected a whole number, e.g. 10"),
        ("NEWS_MONITOR_FEEDS_CONCURRENCY", "٣", "expected a whole number, e.g. 10"),
        ("NEWS_MONITOR_FEEDS_INTERVAL", "abc", "expected a finite number, e.g. 30 or 0.5"),
        ("NEWS_MONITOR_FEEDS_INTERVAL", "1_000", "expected a finite number, e.g. 30 or 0.5"),
        ("NEWS_MONITOR_SIGNALS_ESCALATION", "3,x", "expected whole numbers separated by commas, e.g. 3,10,30"),
    ],
)
def test_a_bad_environment_number_says_what_it_must_be_in_words(tmp_path, variable, value, expected):
    # It was int()'s and float()'s own words: "invalid literal for int() with base 10: '2.5'"
    # (docs/operations.md: never Python's vocabulary), and "1_000" or "٣" were taken as numbers.
    with pytest.raises(ConfigError) as caught:
        load_settings(_write(tmp_path, ""), environ={variable: value})
    assert str(caught.value) == f"environment variable {variable}={value!r} is invalid: {expected}"


def test_environment_numbers_read_as_toml_writes_them(tmp_path):
    environ = {"NEWS_MONITOR_FEEDS_INTERVAL": " 90.5 ", "NEWS_MONITOR_FEEDS_CONCURRENCY": "+8", "NEWS_MONITOR_SIGNALS_ESCALATION": "3, 10",
               "NEWS_MONITOR_FEEDS_MAX_INTERVAL": "1e4"}  # fmt: skip
    settings = load_settings(_write(tmp_path, ""), environ=environ)
    assert (settings.feeds.interval, settings.feeds.concurrency, settings.signals.escalation, settings.feeds.max_interval) == (90.5, 8, (3, 10), 1e4)


def test_a_config_file_that_does_not_read_is_reported_at_its_line_in_words(tmp_path):
    # "<file>:<line>:<column>: problem" (docs/operations.md), as rule files are; it was the file
    # alone with tomllib's "(at line 3, column 14)" inside, and Python's codec words for a
    # file that is not UTF-8 ("'utf-8' codec can't decode byte 0xe9 in position 33: ...").
    path = _write(tmp_path, "[feeds]\ninterval = 10\ninterval = 11\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert str(caught.value) == f"{path}:3:14: invalid TOML: Cannot overwrite a value"
    path.write_bytes(b"[feeds]\ninterval = 10\n\n# caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ={})
    assert str(caught.value) == f"{path}:4: not UTF-8: byte 0xe9 is not valid here (save the file as UTF-8)"
