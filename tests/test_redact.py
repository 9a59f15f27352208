"""The masking rule for feed urls (monitor.redact), and the config key that tunes it."""

from __future__ import annotations

import pytest

from monitor import redact
from monitor.errors import ConfigError
from monitor.redact import DEFAULT_SECRET_PARAMS, is_secret_param, link_base, mask_url, public_feed_url, scrub
from monitor.settings import load_settings


@pytest.fixture(autouse=True)
def _default_list():
    redact.configure(None)
    yield
    redact.configure(None)


@pytest.mark.parametrize(
    "name",
    ["token", "TOKEN", "access_token", "X-Amz-Signature", "apiKey", "api_key", "APIKEY", "authtoken",
     "client_secret", "oauth", "sig", "pwd", "Password", "x.auth.token", "%74oken", "key"],
)
def test_secret_looking_names(name):
    assert is_secret_param(name)


@pytest.mark.parametrize("name", ["author", "keyword", "page", "edition", "q", "format", "signed", "tokens_left", "session"])
def test_ordinary_names(name):
    assert not is_secret_param(name)


def test_user_info_and_secret_values_are_masked_the_rest_kept():
    url = "https://bob:s3cr%40t@feeds.example:8443/rss?edition=eu&token=abc&X-Amz-Signature=def&page=2#top"
    assert mask_url(url) == "https://***@feeds.example:8443/rss?edition=eu&token=***&X-Amz-Signature=***&page=2#top"
    assert mask_url("https://feeds.example/rss?page=2") == "https://feeds.example/rss?page=2"
    # A password holding a raw "@" still goes as a whole.
    assert mask_url("https://bob:p@ss@feeds.example/") == "https://***@feeds.example/"


def test_urls_inside_text_and_json_are_masked():
    text = 'GET https://u:pw@a.example/x?key=k1 failed; {"feed_url":"http://b.example/f?apikey=k2&n=1"} mail me@b.example'
    assert scrub(text) == (
        'GET https://***@a.example/x?key=*** failed; {"feed_url":"http://b.example/f?apikey=***&n=1"} mail me@b.example'
    )


def test_the_text_around_a_masked_url_keeps_its_punctuation():
    # A feed error is "<url>: <problem>"; the ":" was taken as the secret's last character
    # and masked with it ("...?token=*** HTTP 410 Gone" in the summary, last_error, logs).
    assert scrub("https://a.example/f?token=abc: HTTP 410 Gone") == "https://a.example/f?token=***: HTTP 410 Gone"
    assert scrub("(see https://a.example/f?key=k1, then https://b.example/?sig=s2)") == (
        "(see https://a.example/f?key=***, then https://b.example/?sig=***)"
    )
    assert scrub("https://a.example/f?token=ab:cd&n=1:") == "https://a.example/f?token=***&n=1:"


def test_a_feed_path_is_published_as_an_absolute_file_uri(tmp_path):
    feed = tmp_path / "my feeds" / "world.xml"
    assert public_feed_url(str(feed)) == "file://" + str(feed).replace(" ", "%20")
    assert public_feed_url("https://bob:pw@feeds.example/rss?sig=1") == "https://***@feeds.example/rss?sig=***"


def test_link_base_removes_credentials_and_is_empty_for_files():
    assert link_base("https://bob:pw@Feeds.example:8443/news/rss?token=t&edition=eu") == "https://Feeds.example:8443/news/rss?edition=eu"
    assert link_base("/srv/feeds/world.xml") == "" and link_base("file:///srv/feeds/world.xml") == ""


def test_the_list_is_configurable_and_replaces_the_default():
    settings = load_settings(None, environ={"NEWS_MONITOR_FEEDS_REDACT_PARAMS": "session, hash"})
    assert settings.feeds.redact_params == ("session", "hash")
    assert load_settings(None, environ={}).feeds.redact_params == DEFAULT_SECRET_PARAMS
    redact.configure(settings.feeds.redact_params)
    assert mask_url("https://a.example/f?session=1&token=2&hash=3") == "https://a.example/f?session=***&token=2&hash=***"


def test_a_bad_entry_is_a_config_error(tmp_path):
    config = tmp_path / "monitor.toml"
    config.write_text('[feeds]\nredact_params = ["token", "a=b"]\n')
    with pytest.raises(ConfigError, match="redact_params entry 'a=b'"):
        load_settings(config, environ={})
