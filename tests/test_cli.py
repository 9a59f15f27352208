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


def _listening_child() -> tuple[subprocess.Popen[str], int]:
    """A process listening on a loopback port, with a line break in its command line."""
    script = "import socket, sys\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\ns.listen()\nprint(s.getsockname()[1], flush=True)\nsys.stdin.read()"
    child = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    return child, int(child.stdout.readline())


def test_broker_command_refuses_a_taken_or_invalid_port_with_exit_2():
    child, port = _listening_child()
    try:
        result = _cli("broker", "--port", str(port))
    finally:
        child.kill()
        child.wait()
    # Before: "embedded broker listening on ..." and exit 0, the readiness probe answered by the other process.
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert f"--port: cannot listen on 127.0.0.1:{port}" in result.stderr and f"PID {child.pid}" in result.stderr
    invalid = _cli("broker", "--port", "99999")
    assert invalid.returncode == 2 and "is not a port number from 0 to 65535" in invalid.stderr


def test_run_refuses_an_embedded_port_another_process_holds(tmp_path):
    child, port = _listening_child()
    config = tmp_path / "monitor.toml"
    config.write_text(
        f'[kafka]\nembedded_port = {port}\nconnect_timeout = 1\n[state]\ndir = "{tmp_path / "state"}"\n'
        f'[rules]\npaths = ["{ROOT / "rules"}"]\n[http]\nenabled = false\n'
        f'[[feeds.feed]]\nurl = "{SEEDS / "world-news.rss.xml"}"\n'
    )
    try:
        result = _cli("run", "--once", "--config", str(config))
    finally:
        child.kill()
        child.wait()
    # Before: the other process was taken for the embedded broker (exit 3 here; a real broker there got the alerts).
    assert result.returncode == 2, result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("news-monitor: error:")]
    assert len(error) == 1 and f"[kafka] embedded_port: cannot listen on 127.0.0.1:{port}" in error[0]


def test_a_stop_signal_after_the_run_is_over_changes_nothing(tmp_path):
    """A second Ctrl-C landing as the process exits (after monitor.stopped): exit with the
    run's own code, no traceback. Sent right after main() returns, the window is hit every
    time (before: KeyboardInterrupt with a traceback, or death by SIGTERM)."""
    config = tmp_path / "monitor.toml"
    config.write_text(
        f'[state]\ndir = "{tmp_path / "state"}"\n[rules]\npaths = ["{ROOT / "rules"}"]\n[http]\nenabled = false\n'
        f'[feeds]\nparse_workers = 0\n[log]\nlevel = "error"\n[[feeds.feed]]\nurl = "{SEEDS / "world-news.rss.xml"}"\n'
    )
    script = (
        "import os, signal, sys\n"
        "from monitor import cli\n"
        f"code = cli.main(['run', '--once', '--config', {str(config)!r}])\n"
        "os.kill(os.getpid(), signal.SIGINT)\n"
        "os.kill(os.getpid(), signal.SIGTERM)\n"
        "print('exiting with', code)\n"
        "sys.exit(code)\n"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NEWS_MONITOR_")}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "exiting with 0" in result.stdout and "3 raised, 3 acknowledged" in result.stdout
    assert "Traceback" not in result.stderr


def test_port_holder_with_a_line_break_in_its_command_stays_on_one_line():
    from monitor.adapters.processes import describe_holders

    child, port = _listening_child()
    try:
        described = describe_holders(port)
    finally:
        child.kill()
        child.wait()
    assert f"PID {child.pid}" in described and "\n" not in described


@pytest.mark.parametrize(("option", "value"), [("--timeout", "nan"), ("--timeout", "inf"), ("--timeout", "-1"), ("--timeout", "0")])
def test_tail_refuses_a_timeout_that_is_not_above_0(option, value):
    # Before: nan and inf were a traceback, -1 and 0 stopped at once with exit 0.
    result = _cli("tail", "alerts.summit", "--bootstrap-servers", f"127.0.0.1:{free_port()}", option, value)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "--timeout must be a number of seconds above 0" in result.stderr


def test_tail_on_an_unreachable_broker_exits_3_without_an_unclosed_consumer():
    result = _cli("tail", "alerts.summit", "--bootstrap-servers", f"127.0.0.1:{free_port()}")
    assert result.returncode == 3
    assert "news-monitor: error: cannot read from Kafka" in result.stderr
    assert "Unclosed AIOKafkaConsumer" not in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("how", ["run", "run --once", "run --role matcher"])
def test_run_with_no_enabled_rule_exits_2_naming_the_rules_and_the_setting(tmp_path, how):
    # Before: the daemon started and alerted on nothing, without a word.
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "old.yaml.disabled").write_text("rules: []\n")
    config = tmp_path / "monitor.toml"
    config.write_text(
        f'[kafka]\nbootstrap_servers = "127.0.0.1:{free_port()}"\nconnect_timeout = 1\n[state]\ndir = "{tmp_path / "state"}"\n'
        f'[rules]\npaths = ["{rules}"]\n[http]\nenabled = false\n[[feeds.feed]]\nurl = "{SEEDS / "world-news.rss.xml"}"\n'
    )
    result = _cli(*how.split(), "--config", str(config))
    assert result.returncode == 2
    assert result.stderr == (
        f"news-monitor: error: no enabled rule in {rules}: no rule file (*.yaml or *.yml) found (the monitor would alert "
        "on nothing; add or enable a rule, check [rules] paths, or set [rules] allow_empty = true to start with no rules)\n"
    )
