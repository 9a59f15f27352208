"""``run --role``: what the command line refuses, and the pure helpers of the roles."""

from __future__ import annotations

import pytest

from monitor import cli
from monitor.app.matcher_role import rounds
from monitor.log import configure_logging
from monitor.model import Article


@pytest.fixture
def no_config(tmp_path, monkeypatch):
    """No config file (not the repository's monitor.toml): defaults and the environment only."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("NEWS_MONITOR_CONFIG", raising=False)
    monkeypatch.setenv("NEWS_MONITOR_STATE_DIR", str(tmp_path / "state"))
    yield
    # The command line set logging up on pytest's captured stderr, closed by now: as conftest.py had it.
    configure_logging("warning", "json")


@pytest.mark.parametrize(
    ("args", "bootstrap", "message"),
    [
        (["--role", "matcher"], "embedded", "run --role needs a shared broker; the embedded one lives inside one process"),
        (["--role", "poller"], "embedded", "run --role needs a shared broker; the embedded one lives inside one process"),
        (["--role", "poller", "--once"], "127.0.0.1:1", "--once cannot be combined with --role"),
        (["--role", "matcher", "--once"], "127.0.0.1:1", "--once cannot be combined with --role"),
        (["--role", "mather"], "127.0.0.1:1", "unknown role 'mather'"),
    ],
)
def test_run_role_refuses_with_one_line_and_exit_2(no_config, monkeypatch, capsys, args, bootstrap, message):
    monkeypatch.setenv("NEWS_MONITOR_KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    assert cli.main(["run", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("news-monitor: error: ") and message in err
    assert "Traceback" not in err


def _article(n: int, article_id: str, url: str | None = None) -> Article:
    return Article(id=article_id, feed_url="https://example.org/feed.xml", title=f"version {n}", url=url)


def test_rounds_keep_the_order_and_never_hold_one_article_twice():
    a1, b, a2 = _article(1, "a", "https://x/a"), _article(1, "b", "https://x/b"), _article(2, "a", "https://x/a")
    other_id_same_url = _article(3, "c", "https://x/b")
    assert rounds([a1, b, a2, other_id_same_url]) == [[a1, b], [a2, other_id_same_url]]
    assert rounds([a1, b]) == [[a1, b]]
    assert rounds([]) == []
    assert rounds([a1, a2, a1]) == [[a1], [a2], [a1]]
