"""A downstream consumer of news-monitor alerts: appends each alert once to a JSON-lines file.

The pattern every alert consumer needs, in ~100 lines:

* a consumer group, so several copies share the partitions and a restart continues
  where the last run stopped;
* manual commits, *after* processing: a batch is written and fsync'ed to the file
  first, its offsets are committed second. A crash in between re-reads the batch, never
  skips it (at-least-once);
* deduplication by ``alert_id``: the monitor delivers at least once, so the same alert
  can arrive twice (after a broker outage or a monitor crash). The ids already in the
  file are loaded at start, so duplicates are dropped across restarts too;
* validation: every record is checked against ``schemas/alert-v1.json`` before it is
  archived; one that is not a valid alert is skipped (its offset still committed) with
  a log line saying which record and why.

Run it::

    python examples/alert_consumer.py --bootstrap-servers 127.0.0.1:9092 \\
        --group alert-archive --output alerts.jsonl alerts.summit alerts.sanctions

It needs aiokafka and jsonschema (``pip install aiokafka jsonschema``), and the schema
file (``--schema``, by default ``schemas/alert-v1.json`` of this repository).
SIGINT/SIGTERM stop it cleanly (the last batch is committed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer
from jsonschema import Draft202012Validator

log = logging.getLogger("alert_consumer")

DEFAULT_SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "alert-v1.json"


def load_seen(path: Path) -> set[str]:
    """Alert ids already in the output file (a torn last line from a crash is skipped)."""
    seen: set[str] = set()
    if not path.exists():
        return seen
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            try:
                seen.add(json.loads(line)["alert_id"])
            except (ValueError, KeyError, TypeError):
                continue
    return seen


def load_validator(path: Path) -> Draft202012Validator:
    """A validator for the alert schema at ``path``, tolerant of fields it does not know.

    Within schema version 1 fields are only ever added, and consumers must ignore the
    ones they do not know: a newer monitor's alert must still pass an older copy of the
    schema, so ``additionalProperties: false`` is lifted (unknown fields are archived as
    they came). Everything the schema does say is checked.
    """
    schema = json.loads(path.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(_open_to_additions(schema))


def _open_to_additions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _open_to_additions(v) for k, v in node.items() if not (k == "additionalProperties" and v is False)}
    if isinstance(node, list):
        return [_open_to_additions(v) for v in node]
    return node


def decode(value: bytes | None, validator: Draft202012Validator) -> tuple[dict[str, Any] | None, str]:
    """The alert of a record and "", or None and why the record is not a valid alert."""
    if not value:
        return None, "empty value"
    try:
        alert = json.loads(value)
    except ValueError as exc:
        return None, f"not JSON: {exc}"
    errors = sorted(validator.iter_errors(alert), key=lambda error: list(error.absolute_path))
    if errors:
        where = "/".join(str(part) for part in errors[0].absolute_path) or "the record"
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        return None, f"not a valid alert: {where}: {errors[0].message[:200]}{more}"
    return alert, ""


async def consume(
    bootstrap_servers: str,
    group: str,
    topics: list[str],
    output: Path,
    *,
    stop: asyncio.Event,
    idle_exit: float | None = None,
    schema: Path = DEFAULT_SCHEMA,
) -> int:
    """Copy new alerts from ``topics`` to ``output``; returns how many were written."""
    validator = load_validator(schema)
    seen = load_seen(output)
    consumer = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    written = 0
    idle = 0.0
    await consumer.start()
    try:
        with output.open("a", encoding="utf-8") as sink:
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=500, max_records=500)
                if not batch:
                    idle += 0.5
                    if idle_exit is not None and idle >= idle_exit:
                        break
                    continue
                idle = 0.0
                for records in batch.values():
                    for record in records:
                        alert, reason = decode(record.value, validator)
                        if alert is None:
                            log.warning(
                                "skipped %s partition %d offset %d: %s", record.topic, record.partition, record.offset, reason
                            )
                            continue
                        if alert["alert_id"] in seen:
                            continue
                        sink.write(json.dumps(alert, ensure_ascii=False) + "\n")
                        seen.add(alert["alert_id"])
                        written += 1
                # Durable first, committed second: a crash here re-reads, never skips.
                sink.flush()
                os.fsync(sink.fileno())
                await consumer.commit()
    finally:
        await consumer.stop()
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description="Append news-monitor alerts to a JSON-lines file, once each.")
    parser.add_argument("topics", nargs="+", help="alert topics, e.g. alerts.summit")
    parser.add_argument("--bootstrap-servers", default="127.0.0.1:9092")
    parser.add_argument("--group", default="alert-archive", help="consumer group id")
    parser.add_argument("--output", type=Path, default=Path("alerts.jsonl"))
    parser.add_argument("--idle-exit", type=float, metavar="SECONDS", help="exit after SECONDS without a new record")
    parser.add_argument("--schema", type=Path, default=DEFAULT_SCHEMA, help="the alert JSON Schema (default: %(default)s)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        written = await consume(
            args.bootstrap_servers, args.group, args.topics, args.output, stop=stop, idle_exit=args.idle_exit, schema=args.schema
        )
        log.info("wrote %d new alert(s) to %s", written, args.output)
        return 0

    return asyncio.run(run())


if __name__ == "__main__":
    raise SystemExit(main())
