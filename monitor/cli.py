"""The ``news-monitor`` command line. Builds settings and adapters; nothing imports it.

Exit codes: 0 ok; 1 a check failed (``rules check``/``test``/``eval``, ``notify --test``); 2 bad usage,
config or rule files, or a state store that cannot be used; 3 the broker could not be
reached; 4 ``run --once`` finished but gave up on some record (dead-lettered, or left
in the outbox).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import orjson

from monitor import __version__
from monitor.errors import BrokerError, MonitorError
from monitor.feeds.health import PAGE_ROWS

if TYPE_CHECKING:  # the commands import what they need when they run: --help stays fast
    from monitor.observe.summary import RunSummary
    from monitor.settings import Settings
    from monitor.worker import Monitor

__all__ = ["main"]

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2
EXIT_BROKER = 3
EXIT_DEAD_LETTERS = 4

_EPILOG_RUN = """examples:
  news-monitor run --once                    poll every feed once, print a summary, exit
  news-monitor run                           run as a daemon until SIGINT/SIGTERM (a second one: stop at once)
  kill -HUP <pid>                            reload the rules and the feed list of a running daemon
  news-monitor run --config /etc/news-monitor/monitor.toml
  NEWS_MONITOR_KAFKA_BOOTSTRAP_SERVERS=kafka:9092 news-monitor run
  news-monitor run --role matcher            one role of a cluster on a shared Kafka (docs/scaling.md)
"""


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="TOML config file (default: $NEWS_MONITOR_CONFIG, else ./monitor.toml, else built-in defaults)",
    )


def _positive_int(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return int(text)


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number from 0 to 65535")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    """The ``news-monitor`` argument parser: one sub-command per function below."""
    parser = argparse.ArgumentParser(
        prog="news-monitor",
        description="Streaming news-alert monitor: polls RSS/Atom/JSON feeds, matches rules, publishes alerts to Kafka.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit codes: 0 ok, 1 check failed, 2 bad usage/config/rules, 3 broker unreachable,\n"
        "4 run --once dead-lettered a record; 2 also for a state store that cannot be used\n"
        "run 'news-monitor COMMAND --help' for a command's options and examples",
    )
    parser.add_argument("--version", action="version", version=f"news-monitor {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True
    for add in (
        _add_run,
        _add_tail,
        _add_notify,
        _add_signals,
        _add_match,
        _add_broker,
        _add_status,
        _add_rules,
        _add_feeds,
        _add_backtest,
    ):
        add(commands)
    return parser


def _command(commands: Any, name: str, help: str, epilog: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=help, epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    return parser


def _add_run(commands: Any) -> None:
    run = _command(commands, "run", "run the monitor (daemon, or --once)", _EPILOG_RUN)
    _add_config(run)
    run.add_argument(
        "--once", action="store_true", help="poll every feed once, wait for every alert to be acknowledged, print a summary, exit"
    )
    run.add_argument(
        "--role",
        metavar="ROLES",
        help="run as part of a cluster on a shared Kafka: poller, matcher or poller,matcher (docs/scaling.md); "
        "default: every stage in this one process",
    )
    run.set_defaults(handler=_cmd_run)


def _add_tail(commands: Any) -> None:
    tail = _command(
        commands,
        "tail",
        "print alerts (and signals, from <topic>.signals; feed-health events) from a topic as JSON lines",
        "examples:\n  news-monitor tail alerts.summit --from-beginning --max 1\n"
        "  news-monitor tail alerts.sanctions --group analyst-desk --format table\n"
        "  news-monitor tail alerts.summit --from-beginning --since 2026-11-25T00:00:00Z\n",
    )
    _add_config(tail)
    tail.add_argument("topic", nargs="+", help="topic(s) to read, e.g. alerts.summit")
    tail.add_argument("--from-beginning", action="store_true", help="start at the oldest message instead of new ones")
    tail.add_argument("--max", type=int, metavar="N", help="stop after N messages")
    tail.add_argument("--group", metavar="ID", help="consumer group (commits offsets, so the next tail continues)")
    tail.add_argument(
        "--since", metavar="TIME", help="only alerts detected at or after TIME: ISO 8601, or a duration back from now (30m, 12h, 7d)"
    )
    tail.add_argument("--format", choices=("json", "table"), default="json", help="output format (default json lines)")
    tail.add_argument("--timeout", type=float, metavar="SECONDS", help="stop after SECONDS (above 0) without a message")
    tail.add_argument("--bootstrap-servers", metavar="HOST:PORT", help="override [kafka] bootstrap_servers")
    tail.set_defaults(handler=_cmd_tail)


def _add_match(commands: Any) -> None:
    match = _command(
        commands,
        "match",
        "match one article offline and explain which rules fire",
        "the article is plain text, HTML, or a JSON object with title/summary/body (or text)\n"
        "examples:\n  news-monitor match article.txt\n  curl -s https://example.org/story | news-monitor match -\n"
        "  news-monitor match --rules rules/summit.yaml story.json\n",
    )
    _add_config(match)
    match.add_argument("file", help="article file, or - for standard input")
    match.add_argument("--rules", nargs="+", metavar="PATH", help="rule files or folders (default: [rules] paths)")
    match.set_defaults(handler=_cmd_match)


def _add_broker(commands: Any) -> None:
    broker = _command(
        commands,
        "broker",
        "run the embedded Kafka-protocol broker in the foreground",
        "example:\n  news-monitor broker --port 9092 &\n  NEWS_MONITOR_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092 news-monitor run --once\n",
    )
    broker.add_argument(
        "--port", type=_port, default=9092, help="loopback port to listen on (default 9092; 0: any free port, printed at start)"
    )
    broker.set_defaults(handler=_cmd_broker)


def _add_status(commands: Any) -> None:
    status = _command(
        commands,
        "status",
        "print feed health from the state store: a summary, then the feeds, worst first (works while the daemon runs)",
        "health: ok, stale (no new item for much longer than usual), failing (polls fail),\n"
        "disabled (HTTP 410). Feeds are listed worst health first, then the most recent new item;\n"
        f"the first {PAGE_ROWS} unless --limit or --all says otherwise. The summary line (counts by health)\n"
        "goes to stderr for the plain and JSON formats. Exit code 0 when every feed is ok, 1 when any is not.\n"
        "--cluster reads the feeds and their state from Kafka ([cluster] feeds_topic and feed_state_topic) and adds\n"
        "each feed's owner (the poller that polls it); exit code 2 when there is no feeds topic, 3 when the broker\n"
        "cannot be read.\n"
        "examples:\n  news-monitor status\n  news-monitor status --config /etc/news-monitor/monitor.toml\n"
        "  news-monitor status --cluster --format plain\n"
        "  news-monitor status --all --format json | jq -r 'select(.health != \"ok\") | .url'\n",
    )
    _add_config(status)
    status.add_argument(
        "--format",
        choices=("auto", "table", "plain", "json"),
        default="auto",
        help="table (rich, the default on a terminal), plain aligned text (default otherwise), or JSON lines",
    )
    shown = status.add_mutually_exclusive_group()
    shown.add_argument("--limit", type=_positive_int, default=PAGE_ROWS, metavar="N", help=f"show the first N feeds (default {PAGE_ROWS})")
    shown.add_argument("--all", action="store_true", help="show every feed")
    status.add_argument(
        "--cluster", action="store_true", help="every feed of the cluster (run --role poller), with its owner, read from Kafka"
    )
    status.set_defaults(handler=_cmd_status)


def _add_rules(commands: Any) -> None:
    rules = _command(
        commands,
        "rules",
        "check, test and evaluate rule files",
        "examples:\n  news-monitor rules check\n  news-monitor rules test rules/\n"
        "  news-monitor rules eval tests/data/labeled.jsonl --rules rules/\n"
        "run 'news-monitor rules SUBCOMMAND --help' for each one's options\n",
    )
    rule_commands = rules.add_subparsers(dest="rules_command", metavar="SUBCOMMAND")
    rule_commands.required = True
    for name, help, epilog, handler in (
        (
            "check",
            "validate rule files (exit 1 on any error)",
            "examples:\n  news-monitor rules check\n  news-monitor rules check rules/summit.yaml\n",
            _cmd_rules_check,
        ),
        (
            "test",
            "run every rule's examples: texts, and expected signals (exit 1 on a failure)",
            "examples:\n  news-monitor rules test\n  news-monitor rules test rules/\n",
            _cmd_rules_test,
        ),
    ):
        command = _command(rule_commands, name, help, epilog)
        _add_config(command)
        command.add_argument("paths", nargs="*", help="rule files or folders (default: [rules] paths)")
        command.set_defaults(handler=handler)
    evaluate = _command(
        rule_commands,
        "eval",
        "precision/recall/F1 of the rules on a labeled JSON-lines set",
        "example:\n  news-monitor rules eval tests/data/labeled.jsonl --rules rules/\n",
    )
    _add_config(evaluate)
    evaluate.add_argument("labeled", help='JSON lines: {"id": ..., "text": ..., "labels": [...]}')
    evaluate.add_argument("--rules", nargs="+", metavar="PATH", help="rule files or folders (default: [rules] paths)")
    evaluate.add_argument(
        "--by", choices=["lang"], help="also report per rule and language (a line's lang, else the detected one)"
    )
    evaluate.set_defaults(handler=_cmd_rules_eval)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``news-monitor`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.handler(args)
        return code
    except BrokerError as exc:
        _error(exc)
        return EXIT_BROKER
    except MonitorError as exc:
        _error(exc)
        return EXIT_USAGE
    except OSError as exc:
        # Files, permissions, ports: the operator's to fix, so one line, not a traceback.
        _error(f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_OK


def _error(exc: BaseException | str, stream: TextIO | None = None) -> None:
    lines = str(exc).splitlines() or [type(exc).__name__]
    stream = stream or sys.stderr
    stream.write(f"news-monitor: error: {lines[0]}\n")
    for line in lines[1:]:
        stream.write(f"  {line}\n")


def _settings(args: argparse.Namespace) -> Settings:
    import os

    from monitor import redact
    from monitor.log import configure_logging
    from monitor.settings import load_settings

    path = getattr(args, "config", None) or os.environ.get("NEWS_MONITOR_CONFIG")
    settings = load_settings(path, required=path is not None)
    redact.configure(settings.feeds.redact_params)
    configure_logging(settings.log.level, settings.log.format)
    return settings


def _rule_paths(args: argparse.Namespace, given: Sequence[str] | None) -> list[str]:
    if given:
        return list(given)
    return [str(p) for p in _settings(args).rule_paths]


# -- run -------------------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> int:
    if args.role is not None:
        return _cmd_run_roles(args)
    from monitor.worker import Monitor

    settings = _settings(args)
    monitor = Monitor(settings)
    summary = _run_once_with_progress(monitor) if args.once and sys.stderr.isatty() else asyncio.run(monitor.run(once=args.once))
    _ignore_late_stop_signals()
    if args.once:
        _print_summary(summary, sys.stdout)
        if summary.dead_lettered or summary.abandoned:
            return EXIT_DEAD_LETTERS
    return EXIT_OK


def _cmd_run_roles(args: argparse.Namespace) -> int:
    """``run --role``: the roles of a cluster (monitor.app.roles); exit 0 once stopped."""
    from monitor.cluster import parse_roles

    try:
        roles = parse_roles(args.role)
    except ValueError as exc:
        raise MonitorError(str(exc)) from exc
    if args.once:
        raise MonitorError("--once cannot be combined with --role", hint="a role runs until SIGINT/SIGTERM; use run --once without --role")
    from monitor.app.roles import RoleHost

    host = RoleHost(_settings(args), roles)
    asyncio.run(host.run())
    _ignore_late_stop_signals()
    return EXIT_OK


def _ignore_late_stop_signals() -> None:
    """The run (of ``run``, ``notify``, ``signals``) is over: a SIGINT/SIGTERM from now on
    (a second Ctrl-C just too late) changes nothing, and the process exits with its own
    code. asyncio has put the default handlers back, which would kill it by the signal, or
    raise KeyboardInterrupt with a traceback."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def _run_once_with_progress(monitor: Monitor) -> RunSummary:
    """``run --once`` on a terminal: a progress bar over the feeds on stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("polling feeds"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task("feeds", total=len(monitor.feeds))
        monitor.observer.poll_listeners.append(lambda _report: progress.advance(task))
        return asyncio.run(monitor.run(once=True))


def _cmd_status(args: argparse.Namespace) -> int:
    import time

    from monitor.app.status import feed_tracker, push_states
    from monitor.observe.status import status

    now = time.time()
    limit = None if args.all else args.limit
    settings = _settings(args)
    if args.cluster:
        from monitor.app.cluster_status import cluster_tracker

        tracker, owners = asyncio.run(cluster_tracker(settings, now=now))
        return status(tracker, sys.stdout, now=now, fmt=args.format, limit=limit, owners=owners)
    tracker = feed_tracker(settings, now=now)
    return status(tracker, sys.stdout, now=now, fmt=args.format, limit=limit, push=push_states(settings))


def _print_summary(summary: RunSummary, out: TextIO) -> None:
    from monitor.redact import scrub

    out.write(f"feeds polled:   {summary.polls} of {summary.feeds}")
    # Unchanged: 304, or the same bytes as the last poll (so no article was read again).
    notes = [f"{count} {what}" for count, what in ((summary.unchanged, "unchanged"), (summary.failures, "failed")) if count]
    out.write(f" ({', '.join(notes)})\n" if notes else "\n")
    for _url, error in summary.failed:
        # The error names the feed url, which may carry credentials: masked.
        out.write(f"  failed: {scrub(error)}\n")
    if summary.failures > len(summary.failed):
        out.write(f"  ... and {summary.failures - len(summary.failed)} earlier failures (see the log)\n")
    out.write(f"new articles:   {summary.new_articles} ({summary.duplicates} already seen)\n")
    total = sum(summary.alerts_by_topic.values())
    out.write(f"alerts:         {total} raised, {summary.published} acknowledged by Kafka\n")
    for topic, count in sorted(summary.alerts_by_topic.items()):
        out.write(f"  {topic:<28} {count}\n")
    if summary.signals or summary.signals_published:
        out.write(f"signals:        {sum(summary.signals.values())} raised, {summary.signals_published} acknowledged by Kafka\n")
        kinds: dict[str, list[str]] = {}
        for (topic, kind), count in sorted(summary.signals.items()):
            kinds.setdefault(topic, []).append(f"{kind} {count}")
        for topic, counts in kinds.items():
            out.write(f"  {topic:<28} {', '.join(counts)}\n")
    if summary.dead_lettered:
        out.write(f"dead-lettered:  {summary.dead_lettered} (on the dead-letter topic, with the reason in dlq_reason)\n")
    if summary.abandoned:
        out.write(f"given up:       {summary.abandoned} (the dead-letter topic refused them too; see the log)\n")
    if summary.undelivered:
        out.write(f"undelivered:    {summary.undelivered} (kept in the outbox; sent on the next run)\n")


# -- tail ------------------------------------------------------------------------------


def _cmd_tail(args: argparse.Namespace) -> int:
    settings = _settings(args)
    bootstrap = args.bootstrap_servers or settings.kafka.bootstrap_servers
    if bootstrap.strip().lower() == "embedded":
        raise MonitorError(
            "tail needs a running broker; the embedded one lives only as long as 'run'",
            hint="start one with 'news-monitor broker' and set NEWS_MONITOR_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092, "
            "or pass --bootstrap-servers",
        )
    if args.bootstrap_servers:
        from monitor.settings import bootstrap_addresses

        try:
            bootstrap_addresses(bootstrap)
        except ValueError as exc:
            raise MonitorError(f"--bootstrap-servers: {exc}", hint="host:port entries separated by commas, e.g. kafka-1:9092") from exc
    since = _since(args.since) if args.since else None
    if args.max is not None and args.max < 1:
        raise MonitorError("--max must be at least 1")
    if args.timeout is not None and not (math.isfinite(args.timeout) and args.timeout > 0):
        raise MonitorError(f"--timeout must be a number of seconds above 0, got {args.timeout:g}")
    try:
        return asyncio.run(_tail(settings, bootstrap, args, since))
    except KeyboardInterrupt:
        return EXIT_OK


async def _tail(settings: Settings, bootstrap: str, args: argparse.Namespace, since: datetime | None) -> int:
    """Print alerts; every record that is not one gets a line on stderr and is passed over
    (committed with the group like the rest), so one bad record never stops a reader."""
    from aiokafka.errors import KafkaError

    from monitor.adapters.kafka import TopicReader, kafka_error_text

    shown = 0
    out = sys.stdout
    if args.format == "table":
        out.write(f"{'detected':<21} {'rule':<16} {'severity':<9} title\n")
    reader = TopicReader(
        settings.kafka,
        bootstrap,
        list(args.topic),
        from_beginning=args.from_beginning or since is not None,
        group=args.group,
        idle_timeout=args.timeout,
    )
    try:
        async with reader:
            async for record in reader.records():
                alert, problem = _decode(record.value)
                if alert is None:
                    sys.stderr.write(
                        f"news-monitor: skipped {record.topic} partition {record.partition} offset {record.offset}: {problem}\n"
                    )
                    sys.stderr.flush()
                elif since is None or _detected_since(alert, since):
                    # Re-serialised: one JSON object per line, whatever the producer's layout.
                    out.write(_table_row(alert) if args.format == "table" else orjson.dumps(alert).decode() + "\n")
                    out.flush()
                    shown += 1
                # Committed with the group only once printed, skipped by --since, or reported.
                reader.processed(record)
                if args.max is not None and shown >= args.max:
                    break
    except KafkaError as exc:
        raise BrokerError(f"cannot read from Kafka at {bootstrap}: {kafka_error_text(exc)}") from exc
    return EXIT_OK


def _decode(value: bytes | None) -> tuple[dict[str, Any] | None, str]:
    """The alert, signal or feed-health event in a record value, or None and why it is none."""
    from monitor.delivery.records import alert_problem, health_problem, signal_problem

    if not value:
        return None, "empty value, not an alert"
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return None, f"not JSON ({exc})"
    if isinstance(decoded, dict) and "signal_id" in decoded:
        problem = signal_problem(decoded)
    elif isinstance(decoded, dict) and _is_health_event(decoded):
        problem = health_problem(decoded)
    else:
        problem = alert_problem(decoded)
    return (None, problem) if problem is not None else (decoded, "")


def _is_health_event(document: dict[str, Any]) -> bool:
    """Whether a decoded record is a feed-health event (an event id, no alert id)."""
    return "event_id" in document and "alert_id" not in document


def _since(text: str) -> datetime:
    """``tail --since``: the TIME of ``backtest`` (ISO 8601, no zone: UTC; or ``30m``, ``12h``, ``7d`` back from now)."""
    import time

    from monitor.cluster.backtest import parse_moment

    try:
        return datetime.fromtimestamp(parse_moment(text, time.time(), "--since"), UTC)
    except ValueError as exc:
        raise MonitorError(str(exc)) from exc


def _parse_time(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise MonitorError(f"--since {text!r} is not an ISO-8601 time", hint="e.g. 2026-11-25T08:00:00Z") from exc
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _detected_since(alert: dict[str, Any], since: datetime) -> bool:
    detected = alert.get("detected_at", alert.get("at"))
    if not isinstance(detected, str):
        return False
    try:
        return _parse_time(detected) >= since
    except MonitorError:
        return False


def _table_row(alert: dict[str, Any]) -> str:
    """One table line of a checked alert, signal or feed-health event (see ``alert_problem``,
    ``signal_problem``, ``health_problem``); control characters in its text cannot break the line."""
    if _is_health_event(alert):
        change = _cell(f"{alert['feed_url']}: {alert['previous']} -> {alert['health']}: {alert['reason']}")[:80]
        return f"{_cell(alert['at'])[:19]:<21} {'feed-health':<16} {_cell(alert['health']):<9} {change}\n"
    if "signal_id" in alert:
        counts, latest = alert["counts"], alert["latest_article"].get("title")
        title = _cell(f"{alert['kind']}: {counts.get('articles')} articles, {counts.get('outlets')} outlets: {latest}")[:80]
    else:
        title = _cell(alert["article"]["title"])[:80]
    return f"{_cell(alert['detected_at'])[:19]:<21} {_cell(alert['rule_id']):<16} {_cell(alert['severity']):<9} {title}\n"


def _cell(text: str) -> str:
    """``text`` on one line, without control characters (a terminal escape in a record
    must not reach the operator's terminal)."""
    return " ".join("".join(c if c.isprintable() else " " for c in text).split())


# -- notify ----------------------------------------------------------------------------


def _add_notify(commands: Any) -> None:
    notify = _command(
        commands,
        "notify",
        "send alerts from Kafka to Slack, Teams, email, ntfy or webhooks ([[notify.destination]] tables)",
        "runs until SIGINT/SIGTERM; docs/notify.md has worked examples for each service\n"
        "exit codes: 0 stopped (or --test sent), 1 --test failed, 2 bad config or state directory, 3 broker unreachable\n"
        "examples:\n  news-monitor notify --config /etc/news-monitor/monitor.toml\n"
        "  news-monitor notify --test desk-slack       send a sample alert to one destination, then exit\n",
    )
    _add_config(notify)
    notify.add_argument("--test", metavar="DESTINATION", help="send a sample message to the destination of this name and exit")
    notify.add_argument("--bootstrap-servers", metavar="HOST:PORT", help="override [kafka] bootstrap_servers")
    notify.set_defaults(handler=_cmd_notify)


def _cmd_notify(args: argparse.Namespace) -> int:
    import os

    settings = _settings(args)
    if args.bootstrap_servers:
        from monitor.settings import bootstrap_addresses

        try:
            bootstrap_addresses(args.bootstrap_servers)
        except ValueError as exc:
            raise MonitorError(f"--bootstrap-servers: {exc}", hint="host:port entries separated by commas, e.g. kafka-1:9092") from exc
    destinations = settings.notify_destinations(os.environ)
    if args.test is not None:
        from monitor.app.notify import send_test

        chosen = [d for d in destinations if d.name == args.test]
        if not chosen:
            names = ", ".join(d.name for d in destinations) or "none"
            raise MonitorError(f"--test {args.test!r}: no [[notify.destination]] has that name", hint=f"destinations: {names}")
        shown, error = asyncio.run(send_test(chosen[0], settings.notify.send_timeout))
        if error is not None:
            sys.stderr.write(f"news-monitor: test message to {args.test} ({shown}) failed: {error}\n")
            return EXIT_CHECK_FAILED
        sys.stdout.write(f"sent a test message to {args.test} ({shown})\n")
        return EXIT_OK
    from monitor.app.notify import NotifyProcess

    process = NotifyProcess(settings, bootstrap_servers=args.bootstrap_servers, destinations=destinations)
    code: int = asyncio.run(process.run())
    _ignore_late_stop_signals()
    return code


def _add_signals(commands: Any) -> None:
    signals = _command(
        commands,
        "signals",
        "story signals from the matchers' sightings, for matching in several processes (docs/signals.md)",
        "runs until SIGINT/SIGTERM; the daemon raises the same signals itself unless [signals] enabled = false\n"
        "exit codes: 0 stopped, 2 bad config, rules or state directory, 3 broker unreachable\n"
        "example:\n  news-monitor signals --config /etc/news-monitor/monitor.toml\n",
    )
    _add_config(signals)
    signals.add_argument("--bootstrap-servers", metavar="HOST:PORT", help="override [kafka] bootstrap_servers")
    signals.set_defaults(handler=_cmd_signals)


def _cmd_signals(args: argparse.Namespace) -> int:
    from monitor.app.signals import SignalsProcess

    settings = _settings(args)
    code: int = asyncio.run(SignalsProcess(settings, bootstrap_servers=args.bootstrap_servers).run())
    _ignore_late_stop_signals()
    return code


# -- match -----------------------------------------------------------------------------


def _cmd_match(args: argparse.Namespace) -> int:
    from monitor.engine import load_rules
    from monitor.engine.tools import explain
    from monitor.parse.textinput import article_from_input

    ruleset = load_rules(_rule_paths(args, args.rules))
    if args.file == "-":
        raw, name = sys.stdin.buffer.read(), "<stdin>"
    else:
        try:
            raw, name = Path(args.file).read_bytes(), args.file
        except OSError as exc:
            raise MonitorError(f"{args.file}: cannot read: {exc.strerror or exc}") from exc
    lines = explain(article_from_input(raw, name), ruleset)
    if not lines:
        # stdout stays JSON lines only; a person still sees that the article was matched.
        enabled = sum(rule.enabled for rule in ruleset.rules)
        sys.stderr.write(f"no rule fired on {name} ({enabled} enabled rules)\n")
    for line in lines:
        sys.stdout.write(orjson.dumps(line).decode() + "\n")
    return EXIT_OK


# -- broker ----------------------------------------------------------------------------


def _cmd_broker(args: argparse.Namespace) -> int:
    import signal

    from monitor.adapters.broker import EmbeddedBroker

    broker = EmbeddedBroker(port=args.port, setting="--port").start()
    sys.stderr.write(
        f"embedded broker listening on {broker.bootstrap_servers} (data in memory; Ctrl-C stops it)\n"
        f"  point the monitor at it: NEWS_MONITOR_KAFKA_BOOTSTRAP_SERVERS={broker.bootstrap_servers}\n"
    )
    sys.stderr.flush()

    def _terminate(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    try:
        broker.wait()
    except KeyboardInterrupt:
        pass
    finally:
        broker.stop()
    return EXIT_OK


# -- rules -----------------------------------------------------------------------------


def _cmd_rules_check(args: argparse.Namespace) -> int:
    from monitor.engine import tools

    return tools.check(_rule_paths(args, args.paths), sys.stdout)


def _cmd_rules_test(args: argparse.Namespace) -> int:
    from monitor.engine import tools

    return tools.test(_rule_paths(args, args.paths), sys.stdout)


def _cmd_rules_eval(args: argparse.Namespace) -> int:
    from monitor.engine import tools

    return tools.evaluate(args.labeled, _rule_paths(args, args.rules), sys.stdout, by_lang=args.by == "lang")


# -- feeds sync ------------------------------------------------------------------------


def _add_feeds(commands: Any) -> None:
    feeds = _command(
        commands,
        "feeds",
        "manage the cluster's feed list on Kafka",
        "examples:\n  news-monitor feeds sync --dry-run\n  news-monitor feeds sync --format json\n"
        "run 'news-monitor feeds sync --help' for its options\n",
    )
    feed_commands = feeds.add_subparsers(dest="feeds_command", metavar="SUBCOMMAND")
    feed_commands.required = True
    sync = _command(
        feed_commands,
        "sync",
        "publish the configured feeds to [cluster] feeds_topic (only what changed)",
        "reads the topic, then publishes the new and changed feeds and a tombstone for each feed no\n"
        'longer listed (docs/scaling.md, "Feeds sync"); a second run publishes nothing\n'
        "exit codes: 0 ok, 2 bad config (or the embedded broker), 3 broker unreachable\n"
        "examples:\n  news-monitor feeds sync --dry-run\n  news-monitor feeds sync --config /etc/news-monitor/monitor.toml\n",
    )
    _add_config(sync)
    sync.add_argument("--dry-run", action="store_true", help="say what would change; publish and create nothing")
    sync.add_argument("--format", choices=("text", "json"), default="text", help="text (default) or one JSON object")
    sync.set_defaults(handler=_cmd_feeds_sync)


def _cmd_feeds_sync(args: argparse.Namespace) -> int:
    from monitor.app.feeds_sync import sync_feeds
    from monitor.feeds.sources import load_feeds

    settings = _settings(args)
    outcome = asyncio.run(sync_feeds(settings, load_feeds(settings), dry_run=args.dry_run))
    for problem in outcome.skipped:
        sys.stderr.write(f"news-monitor: warning: {outcome.topic}: passed over {problem}\n")
    from monitor.redact import scrub

    plan = outcome.plan
    counts = plan.summary()
    if args.format == "json":
        document = {
            "topic": outcome.topic,
            "partitions": outcome.partitions,
            "dry_run": outcome.dry_run,
            "created": outcome.created,
            **counts,
            "skipped": len(outcome.skipped),
            "feeds": {name: [scrub(url) for url in getattr(plan, name)] for name in ("added", "changed", "moved", "removed")},
        }
        sys.stdout.write(orjson.dumps(document).decode() + "\n")
        return EXIT_OK
    if outcome.dry_run:
        for outcome_name in ("added", "changed", "removed"):
            for url in getattr(plan, outcome_name):
                moved = " (moves partition)" if url in plan.moved else ""
                sys.stdout.write(f"would be {outcome_name}: {scrub(url)}{moved}\n")
    verb = "would publish" if outcome.dry_run else "published"
    sys.stdout.write(
        f"{outcome.topic}: {counts['added']} added, {counts['changed']} changed, {counts['removed']} removed, "
        f"{counts['unchanged']} unchanged ({verb} {counts['records']} records; {outcome.partitions} partitions)\n"
    )
    return EXIT_OK


# -- backtest --------------------------------------------------------------------------


def _add_backtest(commands: Any) -> None:
    backtest = _command(
        commands,
        "backtest",
        "run candidate rules over the articles topic and print what they would have alerted",
        "reads [cluster] articles_topic when a [cluster] section or NEWS_MONITOR_CLUSTER_* is set, else\n"
        '[kafka] articles_topic; publishes nothing (docs/scaling.md, "Backtest")\n'
        "TIME is an ISO 8601 time (UTC when it has no zone) or a duration back from now: 90s, 30m, 12h, 7d\n"
        "exit codes: 0 ok, 2 bad usage, config or rules, 3 broker unreachable\n"
        "examples:\n  news-monitor backtest --rules rules/candidate.yaml --since 7d\n"
        "  news-monitor backtest --rules rules/ --since 2026-11-25T00:00:00Z --until 2026-11-26T00:00:00Z --format json\n",
    )
    _add_config(backtest)
    backtest.add_argument("--rules", nargs="+", required=True, metavar="PATH", help="candidate rule files or folders")
    backtest.add_argument("--since", metavar="TIME", help="only articles written to the topic at or after TIME (default: all)")
    backtest.add_argument("--until", metavar="TIME", help="only articles written to the topic at or before TIME (default: now)")
    backtest.add_argument("--topic", metavar="NAME", help="read this topic instead of the configured articles topic")
    backtest.add_argument("--format", choices=("table", "json"), default="table", help="table (default) or one JSON object")
    backtest.set_defaults(handler=_cmd_backtest)


def _cmd_backtest(args: argparse.Namespace) -> int:
    import os
    import time

    from monitor.app.backtest import articles_topic, run_backtest
    from monitor.cluster.backtest import parse_moment
    from monitor.engine import load_rules

    settings = _settings(args)
    now = time.time()
    try:
        since = parse_moment(args.since, now, "--since") if args.since else None
        until = parse_moment(args.until, now, "--until") if args.until else None
    except ValueError as exc:
        raise MonitorError(str(exc)) from exc
    if since is not None and until is not None and until < since:
        raise MonitorError(f"--until {args.until!r} is before --since {args.since!r}")
    if settings.kafka.embedded:
        raise MonitorError(
            "backtest needs a running broker; the embedded one lives only as long as 'run'",
            hint="set [kafka] bootstrap_servers (NEWS_MONITOR_KAFKA_BOOTSTRAP_SERVERS) to the broker holding the articles",
        )
    topic = args.topic or articles_topic(settings, os.environ)
    ruleset = load_rules(args.rules)
    result, starts = asyncio.run(run_backtest(settings, topic, ruleset, since=since, until=until, errors=sys.stderr))
    if result.bad:
        sys.stderr.write(f"news-monitor: {result.bad} records of {topic} in the span were not articles (skipped)\n")
    if args.format == "json":
        from monitor.timefmt import utc_iso

        document = {
            "topic": topic,
            "since": utc_iso(since) if since is not None else None,
            "until": utc_iso(until) if until is not None else None,
            "starts": {str(partition): how for partition, how in sorted(starts.items())},
            **result.to_dict(),
        }
        sys.stdout.write(orjson.dumps(document).decode() + "\n")
    else:
        _backtest_table(result, sys.stdout, f"{topic}, {_span(since, until)}")
    return EXIT_OK


def _span(since: float | None, until: float | None) -> str:
    from monitor.timefmt import utc_iso

    return f"{utc_iso(since) if since is not None else 'the beginning'} to {utc_iso(until) if until is not None else 'the end'}"


def _backtest_table(result: Any, out: TextIO, heading: str) -> None:
    """Counts per rule that fired (most first), then the matches, oldest first."""
    from monitor.timefmt import utc_iso

    out.write(f"{heading}: {result.articles} articles ({result.distinct} distinct ids), {result.bad} bad records\n")
    fired = sorted(((n, rule_id) for rule_id, n in result.rules.items() if n), key=lambda item: (-item[0], item[1]))
    out.write(f"{len(fired)} of {len(result.rules)} rules fired, {len(result.matches)} alerts\n")
    if not fired:
        return
    out.write(f"\n{'count':>7}  rule\n")
    for count, rule_id in fired:
        out.write(f"{count:>7}  {_cell(rule_id)}\n")
    out.write(f"\n{'time':<21} {'rule':<16} {'article id':<18} title\n")
    for match in result.matches:
        row = f"{utc_iso(match.time):<21} {_cell(match.rule_id):<16} {_cell(match.article_id)[:18]:<18} {_cell(match.title)[:80]}"
        out.write(row + "\n")
    if result.signals:
        out.write(f"\n{len(result.signals)} signals\n{'time':<21} {'kind':<6} {'rule':<16} {'articles':>8} {'outlets':>7}  window start\n")
        for signal in result.signals:
            row = f"{utc_iso(signal.window_end):<21} {signal.kind:<6} {_cell(signal.rule_id):<16} {signal.articles:>8}"
            out.write(f"{row} {len(signal.outlets):>7}  {utc_iso(signal.window_start)}\n")
