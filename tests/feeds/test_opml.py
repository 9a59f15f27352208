"""Feed lists from OPML: nesting, relative paths, per-feed attributes, errors with lines,
and the curated world-news seed (parsed, never fetched)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from monitor.errors import ConfigError
from monitor.feeds.opml import feeds_from_opml
from monitor.feeds.sources import load_feeds
from monitor.settings import load_settings
from tests.support import SEEDS

NESTED = """<?xml version="1.0" encoding="UTF-8"?>
<opml version="2.0">
  <head><title>reader export</title></head>
  <body>
    <outline text="News">
      <outline text="World">
        <outline text="Europe">
          <outline text="Deep" title="Deep feed" type="rss" xmlUrl="https://deep.example/rss"/>
        </outline>
        <outline text="Wire" type="rss" xmlUrl="https://wire.example/feed.xml" interval="60" fulltext="true"/>
      </outline>
      <outline text="Local copy" type="rss" xmlUrl="feeds/local.xml"/>
      <outline text="Parent dir" type="rss" xmlUrl="../shared.xml"/>
    </outline>
    <outline text="Paused" type="rss" xmlUrl="https://paused.example/rss" enabled="false"/>
    <outline text="Keyed" type="rss" xmlUrl="https://keyed.example/rss"
             headers='{"Authorization": "Bearer s3cret", "X-Client": "news-monitor"}'/>
    <outline text="Top level" type="rss" xmlUrl="https://top.example/rss"/>
    <outline text="Wire again" type="rss" xmlUrl="https://wire.example/feed.xml" interval="900"/>
    <outline text="Local again" type="rss" xmlUrl="./feeds/local.xml"/>
    <outline text="A folder with no feeds"><outline text="empty"/></outline>
  </body>
</opml>
"""


def _write(tmp_path: Path, text: str, name: str = "feeds.opml") -> Path:
    folder = tmp_path / "lists"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_nested_outlines_at_every_depth_are_feeds(tmp_path):
    feeds = feeds_from_opml(_write(tmp_path, NESTED), default_interval=300.0)
    urls = [f.url for f in feeds]
    assert "https://deep.example/rss" in urls and "https://top.example/rss" in urls
    deep = next(f for f in feeds if f.url == "https://deep.example/rss")
    assert deep.name == "Deep feed"


def test_relative_xml_urls_resolve_against_the_opml_file(tmp_path):
    path = _write(tmp_path, NESTED)
    urls = [f.url for f in feeds_from_opml(path, 300.0)]
    assert str((path.parent / "feeds" / "local.xml").resolve()) in urls
    assert str((tmp_path / "shared.xml").resolve()) in urls


def test_feeds_listed_twice_are_read_once_first_listing_wins(tmp_path):
    feeds = feeds_from_opml(_write(tmp_path, NESTED), 300.0)
    urls = [f.url for f in feeds]
    assert len(urls) == len(set(urls)) == 7
    wire = next(f for f in feeds if f.url == "https://wire.example/feed.xml")
    assert wire.interval == 60.0 and wire.fulltext


def test_per_feed_attributes(tmp_path):
    feeds = {f.url: f for f in feeds_from_opml(_write(tmp_path, NESTED), 300.0)}
    assert feeds["https://deep.example/rss"].interval == 300.0
    assert feeds["https://deep.example/rss"].enabled and not feeds["https://deep.example/rss"].fulltext
    assert not feeds["https://paused.example/rss"].enabled
    assert feeds["https://keyed.example/rss"].headers == {"Authorization": "Bearer s3cret", "X-Client": "news-monitor"}
    assert feeds["https://top.example/rss"].headers == {}


def test_opml_feeds_join_the_config_feeds_without_duplicates(tmp_path):
    opml = _write(tmp_path, NESTED)
    config = tmp_path / "monitor.toml"
    config.write_text(
        f'[feeds]\nopml = "{opml}"\n[[feeds.feed]]\nurl = "https://top.example/rss"\ninterval = 30\n', encoding="utf-8"
    )
    feeds = load_feeds(load_settings(config, environ={}))
    urls = [f.url for f in feeds]
    assert len(urls) == len(set(urls))
    # The config file's own listing comes first and wins; the paused feed is left out.
    assert next(f for f in feeds if f.url == "https://top.example/rss").interval == 30.0
    assert "https://paused.example/rss" not in urls


@pytest.mark.parametrize(
    ("outline", "problem"),
    [
        ('<outline xmlUrl="https://a.example/rss" interval="soon"/>', "interval 'soon' is not a number"),
        ('<outline xmlUrl="https://a.example/rss" interval="0.1"/>', "below 1 second"),
        ('<outline xmlUrl="https://a.example/rss" enabled="ture"/>', "enabled='ture' is not true or false"),
        ('<outline xmlUrl="https://a.example/rss" fulltext="maybe"/>', "fulltext='maybe'"),
        ("<outline xmlUrl=\"https://a.example/rss\" headers='Authorization: x'/>", "headers is not a JSON object"),
        ("<outline xmlUrl=\"https://a.example/rss\" headers='[\"x\"]'/>", "headers must map header names"),
        ("<outline xmlUrl=\"https://a.example/rss\" headers='{\"X-A\": \"1\\nHost: evil\"}'/>", "X-A has a line break"),
        ("<outline xmlUrl=\"https://a.example/rss\" headers='{\"X-N\": 5}'/>", "header X-N must be a string, got 5"),
        ('<outline xmlUrl="https://a.example/rss" interval="1e3"/>', "interval '1e3' is not a number of seconds"),
        ('<outline xmlUrl="https://a.example/rss" interval="inf"/>', "interval 'inf' is not a number of seconds"),
        ('<outline xmlUrl="https://a.example/rss" interval="1_000"/>', "interval '1_000' is not a number of seconds"),
        ('<outline xmlUrl="https://a.example/rss" interval=""/>', "interval '' is not a number of seconds"),
        ('<outline xmlUrl="https://a.example/rss" enabled=""/>', "enabled='' is not true or false"),
        ('<outline xmlUrl="https://a.example/rss" fulltext="2"/>', "fulltext='2' is not true or false"),
        ('<outline xmlUrl="feed://a.example/rss"/>', "has the scheme 'feed'"),
        ('<outline xmlUrl="https://a.example/rss" websub="no"/>', "websub='no' is not one of auto, off"),
    ],
)
def test_bad_attributes_are_errors_with_file_and_line(tmp_path, outline, problem):
    text = f'<?xml version="1.0"?>\n<opml version="2.0">\n<body>\n<outline text="ok" xmlUrl="https://ok.example/rss"/>\n{outline}\n</body>\n</opml>\n'
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        feeds_from_opml(path, 300.0)
    assert caught.value.location is not None
    assert caught.value.location.path == str(path) and caught.value.location.line == 5
    assert problem in str(caught.value)
    assert f"{path}:5" in str(caught.value)
    assert "a.example/rss" in str(caught.value), "the feed is named"
    assert caught.value.hint, "what is expected is said"


def test_invalid_xml_is_an_error_with_file_and_line(tmp_path):
    path = _write(tmp_path, '<?xml version="1.0"?>\n<opml version="2.0">\n<body>\n<outline text="a" xmlUrl="https://a.example/rss">\n</body>\n</opml>\n')
    with pytest.raises(ConfigError) as caught:
        feeds_from_opml(path, 300.0)
    location = caught.value.location
    assert location is not None and location.path == str(path) and location.line == 5
    assert "invalid OPML" in str(caught.value) and str(path) in str(caught.value)
    # The position once, in the location; lxml's message ended with it again.
    assert not re.search(r"line \d+, column \d+", str(caught.value)), str(caught.value)


def test_a_file_that_is_not_opml_is_an_error(tmp_path):
    path = _write(tmp_path, '<?xml version="1.0"?><rss version="2.0"><channel/></rss>')
    with pytest.raises(ConfigError, match="not an OPML file") as caught:
        feeds_from_opml(path, 300.0)
    assert caught.value.location.path == str(path)


def test_a_missing_file_is_an_error_naming_it(tmp_path):
    with pytest.raises(ConfigError, match="cannot read OPML") as caught:
        feeds_from_opml(tmp_path / "nowhere.opml", 300.0)
    # The system's words, the path once (lxml's text named it three times, in its own words).
    assert str(caught.value) == (
        f"{tmp_path / 'nowhere.opml'}: cannot read OPML file: No such file or directory"
        " (check [feeds] opml (a relative path is relative to the config file))"
    )


def test_an_opml_without_feeds_gives_none_and_the_daemon_says_so(tmp_path):
    path = _write(tmp_path, '<?xml version="1.0"?><opml version="2.0"><head/><body><outline text="Folder"/></body></opml>')
    assert feeds_from_opml(path, 300.0) == []
    config = tmp_path / "monitor.toml"
    config.write_text(f'[feeds]\nopml = "{path}"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="no feeds to poll"):
        load_feeds(load_settings(config, environ={}))


def test_external_entities_are_not_read(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("https://exfiltrated.example/rss", encoding="utf-8")
    path = _write(
        tmp_path,
        f'<?xml version="1.0"?><!DOCTYPE opml [<!ENTITY x SYSTEM "file://{secret}">]>'
        '<opml version="2.0"><body><outline text="t" xmlUrl="&x;"/></body></opml>',
    )
    try:
        feeds = feeds_from_opml(path, 300.0)
    except ConfigError:
        return  # refusing the document outright is fine too
    assert all("exfiltrated" not in f.url for f in feeds)


def test_world_news_seed_lists_real_feeds_in_nested_groups():
    path = SEEDS / "world-news.opml"
    feeds = feeds_from_opml(path, 300.0)
    assert len(feeds) >= 20
    assert all(urlsplit(f.url).scheme in ("http", "https") and urlsplit(f.url).hostname for f in feeds)
    assert len({f.url for f in feeds}) == len(feeds)
    assert all(f.enabled and f.name for f in feeds)
    assert len({urlsplit(f.url).hostname for f in feeds}) >= 15, "many outlets, not one"
    # Nested groups: feeds sit two levels deep (region > country) as well as one.
    from lxml import etree

    tree = etree.parse(str(path))
    depths = {len(outline.xpath("ancestor::outline")) for outline in tree.iter("outline") if outline.get("xmlUrl")}
    assert {1, 2} <= depths


def test_sample_opml_points_at_the_local_sample_feeds():
    feeds = feeds_from_opml(SEEDS / "feeds.opml", 300.0)
    assert [Path(f.url).name for f in feeds] == ["world-news.rss.xml", "world-news.atom.xml"]
    assert all(Path(f.url).is_file() for f in feeds)


@pytest.mark.parametrize(
    ("value", "enabled"),
    [("true", True), ("TRUE", True), (" Yes ", True), ("on", True), ("1", True), ("false", False), ("False", False), ("NO", False), ("off", False), ("0", False)],
)
def test_opml_booleans_are_the_documented_words_in_any_case(tmp_path, value, enabled):
    text = f'<?xml version="1.0"?><opml version="2.0"><body><outline xmlUrl="https://a.example/rss" enabled="{value}" fulltext="{value}"/></body></opml>'
    [feed] = feeds_from_opml(_write(tmp_path, text), 300.0)
    assert feed.enabled is enabled and feed.fulltext is enabled


@pytest.mark.parametrize(("value", "seconds"), [("300", 300.0), (" 60 ", 60.0), ("90.5", 90.5), ("1", 1.0)])
def test_opml_interval_is_a_decimal_number_of_seconds(tmp_path, value, seconds):
    text = f'<?xml version="1.0"?><opml version="2.0"><body><outline xmlUrl="https://a.example/rss" interval="{value}"/></body></opml>'
    [feed] = feeds_from_opml(_write(tmp_path, text), 300.0)
    assert feed.interval == seconds


def test_websub_attribute(tmp_path):
    text = (
        '<?xml version="1.0"?>\n<opml version="2.0"><body><outline xmlUrl="https://a.example/rss" websub=" OFF "/>'
        '<outline xmlUrl="https://b.example/rss" websub="auto"/><outline xmlUrl="https://c.example/rss"/></body></opml>\n'
    )
    feeds = feeds_from_opml(_write(tmp_path, text), 300.0)
    assert [feed.websub for feed in feeds] == ["off", "auto", "auto"]
