"""The command line's manners: help with examples, one-line errors, exit codes, progress."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from monitor.adapters.broker import free_port
from monitor.cli import build_parser
from tests.support import ROOT, SEEDS


def _cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NEWS_MONITOR_")}
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args], cwd=cwd, env=clean, capture_output=True, text=True, timeout=60
    )


def _commands(parser=None, prefix=()):
    """Every command path, e.g. ("run",), ("rules", "check")."""
    parser = parser or build_parser()
    for action in parser._subparsers._group_actions if parser._subparsers else ():
        for name, sub in action.choices.items():
            yield (*prefix, name)
            if sub._subparsers is not None:
                yield from _commands(sub, (*prefix, name))


def test_every_command_has_help_with_examples():
    commands = list(_commands())
    assert ("status",) in commands and ("rules", "eval") in commands
    for command in commands:
        parser = build_parser()
        for name in command:
            parser = next(a for a in parser._subparsers._group_actions).choices[name]
        text = parser.format_help()
        assert "example" in text, f"'news-monitor {' '.join(command)} --help' shows no example"


def test_top_level_help_documents_exit_codes():
    result = _cli("--help")
    assert result.returncode == 0
    assert "0 ok, 1 check failed, 2 bad usage/config/rules, 3 broker unreachable" in result.stdout
    assert "status" in result.stdout


def test_config_error_is_one_line_with_exit_2(tmp_path):
    config = tmp_path / "monitor.toml"
    config.write_text("[http]\nlisten = 8765\n")
    result = _cli("status", "--config", str(config))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert str(config) in result.stderr and "listen" in result.stderr


def test_taken_http_port_is_one_line_with_exit_2(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "monitor.toml"
        config.write_text(
            f'[kafka]\nbootstrap_servers = "127.0.0.1:{free_port()}"\nconnect_timeout = 1\n'
            f'[state]\ndir = "{tmp_path / "state"}"\n[rules]\npaths = ["{ROOT / "rules"}"]\n'
            f'[http]\nlisten = "127.0.0.1:{port}"\n[[feeds.feed]]\nurl = "{SEEDS / "world-news.rss.xml"}"\n'
        )
        result = _cli("run", "--config", str(config))
    assert result.returncode == 2
    error = [line for line in result.stderr.splitlines() if line.startswith("news-monitor: error:")]
    assert len(error) == 1 and f"127.0.0.1:{port}" in error[0] and "[http] listen" in error[0]
    assert "Traceback" not in result.stderr


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("script") is None, reason="needs script(1) from util-linux for a pseudo-terminal")
def test_run_once_shows_progress_on_a_terminal(broker, tmp_path):
    config = tmp_path / "monitor.toml"
    config.write_text(
        f'[kafka]\nbootstrap_servers = "{broker.bootstrap_servers}"\n[state]\ndir = "{tmp_path / "state"}"\n'
        f'[rules]\npaths = ["{ROOT / "rules"}"]\n[feeds]\nparse_workers = 0\n[log]\nlevel = "error"\n'
        f'[[feeds.feed]]\nurl = "{SEEDS / "world-news.rss.xml"}"\n[[feeds.feed]]\nurl = "{SEEDS / "world-news.atom.xml"}"\n'
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NEWS_MONITOR_")}
    command = f"{sys.executable} -m monitor run --once --config {config}"
    result = subprocess.run(
        ["script", "-qec", command, "/dev/null"], cwd=ROOT, env={**clean, "TERM": "xterm", "COLUMNS": "100"},
        capture_output=True, text=True, timeout=90,
    )
    assert result.returncode == 0, result.stdout
    assert "polling feeds" in result.stdout and "2/2" in result.stdout
    assert "feeds polled:   2 of 2" in result.stdout


@pytest.mark.integration
async def test_run_summary_says_how_many_feeds_were_unchanged(broker, feed_server, tmp_path):
    import io
    import uuid

    from monitor.cli import _print_summary
    from monitor.worker import Monitor
    from tests.support import make_settings

    run = uuid.uuid4().hex[:8]
    body = (SEEDS / "world-news.rss.xml").read_bytes()
    # One answers 304 to its ETag; the other ignores conditional GET but sends the same bytes.
    conditional = feed_server.serve(f"/etag-{run}.rss", body, etag=f'"{run}"')
    same_bytes = feed_server.serve(f"/plain-{run}.rss", body)
    settings = make_settings(tmp_path, broker.bootstrap_servers, [conditional, same_bytes])

    def printed(summary) -> list[str]:
        out = io.StringIO()
        _print_summary(summary, out)
        return out.getvalue().splitlines()

    first = await Monitor(settings).run(once=True, handle_signals=False)
    assert printed(first)[0] == "feeds polled:   2 of 2"
    second = await Monitor(settings).run(once=True, handle_signals=False)
    assert second.unchanged == 2
    assert printed(second)[:2] == ["feeds polled:   2 of 2 (2 unchanged)", "new articles:   0 (0 already seen)"]
