"""The notify process's state: ``<state dir>/notify.sqlite3``, beside the daemon's own file.

Its own SQLite file (WAL mode, as ``monitor.sqlite3``) and its own lock
(``notify.lock``, :class:`~monitor.adapters.statelock.StateLock`), so a notify process
runs beside ``news-monitor run`` on the same state directory; two notify processes
cannot share one (each instance of a consumer group has its own directory). Tables:

``seen``
    The dedupe window: one row per destination and alert (or signal) id queued for it,
    kept ``[notify] dedupe_days`` after it was queued, and for as long as its entry waits.
``outbox``
    Messages not yet accepted by their destination: each with its record (topic,
    partition, offset, key, value, headers: what a dead letter needs), whether it is held
    for a digest, and its attempts. An entry is deleted once the destination accepted it
    or its dead letter was acknowledged.
``sends``
    When each destination was last sent something (its rate limit survives a restart).
``story_articles``
    Alerted articles per story, for the ``story_size`` template field.

Faults of the file or the disk come out as :class:`~monitor.errors.StoreError` (see
:func:`monitor.adapters.store.store_error`). :class:`AsyncNotifyStore` runs every call on
one thread.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson

from monitor.adapters.store import store_error
from monitor.notify.service import Entry, NewEntry

__all__ = ["AsyncNotifyStore", "NotifyStore"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seen (
    destination TEXT NOT NULL,
    key         TEXT NOT NULL,
    at          REAL NOT NULL,
    PRIMARY KEY (destination, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_at ON seen(at);

CREATE TABLE IF NOT EXISTS outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    destination  TEXT NOT NULL,
    key          TEXT NOT NULL,
    held         INTEGER NOT NULL,
    queued_at    REAL NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    last_error   TEXT,
    topic        TEXT NOT NULL,
    partition    INTEGER NOT NULL,
    "offset"     INTEGER NOT NULL,
    record_key   BLOB,
    value        BLOB NOT NULL,
    headers      BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(destination, held, seq);
CREATE INDEX IF NOT EXISTS outbox_key ON outbox(destination, key);

CREATE TABLE IF NOT EXISTS sends (
    destination TEXT NOT NULL,
    at          REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS sends_at ON sends(destination, at);

CREATE TABLE IF NOT EXISTS story_articles (
    story_id    TEXT NOT NULL,
    article_id  TEXT NOT NULL,
    at          REAL NOT NULL,
    PRIMARY KEY (story_id, article_id)
) WITHOUT ROWID;
"""

_FAULTS = (sqlite3.OperationalError, sqlite3.DatabaseError)
_BUGS = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError, sqlite3.NotSupportedError)
_COLUMNS = (
    'seq, destination, key, held, queued_at, attempts, next_attempt, topic, partition, "offset", '
    "record_key, value, headers, last_error"
)


def _entry(row: tuple[Any, ...]) -> Entry:
    headers = tuple((name, bytes.fromhex(value)) for name, value in orjson.loads(row[12]))
    return Entry(
        seq=row[0], destination=row[1], key=row[2], held=bool(row[3]), queued_at=row[4], attempts=row[5],
        next_attempt=row[6], topic=row[7], partition=row[8], offset=row[9], record_key=row[10], value=row[11],
        headers=headers, last_error=row[13],
    )  # fmt: skip


class NotifyStore:
    """Synchronous store (one thread at a time: :class:`AsyncNotifyStore`). Every method
    raises :class:`StoreError` for a fault of the file or the disk."""

    FILENAME = "notify.sqlite3"

    def __init__(self, state_dir: Path | str) -> None:
        self.path = Path(state_dir) / self.FILENAME
        db: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(_SCHEMA)
        except (*_FAULTS, OSError) as exc:
            if db is not None:
                db.close()
            if isinstance(exc, _BUGS):
                raise
            raise store_error(exc, self.path) from exc
        self._db = db

    def _run(self, work: Callable[[sqlite3.Connection], T], *, write: bool = False) -> T:
        try:
            if not write:
                return work(self._db)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = work(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return result
        except _BUGS:
            raise
        except (*_FAULTS, OSError) as exc:
            raise store_error(exc, self.path) from exc

    def close(self) -> None:
        self._db.close()

    def enqueue(self, entries: Sequence[NewEntry], now: float) -> list[bool]:
        """Queue each entry unless its id is in the destination's dedupe window; one
        transaction. Returns, per entry, whether it was queued."""

        def work(db: sqlite3.Connection) -> list[bool]:
            queued = []
            for e in entries:
                cursor = db.execute(
                    "INSERT OR IGNORE INTO seen (destination, key, at) VALUES (?, ?, ?)", (e.destination, e.key, now)
                )
                if cursor.rowcount != 1:
                    queued.append(False)
                    continue
                headers = orjson.dumps([(name, value.hex()) for name, value in e.headers])
                db.execute(
                    "INSERT INTO outbox (destination, key, held, queued_at, next_attempt, topic, partition, "
                    '"offset", record_key, value, headers) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                    (e.destination, e.key, int(e.held), now, now, e.topic, e.partition, e.offset, e.record_key, e.value, headers),
                )
                if e.story_id and e.article_id:
                    db.execute(
                        "INSERT OR IGNORE INTO story_articles (story_id, article_id, at) VALUES (?, ?, ?)",
                        (e.story_id, e.article_id, now),
                    )
                queued.append(True)
            return queued

        return self._run(work, write=True)

    def due(self, destination: str, now: float, limit: int, skip: Iterable[int]) -> list[Entry]:
        """Up to ``limit`` entries of their own that are due, oldest first, but those in ``skip``."""
        skipped = set(skip)
        rows = self._run(lambda db: db.execute(
            f"SELECT {_COLUMNS} FROM outbox WHERE destination = ? AND held = 0 AND next_attempt <= ? ORDER BY seq LIMIT ?",
            (destination, now, limit + len(skipped)),
        ).fetchall())  # fmt: skip
        return [_entry(row) for row in rows if row[0] not in skipped][:limit]

    def held(self, destination: str) -> list[Entry]:
        """Every entry held for the destination's next digest, oldest first."""
        rows = self._run(
            lambda db: db.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE destination = ? AND held = 1 ORDER BY seq", (destination,)
            ).fetchall()
        )
        return [_entry(row) for row in rows]

    def hold(self, seqs: Sequence[int]) -> None:
        """Move entries to the destination's next digest."""
        self._run(lambda db: db.executemany("UPDATE outbox SET held = 1 WHERE seq = ?", [(s,) for s in seqs]), write=True)

    def done(self, seqs: Sequence[int], destination: str, sent_at: float | None) -> None:
        """Entries delivered (``sent_at``: the time of the message, for the rate limit) or dead-lettered."""

        def work(db: sqlite3.Connection) -> None:
            db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in seqs])
            if sent_at is not None:
                db.execute("INSERT INTO sends (destination, at) VALUES (?, ?)", (destination, sent_at))

        self._run(work, write=True)

    def retry(self, seqs: Sequence[int], next_attempt: float, error: str) -> None:
        """One more failed attempt for each entry; the next one not before ``next_attempt``."""
        self._run(lambda db: db.executemany(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt = ?, last_error = ? WHERE seq = ?",
            [(next_attempt, error[:1000], s) for s in seqs],
        ), write=True)  # fmt: skip

    def counts(self) -> dict[str, tuple[int, int, float | None, float | None]]:
        """Per destination: entries of their own, held entries, the first held one's time,
        and the earliest next attempt of an entry of its own."""
        rows = self._run(lambda db: db.execute(
            "SELECT destination, SUM(held = 0), SUM(held = 1), MIN(CASE WHEN held = 1 THEN queued_at END), "
            "MIN(CASE WHEN held = 0 THEN next_attempt END) FROM outbox GROUP BY destination"
        ).fetchall())  # fmt: skip
        return {row[0]: (int(row[1] or 0), int(row[2] or 0), row[3], row[4]) for row in rows}

    def sent_times(self, destination: str, since: float) -> list[float]:
        rows = self._run(
            lambda db: db.execute(
                "SELECT at FROM sends WHERE destination = ? AND at > ? ORDER BY at", (destination, since)
            ).fetchall()
        )
        return [row[0] for row in rows]

    def story_sizes(self, story_ids: Sequence[str]) -> dict[str, int]:
        wanted = sorted(set(story_ids))
        marks = ",".join("?" * len(wanted))
        rows = self._run(lambda db: db.execute(
            f"SELECT story_id, COUNT(*) FROM story_articles WHERE story_id IN ({marks}) GROUP BY story_id", wanted
        ).fetchall())  # fmt: skip
        return {row[0]: int(row[1]) for row in rows}

    def prune(self, seen_before: float, sends_before: float) -> int:
        """Forget dedupe marks (of entries no longer queued) and stories older than
        ``seen_before``, and sends older than ``sends_before``; returns the marks removed."""

        def work(db: sqlite3.Connection) -> int:
            removed = db.execute(
                "DELETE FROM seen WHERE at < ? AND NOT EXISTS "
                "(SELECT 1 FROM outbox o WHERE o.destination = seen.destination AND o.key = seen.key)",
                (seen_before,),
            ).rowcount
            db.execute("DELETE FROM story_articles WHERE at < ?", (seen_before,))
            db.execute("DELETE FROM sends WHERE at < ?", (sends_before,))
            return removed

        return self._run(work, write=True)


class AsyncNotifyStore:
    """A :class:`NotifyStore` on one dedicated thread: the service's ``Store``."""

    def __init__(self, store: NotifyStore) -> None:
        self.sync = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="notify-store")

    @classmethod
    def open(cls, state_dir: Path | str) -> AsyncNotifyStore:
        return cls(NotifyStore(state_dir))

    async def _call(self, method: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: method(*args))

    async def enqueue(self, entries: Sequence[NewEntry], now: float) -> list[bool]:
        return await self._call(self.sync.enqueue, entries, now)

    async def due(self, destination: str, now: float, limit: int, skip: Iterable[int]) -> list[Entry]:
        return await self._call(self.sync.due, destination, now, limit, list(skip))

    async def held(self, destination: str) -> list[Entry]:
        return await self._call(self.sync.held, destination)

    async def hold(self, seqs: Sequence[int]) -> None:
        await self._call(self.sync.hold, seqs)

    async def done(self, seqs: Sequence[int], destination: str, sent_at: float | None) -> None:
        await self._call(self.sync.done, seqs, destination, sent_at)

    async def retry(self, seqs: Sequence[int], next_attempt: float, error: str) -> None:
        await self._call(self.sync.retry, seqs, next_attempt, error)

    async def counts(self) -> dict[str, tuple[int, int, float | None, float | None]]:
        return await self._call(self.sync.counts)

    async def sent_times(self, destination: str, since: float) -> list[float]:
        return await self._call(self.sync.sent_times, destination, since)

    async def story_sizes(self, story_ids: Sequence[str]) -> dict[str, int]:
        return await self._call(self.sync.story_sizes, story_ids)

    async def prune(self, seen_before: float, sends_before: float) -> int:
        return await self._call(self.sync.prune, seen_before, sends_before)

    async def close(self) -> None:
        try:
            await self._call(self.sync.close)
        finally:
            self._executor.shutdown(wait=True)
