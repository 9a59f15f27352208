"""Configuration: one TOML file, environment overrides, strict about unknown keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor.errors import ConfigError
from monitor.settings import load_settings
from monitor.worker import load_feeds
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


def test_bad_environment_value_names_the_variable(tmp_path):
    with pytest.raises(ConfigError, match="NEWS_MONITOR_FEEDS_INTERVAL"):
        load_settings(_write(tmp_path, ""), environ={"NEWS_MONITOR_FEEDS_INTERVAL": "soon"})


def test_feed_table_with_unknown_key_is_an_error(tmp_path):
    path = _write(tmp_path, '[[feeds.feed]]\nurl = "https://example.org/rss"\nintervl = 5\n')
    with pytest.raises(ConfigError, match=r"unknown key 'intervl' in \[\[feeds.feed\]\] #1.*interval"):
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
