"""The command line as operators use it: real processes, real broker, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from monitor.adapters.broker import free_port, wait_for_port
from tests.support import ROOT, SEEDS

pytestmark = pytest.mark.integration


def _cli(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NEWS_MONITOR_")}
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        cwd=cwd,
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "monitor.toml"
    path.write_text(body)
    return path


def _sample_config(tmp_path: Path, bootstrap: str, extra: str = "") -> Path:
    return _config(
        tmp_path,
        f"""
[kafka]
bootstrap_servers = "{bootstrap}"
connect_timeout = 5
[state]
dir = "{tmp_path / 'state'}"
[feeds]
opml = "{SEEDS / 'feeds.opml'}"
[rules]
paths = ["{ROOT / 'rules'}"]
[http]
enabled = false
{extra}
""",
    )


def test_broker_command_then_run_once_then_tail(tmp_path):
    """The README's walk-through: a broker kept up, `run --once` pointed at it, `tail` shows the alert."""
    port = free_port()
    broker = subprocess.Popen(
        [sys.executable, "-m", "monitor", "broker", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert wait_for_port("127.0.0.1", port, 15), "the broker command did not start listening"
        env = {"NEWS_MONITOR_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}", "NEWS_MONITOR_STATE_DIR": str(tmp_path / "state")}
        run = _cli("run", "--once", env=env)
        assert run.returncode == 0, run.stderr[-2000:]
        assert "alerts.summit" in run.stdout and "alerts.sanctions" in run.stdout and "alerts.arms-control" in run.stdout
        assert "3 raised, 3 acknowledged" in run.stdout

        tail = _cli("tail", "alerts.summit", "--from-beginning", "--max", "1", "--timeout", "20", env=env)
        assert tail.returncode == 0, tail.stderr[-2000:]
        lines = [line for line in tail.stdout.splitlines() if line.strip()]
        assert len(lines) == 1
        alert = orjson.loads(lines[0])
        assert alert["rule_id"] == "summit"
        assert alert["article"]["url"].endswith("trump-putin-anchorage-meeting")

        again = _cli("run", "--once", env=env)
        assert again.returncode == 0
        assert "0 raised" in again.stdout
    finally:
        broker.terminate()
        assert broker.wait(10) == 0, "the broker command exits 0 on SIGTERM"


def test_missing_config_file_exits_2_naming_it(tmp_path):
    result = _cli("run", "--once", "--config", str(tmp_path / "nope.toml"))
    assert result.returncode == 2
    assert "nope.toml" in result.stderr and "not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_rules_eval_of_a_missing_labeled_file_exits_2_naming_it(tmp_path):
    """It printed '[Errno 2] ...' on stdout and exited 1, as if the rules had failed."""
    missing = tmp_path / "labeled.jsonl"
    result = _cli("rules", "eval", str(missing), "--rules", "rules/")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith(f"news-monitor: error: {missing}: cannot read the labeled file: No such file or directory (give ")
    assert "tests/data/labeled.jsonl" in result.stderr and len(result.stderr.splitlines()) == 1 and "Errno" not in result.stderr


def test_unknown_config_key_exits_2_with_suggestion(tmp_path):
    config = _config(tmp_path, "[feeds]\nintervall = 60\n")
    result = _cli("run", "--once", "--config", str(config))
    assert result.returncode == 2
    assert "intervall" in result.stderr and "interval" in result.stderr and str(config) in result.stderr


def test_invalid_toml_exits_2_with_line(tmp_path):
    config = _config(tmp_path, "[kafka]\nbootstrap_servers = \n")
    result = _cli("run", "--once", "--config", str(config))
    assert result.returncode == 2
    assert f"{config}:2:21: invalid TOML: Invalid value" in result.stderr


def test_invalid_rule_file_stops_startup_with_exit_2(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "bad.yaml").write_text("rules:\n  - id: broken\n    query: '(sanctions AND'\n")
    config = _sample_config(tmp_path, "127.0.0.1:1").read_text().replace(str(ROOT / "rules"), str(rules))
    path = _config(tmp_path, config)
    result = _cli("run", "--once", "--config", str(path))
    assert result.returncode == 2
    assert "bad.yaml:3" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_broker_fails_after_bounded_wait(tmp_path):
    dead = f"127.0.0.1:{free_port()}"
    config = _sample_config(tmp_path, dead).read_text().replace("connect_timeout = 5", "connect_timeout = 2")
    started = time.monotonic()
    result = _cli("run", "--once", "--config", str(_config(tmp_path, config)), timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 3
    assert dead in result.stderr and "cannot reach Kafka" in result.stderr
    # One readable line: neither the class name twice nor Python's tuples of the address.
    error = next(line for line in result.stderr.splitlines() if line.startswith("news-monitor: error:"))
    assert error.count("KafkaConnectionError") <= 1 and "AddressFamily" not in error, error
    assert elapsed < 30, "the wait for the broker is bounded by [kafka] connect_timeout"


def test_environment_overrides_config(tmp_path):
    config = _sample_config(tmp_path, "127.0.0.1:1")
    result = _cli(
        "run", "--once", "--config", str(config),
        env={"NEWS_MONITOR_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}", "NEWS_MONITOR_KAFKA_CONNECT_TIMEOUT": "1"},
    )
    assert result.returncode == 3
    assert "127.0.0.1:1 " not in result.stderr  # the file's value was overridden


def test_misspelt_environment_variable_is_an_error(tmp_path):
    config = _sample_config(tmp_path, "127.0.0.1:1")
    result = _cli("run", "--once", "--config", str(config), env={"NEWS_MONITOR_KAFKA_BOOTSTRAP_SERVER": "x:1"})
    assert result.returncode == 2
    assert "NEWS_MONITOR_KAFKA_BOOTSTRAP_SERVER" in result.stderr and "NEWS_MONITOR_KAFKA_BOOTSTRAP_SERVERS" in result.stderr


def test_match_reference_article_offline():
    seed = ROOT.parent / "shared" / "seeds" / "000_2d2ab9e6ed23a7ee.txt"
    if not seed.exists():
        pytest.skip("../shared/seeds is not present")
    result = _cli("match", str(seed))
    assert result.returncode == 0, result.stderr
    lines = [orjson.loads(line) for line in result.stdout.splitlines() if line.strip()]
    assert sorted(line["rule_id"] for line in lines) == ["arms-control", "sanctions", "summit"]
    for line in lines:
        assert line["topic"] == f"alerts.{line['rule_id']}"
        assert line["matches"] and all(m["field"] == "body" for m in line["matches"])
        assert line["snippet"]


def test_match_json_from_stdin_no_match():
    article = orjson.dumps({"title": "Climbers reach the summit of Everest", "body": "The team reached the summit at dawn."})
    result = subprocess.run(
        [sys.executable, "-m", "monitor", "match", "-"], input=article, capture_output=True, cwd=ROOT, timeout=60,
    )
    assert result.returncode == 0
    assert result.stdout.strip() == b""
    # One line on stderr, so a person can tell it ran.
    assert result.stderr.decode().splitlines() == ["no rule fired on <stdin> (3 enabled rules)"]


@pytest.mark.parametrize("command", [("rules", "check"), ("rules", "test")])
def test_default_rules_pass_check_and_examples(command):
    result = _cli(*command)
    assert result.returncode == 0, result.stdout + result.stderr


def test_help_has_examples():
    for args in (("run", "--help"), ("tail", "--help"), ("match", "--help"), ("broker", "--help")):
        result = _cli(*args)
        assert result.returncode == 0
        assert "example" in result.stdout.lower()
