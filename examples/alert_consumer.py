"""A downstream consumer of news-monitor alerts: appends each alert once to a JSON-lines file.

The pattern every alert consumer needs, in ~100 lines:

* a consumer group, so several copies share the partitions and a restart continues
  where the last run stopped;
* manual commits, *after* processing: a batch is written and fsync'ed to the file
  first, its offsets are committed second. A crash in between re-reads the batch, never
  skips it (at-least-once);
* deduplication by ``alert_id``: the monitor delivers at least once, so the same alert
  can arrive twice (after a broker outage or a monitor crash). The ids already in the
  file are loaded at start, so duplicates are dropped across restarts too.

Run it::

    python examples/alert_consumer.py --bootstrap-servers 127.0.0.1:9092 \\
        --group alert-archive --output alerts.jsonl alerts.summit alerts.sanctions

Only aiokafka is needed. SIGINT/SIGTERM stop it cleanly (the last batch is committed).
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

log = logging.getLogger("alert_consumer")


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


def decode(value: bytes | None) -> dict[str, Any] | None:
    """The alert JSON of a record, or None when it is not an alert of schema version 1."""
    try:
        alert = json.loads(value or b"")
    except ValueError:
        return None
    if not isinstance(alert, dict) or alert.get("schema_version") != 1 or not isinstance(alert.get("alert_id"), str):
        return None
    return alert


async def consume(
    bootstrap_servers: str,
    group: str,
    topics: list[str],
    output: Path,
    *,
    stop: asyncio.Event,
    idle_exit: float | None = None,
) -> int:
    """Copy new alerts from ``topics`` to ``output``; returns how many were written."""
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
                        alert = decode(record.value)
                        if alert is None:
                            log.warning("skipped a record that is not an alert: %s[%d]@%d", record.topic, record.partition, record.offset)
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
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def run() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        written = await consume(args.bootstrap_servers, args.group, args.topics, args.output, stop=stop, idle_exit=args.idle_exit)
        log.info("wrote %d new alert(s) to %s", written, args.output)
        return 0

    return asyncio.run(run())


if __name__ == "__main__":
    raise SystemExit(main())
