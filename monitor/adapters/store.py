"""The SQLite state store: seen articles, the alert outbox, and per-feed state.

One file, ``<state dir>/monitor.sqlite3``, in WAL mode. Its tables:

``articles``
    One row per article ever alerted on or seen, keyed by the stable article id and
    indexed by canonical url, so the same story reached through two feeds (same link,
    different guids) or the same guid under a changed link is recognised.
``outbox``
    Alerts not yet acknowledged by Kafka. An article's row and its alerts' outbox rows
    are written in one transaction *before* anything is sent; an outbox row is deleted
    when Kafka acknowledges the alert, and the article row is marked ``published`` when
    its last alert is acknowledged. Whatever is left in the outbox at start-up is sent
    again, so a crash or an outage can duplicate an alert but never lose one.
``feeds``
    Conditional-GET validators, body hash, health counters and schedule per feed.
``signal_state``
    The story signals' detectors (:mod:`monitor.signals`), one JSON entry per rule and
    detector and per story, written with the signals they raised.
``stories``, ``story_members``
    Story clusters and the signatures of the window's members.
``websub_subscriptions``
    WebSub push subscriptions, one per feed (:mod:`monitor.websub.subscriptions`),
    their callback tokens and secrets among them.

All methods are synchronous and fast; :class:`AsyncStore` runs them on one dedicated
thread so the event loop never waits on disk.

Faults: every SQLite failure that is the file's or the disk's (damaged, full,
read-only, unreadable) comes out of a public method as a
:class:`~monitor.errors.StoreError` naming the file, with a hint; nothing here ever
modifies, moves or deletes a damaged file. A failing store keeps its fault
in :attr:`Store.failure` until a later write transaction commits: that is how a daemon
whose disk filled up notices space came back. Damage (``kind == "corrupt"``) never
clears by itself. :class:`AsyncStore` (the daemon's) logs each change once,
``state.store.failing`` (error) and ``state.store.recovered`` (info), and tells its
listeners.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson

from monitor.cluster.matcher_state import RememberedArticle
from monitor.dedupe import SeenArticle
from monitor.delivery.records import DLQ_REASON_HEADER
from monitor.errors import StoreError, error_text
from monitor.feeds.state import FEED_COLUMNS as _FEED_COLUMNS
from monitor.feeds.state import FeedState
from monitor.log import get_logger
from monitor.model import Record
from monitor.websub.subscriptions import SUBSCRIPTION_COLUMNS, Subscription

__all__ = ["AsyncStore", "Store", "store_error"]

log = get_logger("store")

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS articles (
    id            TEXT PRIMARY KEY,
    url           TEXT,
    feed_url      TEXT NOT NULL,
    content_hash  TEXT NOT NULL,
    rules         TEXT NOT NULL DEFAULT '[]',
    story_id      TEXT,
    state         TEXT NOT NULL DEFAULT 'published',
    first_seen    REAL NOT NULL,
    last_seen     REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS articles_url ON articles(url) WHERE url IS NOT NULL;
CREATE INDEX IF NOT EXISTS articles_last_seen ON articles(last_seen);
CREATE INDEX IF NOT EXISTS articles_feed_seen ON articles(feed_url, last_seen);

CREATE TABLE IF NOT EXISTS outbox (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_id    TEXT NOT NULL,
    article_id  TEXT NOT NULL,
    topic       TEXT NOT NULL,
    key         BLOB,
    value       BLOB NOT NULL,
    headers     BLOB NOT NULL,
    created     REAL NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    UNIQUE (alert_id, topic)
);

CREATE TABLE IF NOT EXISTS feeds (
    url            TEXT PRIMARY KEY,
    current_url    TEXT,
    etag           TEXT,
    last_modified  TEXT,
    body_hash      TEXT,
    last_poll      REAL,
    last_success   REAL,
    last_new_item  REAL,
    last_error     TEXT,
    last_error_at  REAL,
    error_count    INTEGER NOT NULL DEFAULT 0,
    consecutive_errors INTEGER NOT NULL DEFAULT 0,
    polls          INTEGER NOT NULL DEFAULT 0,
    items_seen     INTEGER NOT NULL DEFAULT 0,
    next_poll      REAL,
    interval       REAL,
    disabled       TEXT,
    health         TEXT NOT NULL DEFAULT 'ok',
    cadence        REAL
);

CREATE TABLE IF NOT EXISTS stories (
    story_id          TEXT PRIMARY KEY,
    first_article_id  TEXT NOT NULL,
    first_seen        REAL NOT NULL,
    last_seen         REAL NOT NULL,
    copies            INTEGER NOT NULL DEFAULT 0,
    rules             TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS stories_last_seen ON stories(last_seen);

CREATE TABLE IF NOT EXISTS story_members (
    article_id  TEXT PRIMARY KEY,
    story_id    TEXT NOT NULL,
    seen_at     REAL NOT NULL,
    signature   BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS story_members_seen ON story_members(seen_at);

CREATE TABLE IF NOT EXISTS signal_state (
    key    TEXT PRIMARY KEY,
    value  BLOB NOT NULL
);

CREATE TABLE IF NOT EXISTS websub_subscriptions (
    feed_url        TEXT PRIMARY KEY,
    hub             TEXT NOT NULL,
    topic           TEXT NOT NULL,
    token           TEXT NOT NULL UNIQUE,
    secret          TEXT NOT NULL,
    callback        TEXT NOT NULL,
    state           TEXT NOT NULL,
    awaiting        TEXT,
    lease_seconds   REAL,
    expires_at      REAL,
    next_action_at  REAL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    updated_at      REAL,
    last_push_at    REAL,
    pushes          INTEGER NOT NULL DEFAULT 0
);
"""


#: SQLite failures that are the file's or the disk's, not the program's (a constraint or
#: an SQL mistake is a bug and stays a traceback).
_FAULTS = (sqlite3.OperationalError, sqlite3.DatabaseError)
_BUGS = (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError, sqlite3.NotSupportedError)

_CORRUPT_HINT = (
    "the file is left as it is: stop the monitor, keep a copy, and either recover it "
    "(sqlite3 {name} .recover | sqlite3 recovered.sqlite3, then put recovered.sqlite3 in its place) "
    "or move it aside to start afresh (its outbox of unsent alerts is then lost)"
)


def store_error(exc: BaseException, path: Path, *, opening: bool = False) -> StoreError:
    """The operator's view of a SQLite (or file system) failure on the store at ``path``
    (``opening``: while the store is opened, before anything runs: the process then stops)."""
    name = str(getattr(exc, "sqlite_errorname", "") or "")
    text = str(exc) or type(exc).__name__
    code = getattr(exc, "errno", None)
    if name.startswith("SQLITE_FULL") or code == errno.ENOSPC or "disk is full" in text:
        return StoreError(
            f"state store {path}: the disk is full: {text}",
            kind="full",
            hint=f"free space on the disk of {path.parent}, then start the monitor again; nothing committed is lost"
            if opening
            else f"free space on the disk of {path.parent}; nothing committed is lost "
            "and the monitor goes on by itself once writes succeed",
        )
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in text or "not a database" in text:
        return StoreError(f"state store {path} is damaged: {text}", kind="corrupt", hint=_CORRUPT_HINT.format(name=path.name))
    if (
        name.startswith(("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH"))
        or code in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR)
        or "readonly" in text
        or "unable to open" in text
    ):
        return StoreError(
            f"state store {path} cannot be opened for writing: {text}",
            kind="readonly",
            hint=f"the monitor needs a writable directory {path.parent} holding {path.name} (and its -wal and -shm files); "
            "check [state] dir, ownership and mount options",
        )
    return StoreError(
        f"state store {path} failed: {text}",
        kind="unavailable",
        hint=f"check the disk of {path.parent} (I/O errors in the system log) and that no other program holds the file locked",
    )


def _guarded(method: Callable[..., T]) -> Callable[..., T]:
    """Turn the file's and the disk's SQLite failures into a :class:`StoreError` (see the module docstring)."""

    @functools.wraps(method)
    def guarded(self: Store, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except _BUGS:
            raise
        except _FAULTS as exc:
            raise self._failed(exc) from exc

    return guarded


def _guard_public_methods(cls: type) -> type:
    for name, value in list(vars(cls).items()):
        if callable(value) and not name.startswith("_") and name != "close":
            setattr(cls, name, _guarded(value))
    return cls


@_guard_public_methods
class Store:
    """Synchronous SQLite store. Use from one thread (see :class:`AsyncStore`).

    Every public method raises :class:`~monitor.errors.StoreError` for a fault of the
    file or the disk (see the module docstring). One method per operation on the seven
    tables (about thirty): kept in one class because transactions span tables
    (an article, its outbox rows and its story are written together).
    """

    FILENAME = "monitor.sqlite3"

    def __init__(self, state_dir: Path | str) -> None:
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / self.FILENAME
        #: The last fault, while the store is failing (None when it works).
        self.failure: StoreError | None = None
        #: Faults met since the store was opened.
        self.failures = 0
        db: sqlite3.Connection | None = None
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            # check_same_thread=False: the AsyncStore's single worker thread owns it, but it is
            # created on the caller's thread.
            db = self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            # NORMAL in WAL mode is durable against process crashes (the case we guard);
            # only an OS crash or power loss can lose the last transactions.
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(_SCHEMA)
            self._migrate()
        except (*_FAULTS, OSError) as exc:
            if db is not None:
                db.close()
            if isinstance(exc, _BUGS):
                raise
            raise store_error(exc, self.path, opening=True) from exc

    def _failed(self, exc: BaseException) -> StoreError:
        """Note a fault (logged once per failing spell) and return its StoreError."""
        error = store_error(exc, self.path)
        self.failures += 1
        if self.failure is None or self.failure.kind != "corrupt":
            self.failure = error
        return error

    def _committed(self) -> None:
        """A write transaction committed: a full disk has room again (damage stays reported)."""
        if self.failure is not None and self.failure.kind != "corrupt":
            self.failure = None

    def _migrate(self) -> None:
        """Add columns newer versions introduced to a database an older version created."""
        present = {row[1] for row in self._db.execute("PRAGMA table_info(feeds)")}
        if "cadence" not in present:
            self._db.execute("ALTER TABLE feeds ADD COLUMN cadence REAL")
        for counter in ("http_4xx", "http_5xx", "timeouts"):
            if counter not in present:
                self._db.execute(f"ALTER TABLE feeds ADD COLUMN {counter} INTEGER NOT NULL DEFAULT 0")

    def close(self) -> None:
        self._db.close()

    # -- transactions ------------------------------------------------------------------

    def _transaction(self) -> _Tx:
        return _Tx(self)

    # -- articles ----------------------------------------------------------------------

    def find_article(self, article_id: str, url: str | None) -> SeenArticle | None:
        """The remembered article with this id, else one with this canonical url."""
        row = self._db.execute(
            "SELECT id, url, content_hash, rules, state, story_id FROM articles WHERE id = ?",
            (article_id,),
        ).fetchone()
        if row is None and url:
            row = self._db.execute(
                "SELECT id, url, content_hash, rules, state, story_id FROM articles WHERE url = ? LIMIT 1",
                (url,),
            ).fetchone()
        if row is None:
            return None
        return SeenArticle(row[0], row[1], row[2], frozenset(orjson.loads(row[3])), row[4], row[5])

    def find_articles(self, keys: Iterable[tuple[str, str | None]]) -> list[SeenArticle | None]:
        """:meth:`find_article` for many (id, url) pairs in one call."""
        return [self.find_article(article_id, url) for article_id, url in keys]

    def record_article(
        self,
        *,
        article_id: str,
        url: str | None,
        feed_url: str,
        content_hash: str,
        rules: Iterable[str],
        outbox: Iterable[Record] = (),
        story_id: str | None = None,
        story_alerted: Iterable[str] | None = None,
        story_copy: bool = False,
        now: float | None = None,
    ) -> None:
        """Remember an article and queue its alerts, atomically.

        ``rules`` is every rule id that has alerted on the article so far. When
        ``outbox`` is not empty the article stays ``pending`` until its last alert is
        acknowledged (:meth:`ack`). With ``story_alerted`` (the rules this article
        alerted on for its story) the story is noted in the same transaction: the rules
        it alerted on, and whether it was a later copy.
        """
        now = time.time() if now is None else now
        records = list(outbox)
        state = "pending" if records else "published"
        rules_json = orjson.dumps(sorted(set(rules))).decode()
        with self._transaction() as db:
            db.execute(
                """INSERT INTO articles (id, url, feed_url, content_hash, rules, story_id, state, first_seen, last_seen)
                   VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(id) DO UPDATE SET
                       url = excluded.url, content_hash = excluded.content_hash,
                       rules = excluded.rules, last_seen = excluded.last_seen,
                       story_id = COALESCE(articles.story_id, excluded.story_id),
                       state = CASE WHEN excluded.state = 'pending' THEN 'pending' ELSE articles.state END""",
                (article_id, url, feed_url, content_hash, rules_json, story_id, state, now, now),
            )
            db.executemany(
                """INSERT OR IGNORE INTO outbox (alert_id, article_id, topic, key, value, headers, created)
                   VALUES (?, ?, ?, ?, ?, ?, ?)""",
                [
                    (r.alert_id, r.article_id, r.topic, r.key, r.value, _dump_headers(r.headers), now)
                    for r in records
                ],
            )
            if story_id is not None and story_alerted is not None:
                _note_story(db, story_id, article_id, story_alerted, copy=story_copy, now=now)

    def remembered_articles(self, keys: Iterable[tuple[str, str | None]]) -> list[RememberedArticle | None]:
        """What a matcher writes to ``news.matcher-state`` for each (consumed id, url): the
        article as :meth:`find_article` finds it, with its feed, last sight and story
        signature (None for an article the store does not know)."""
        found: list[RememberedArticle | None] = []
        for key, url in keys:
            seen = self.find_article(key, url)
            if seen is None:
                found.append(None)
                continue
            feed_url, last_seen = self._db.execute("SELECT feed_url, last_seen FROM articles WHERE id = ?", (seen.id,)).fetchone()
            member = self._db.execute("SELECT signature FROM story_members WHERE article_id = ?", (seen.id,)).fetchone()
            found.append(
                RememberedArticle(
                    key=key, id=seen.id, url=seen.url, feed_url=feed_url, content_hash=seen.content_hash, rules=seen.rules,
                    story_id=seen.story_id, seen_at=last_seen, signature=member[0] if member else None,
                )
            )
        return found

    def restore_articles(self, articles: Sequence[RememberedArticle]) -> int:
        """Take over articles another matcher remembered (``news.matcher-state``), in one
        transaction: each article's row (rules merged with what this store knows), its
        story's rules and its story membership. Returns the articles written."""
        if not articles:
            return 0
        with self._transaction() as db:
            for article in articles:
                row = db.execute("SELECT rules FROM articles WHERE id = ?", (article.id,)).fetchone()
                rules = sorted(article.rules | (set(orjson.loads(row[0])) if row else set()))
                db.execute(
                    """INSERT INTO articles (id, url, feed_url, content_hash, rules, story_id, state, first_seen, last_seen)
                       VALUES (?, ?, ?, ?, ?, ?, 'published', ?, ?)
                       ON CONFLICT(id) DO UPDATE SET
                           url = COALESCE(articles.url, excluded.url), content_hash = excluded.content_hash,
                           rules = excluded.rules, last_seen = MAX(articles.last_seen, excluded.last_seen),
                           story_id = COALESCE(articles.story_id, excluded.story_id)""",
                    (article.id, article.url, article.feed_url, article.content_hash, orjson.dumps(rules).decode(),
                     article.story_id, article.seen_at, article.seen_at),
                )
                if article.story_id is not None:
                    _note_story(db, article.story_id, article.id, article.rules, copy=False, now=article.seen_at)
                    if article.signature is not None:
                        db.execute(
                            "INSERT OR IGNORE INTO story_members (article_id, story_id, seen_at, signature) VALUES (?, ?, ?, ?)",
                            (article.id, article.story_id, article.seen_at, article.signature),
                        )
        return len(articles)

    def touch_articles(self, article_ids: Iterable[str], now: float | None = None) -> None:
        """Refresh ``last_seen`` so articles still in a feed are not forgotten by retention."""
        now = time.time() if now is None else now
        rows = [(now, i) for i in article_ids]
        if not rows:
            return
        with self._transaction() as db:
            db.executemany("UPDATE articles SET last_seen = ? WHERE id = ?", rows)

    def forget_articles_before(self, cutoff: float) -> int:
        """Drop articles not seen since ``cutoff`` (never ones with alerts still pending).

        "Seen" means present when its feed was last read: a feed answering 304 (or the
        same bytes) for months is not re-read, so its articles are not touched, yet they
        are still in it. Forgetting them would make them new again at the feed's next
        change and alert twice. So an article is forgotten only when a newer version of
        its feed (a later ``last_seen`` among the feed's articles) went without it.
        """
        with self._transaction() as db:
            cursor = db.execute(
                """DELETE FROM articles WHERE last_seen < ? AND state = 'published'
                   AND last_seen < (SELECT MAX(newer.last_seen) FROM articles AS newer WHERE newer.feed_url = articles.feed_url)""",
                (cutoff,),
            )
        return cursor.rowcount

    # -- outbox ------------------------------------------------------------------------

    def pending(self, limit: int | None = None) -> list[Record]:
        """Unacknowledged alerts, oldest first."""
        sql = "SELECT alert_id, article_id, topic, key, value, headers FROM outbox ORDER BY seq"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return [_outbox_record(*row) for row in self._db.execute(sql)]

    def pending_page(self, after_seq: int = 0, limit: int = 1000) -> list[tuple[int, Record]]:
        """Up to ``limit`` unacknowledged records after outbox position ``after_seq``, oldest first.

        Page through a large outbox by passing the last position seen.
        """
        rows = self._db.execute(
            "SELECT seq, alert_id, article_id, topic, key, value, headers FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
            (int(after_seq), int(limit)),
        )
        return [(row[0], _outbox_record(*row[1:])) for row in rows]

    def pending_count(self) -> int:
        """How many records wait in the outbox."""
        count: int = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        return count

    def enqueue(self, records: Iterable[Record], now: float | None = None) -> None:
        """Put records that belong to no article row (e.g. the raw article stream) in the outbox.

        A record already waiting under the same id and topic is kept, not duplicated.
        """
        now = time.time() if now is None else now
        with self._transaction() as db:
            _queue(db, records, now)

    def ack(self, alert_id: str, topic: str, article_id: str) -> None:
        """Kafka acknowledged an alert: drop it from the outbox, finish its article when last."""
        self.ack_many([(alert_id, topic, article_id)])

    def ack_many(self, acks: Sequence[tuple[str, str, str]]) -> None:
        """:meth:`ack` for each (alert id, topic, article id), in one transaction."""
        with self._transaction() as db:
            db.executemany("DELETE FROM outbox WHERE alert_id = ? AND topic = ?", [(alert_id, topic) for alert_id, topic, _ in acks])
            db.executemany(
                """UPDATE articles SET state = 'published'
                   WHERE id = ? AND NOT EXISTS (SELECT 1 FROM outbox WHERE article_id = ?)""",
                [(article_id, article_id) for article_id in dict.fromkeys(article_id for _, _, article_id in acks)],
            )

    # -- feeds -------------------------------------------------------------------------

    def feed_state(self, url: str) -> FeedState:
        row = self._db.execute(
            f"SELECT {', '.join(_FEED_COLUMNS)} FROM feeds WHERE url = ?", (url,)
        ).fetchone()
        return FeedState(*row) if row else FeedState(url=url)

    def all_feed_states(self) -> list[FeedState]:
        return [FeedState(*row) for row in self._db.execute(f"SELECT {', '.join(_FEED_COLUMNS)} FROM feeds ORDER BY url")]

    def set_feed_health(self, url: str, health: str) -> None:
        """Record a feed's health without touching the rest of its state (the row is created
        when the feed's state has not been written yet)."""
        with self._transaction() as db:
            db.execute(
                "INSERT INTO feeds (url, health) VALUES (?, ?) ON CONFLICT(url) DO UPDATE SET health = excluded.health",
                (url, health),
            )

    # -- stories -----------------------------------------------------------------------

    def story_rules(self, story_id: str) -> frozenset[str] | None:
        """The rules that alerted on some copy of a story, or None when the story is new."""
        row = self._db.execute("SELECT rules FROM stories WHERE story_id = ?", (story_id,)).fetchone()
        return None if row is None else frozenset(orjson.loads(row[0]))

    def story(self, story_id: str) -> dict[str, Any] | None:
        """One story's row (first article, times, copies, rules), or None."""
        row = self._db.execute(
            "SELECT story_id, first_article_id, first_seen, last_seen, copies, rules FROM stories WHERE story_id = ?",
            (story_id,),
        ).fetchone()
        if row is None:
            return None
        keys = ("story_id", "first_article_id", "first_seen", "last_seen", "copies", "rules")
        return {**dict(zip(keys, row)), "rules": orjson.loads(row[5])}

    def save_story_members(self, members: Iterable[tuple[str, str, float, bytes]]) -> None:
        """Remember (article id, story id, seen at, signature) so a restart keeps the story window."""
        with self._transaction() as db:
            db.executemany(
                "INSERT OR IGNORE INTO story_members (article_id, story_id, seen_at, signature) VALUES (?, ?, ?, ?)",
                list(members),
            )

    def story_members_since(self, cutoff: float) -> list[tuple[str, str, float, bytes]]:
        """Members seen at or after ``cutoff``, oldest first."""
        return list(
            self._db.execute(
                "SELECT article_id, story_id, seen_at, signature FROM story_members WHERE seen_at >= ? ORDER BY seen_at",
                (cutoff,),
            )
        )

    # -- signals -----------------------------------------------------------------------

    def save_signals(self, records: Iterable[Record], changes: Iterable[tuple[str, bytes | None]], now: float | None = None) -> None:
        """Queue signal records and save the detectors' changed state in one transaction, so
        a restart neither repeats a signal nor loses one (``None``: delete the entry)."""
        now = time.time() if now is None else now
        changes = list(changes)
        with self._transaction() as db:
            _queue(db, records, now)
            db.executemany(
                "INSERT INTO signal_state (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [(key, value) for key, value in changes if value is not None],
            )
            db.executemany("DELETE FROM signal_state WHERE key = ?", [(key,) for key, value in changes if value is None])

    def signal_state(self) -> list[tuple[str, bytes]]:
        """Every saved detector entry (key, JSON)."""
        return [(key, bytes(value)) for key, value in self._db.execute("SELECT key, value FROM signal_state")]

    def forget_stories_before(self, cutoff: float) -> int:
        """Drop story members and stories last seen before ``cutoff``; returns members dropped."""
        with self._transaction() as db:
            dropped = db.execute("DELETE FROM story_members WHERE seen_at < ?", (cutoff,)).rowcount
            db.execute("DELETE FROM stories WHERE last_seen < ?", (cutoff,))
        return dropped

    # -- push subscriptions ---------------------------------------------------------------

    def subscriptions(self) -> list[Subscription]:
        """Every stored WebSub subscription."""
        rows = self._db.execute(f"SELECT {', '.join(SUBSCRIPTION_COLUMNS)} FROM websub_subscriptions ORDER BY feed_url")
        return [Subscription(*row) for row in rows]

    def save_subscription(self, row: Sequence[Any]) -> None:
        """Write one subscription (a :meth:`Subscription.row`), replacing the feed's previous one."""
        with self._transaction() as db:
            db.execute(
                f"INSERT OR REPLACE INTO websub_subscriptions ({', '.join(SUBSCRIPTION_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in SUBSCRIPTION_COLUMNS)})",
                tuple(row),
            )

    def delete_subscription(self, feed_url: str, token: str) -> None:
        """Delete the feed's subscription if it is still the one with ``token``."""
        with self._transaction() as db:
            db.execute("DELETE FROM websub_subscriptions WHERE feed_url = ? AND token = ?", (feed_url, token))

    # -- feeds (batched) -----------------------------------------------------------------

    def save_feed_rows(self, rows: Sequence[Sequence[Any]], *, keep: Iterable[str] = ("health",)) -> int:
        """Write many :func:`feed_row` snapshots in one transaction (the poller's batched
        write-back).

        Columns named in ``keep`` are written for new rows only: another writer owns them
        (:meth:`set_feed_health`), and a cached copy must not overwrite what it wrote
        since. Returns the number of rows written.
        """
        kept = set(keep)
        placeholders = ", ".join("?" for _ in _FEED_COLUMNS)
        updates = ", ".join(f"{c} = excluded.{c}" for c in _FEED_COLUMNS if c != "url" and c not in kept)
        if not rows:
            return 0
        with self._transaction() as db:
            db.executemany(
                f"INSERT INTO feeds ({', '.join(_FEED_COLUMNS)}) VALUES ({placeholders}) "
                f"ON CONFLICT(url) DO UPDATE SET {updates}",
                rows,
            )
        return len(rows)


class _Tx:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception (a commit that
    fails, a full disk typically, is rolled back too)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._db = store._db

    def __enter__(self) -> sqlite3.Connection:
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise
            self._store._committed()
        else:
            self._rollback()

    def _rollback(self) -> None:
        # SQLite may have rolled back already (SQLITE_FULL can end the whole transaction):
        # a second ROLLBACK would raise and hide the error that matters.
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")


def _note_story(db: sqlite3.Connection, story_id: str, article_id: str, alerted: Iterable[str], *, copy: bool, now: float) -> None:
    row = db.execute("SELECT rules FROM stories WHERE story_id = ?", (story_id,)).fetchone()
    rules = set(orjson.loads(row[0])) if row else set()
    rules.update(alerted)
    db.execute(
        """INSERT INTO stories (story_id, first_article_id, first_seen, last_seen, copies, rules)
           VALUES (?, ?, ?, ?, ?, ?)
           ON CONFLICT(story_id) DO UPDATE SET last_seen = excluded.last_seen,
               copies = stories.copies + excluded.copies, rules = excluded.rules""",
        (story_id, article_id, now, now, 1 if copy else 0, orjson.dumps(sorted(rules)).decode()),
    )


def _queue(db: sqlite3.Connection, records: Iterable[Record], now: float) -> None:
    """Records into the outbox; one already waiting under the same id and topic is kept."""
    db.executemany(
        """INSERT OR IGNORE INTO outbox (alert_id, article_id, topic, key, value, headers, created)
           VALUES (?, ?, ?, ?, ?, ?, ?)""",
        [(r.alert_id, r.article_id, r.topic, r.key, r.value, _dump_headers(r.headers), now) for r in records],
    )


def _dump_headers(headers: Iterable[tuple[str, bytes]]) -> bytes:
    return orjson.dumps([[k, v.decode("latin-1")] for k, v in headers])


def _load_headers(blob: bytes) -> tuple[tuple[str, bytes], ...]:
    return tuple((k, v.encode("latin-1")) for k, v in orjson.loads(blob))


def _outbox_record(alert_id: str, article_id: str, topic: str, key: Any, value: Any, headers: Any) -> Record:
    """An outbox row as a Record. A row this version cannot read (headers not in its
    format: written by another version, or damaged) becomes a record marked for the
    dead-letter topic (its ``dlq_reason`` says why), kept whole there; it must not stop the
    resend of every row after it, at every start."""
    key = key.encode() if isinstance(key, str) else key
    value = value.encode() if isinstance(value, str) else value if value is not None else b""
    try:
        loaded = _load_headers(headers)
        if all(isinstance(name, str) for name, _value in loaded):
            return Record(alert_id, article_id, topic, key, value, loaded)
        problem = "a header name is not text"
    except (ValueError, TypeError, AttributeError, UnicodeError) as exc:  # orjson's JSONDecodeError is a ValueError
        problem = error_text(exc)
    reason = f"the outbox row's headers cannot be read (written by another version of news-monitor, or damaged): {problem}"
    log.error(
        "delivery.outbox.unreadable", alert_id=alert_id, topic=topic, error=problem,
        hint="it goes to the dead-letter topic with its key and value, the reason in dlq_reason; send it by hand if it matters",
    )  # fmt: skip
    return Record(alert_id, article_id, topic, key, value, ((DLQ_REASON_HEADER, reason.encode("utf-8", "replace")),))


class AsyncStore:
    """Runs a :class:`Store` on one dedicated thread, so callers can ``await`` it: a typed
    coroutine for each store operation the daemon uses (hence its length).

    ``failure_listeners`` are called (on the event loop) when the store starts failing,
    with the :class:`~monitor.errors.StoreError`; ``recovery_listeners`` when a write
    commits again after that (see :class:`Store`).
    """

    def __init__(self, store: Store) -> None:
        self.sync = store
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="state-store")
        self.failure_listeners: list[Callable[[StoreError], None]] = []
        self.recovery_listeners: list[Callable[[], None]] = []
        self._reported: StoreError | None = None

    @classmethod
    def open(cls, state_dir: Path | str) -> AsyncStore:
        return cls(Store(state_dir))

    @property
    def failure(self) -> StoreError | None:
        """The store's fault while it is failing, else None."""
        return self.sync.failure

    async def call(self, method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, lambda: method(*args, **kwargs))
        finally:
            self._notify()

    def _notify(self) -> None:
        # On the event loop, after each call, so listeners hear each change once.
        failure = self.sync.failure
        if failure is self._reported:
            return
        previous, self._reported = self._reported, failure
        path = str(self.sync.path)
        if failure is None:
            assert previous is not None
            log.info("state.store.recovered", path=path, was=previous.kind, failures=self.sync.failures)
            for recovered in self.recovery_listeners:
                recovered()
        elif previous is None or failure.kind != previous.kind:
            log.error("state.store.failing", path=path, kind=failure.kind, error=failure.message, hint=failure.hint)
            if previous is None:
                for failed in self.failure_listeners:
                    failed(failure)

    async def atomically(self, function: Callable[..., T], *args: Any) -> T:
        """``function(store, *args)`` with the synchronous store, on the store's thread: no
        other call runs between its reads and writes (see :func:`monitor.dedupe.admit`)."""
        return await self.call(function, self.sync, *args)

    # -- the store's methods, on its thread (see :class:`Store` for each) -------------

    async def find_articles(self, keys: Iterable[tuple[str, str | None]]) -> list[SeenArticle | None]:
        return await self.call(self.sync.find_articles, list(keys))

    async def remembered_articles(self, keys: Iterable[tuple[str, str | None]]) -> list[RememberedArticle | None]:
        return await self.call(self.sync.remembered_articles, list(keys))

    async def restore_articles(self, articles: Sequence[RememberedArticle]) -> int:
        return await self.call(self.sync.restore_articles, list(articles))

    async def forget_articles_before(self, cutoff: float) -> int:
        return await self.call(self.sync.forget_articles_before, cutoff)

    async def pending(self, limit: int | None = None) -> list[Record]:
        return await self.call(self.sync.pending, limit)

    async def pending_page(self, after_seq: int = 0, limit: int = 1000) -> list[tuple[int, Record]]:
        return await self.call(self.sync.pending_page, after_seq, limit)

    async def pending_count(self) -> int:
        return await self.call(self.sync.pending_count)

    async def enqueue(self, records: Iterable[Record]) -> None:
        await self.call(self.sync.enqueue, list(records))

    async def ack(self, alert_id: str, topic: str, article_id: str) -> None:
        await self.call(self.sync.ack, alert_id, topic, article_id)

    async def ack_many(self, acks: Sequence[tuple[str, str, str]]) -> None:
        await self.call(self.sync.ack_many, acks)

    async def feed_state(self, url: str) -> FeedState:
        return await self.call(self.sync.feed_state, url)

    async def all_feed_states(self) -> list[FeedState]:
        return await self.call(self.sync.all_feed_states)

    async def set_feed_health(self, url: str, health: str) -> None:
        await self.call(self.sync.set_feed_health, url, health)

    async def save_feed_rows(self, rows: Sequence[Sequence[Any]]) -> int:
        return await self.call(self.sync.save_feed_rows, rows)

    async def save_story_members(self, members: Iterable[tuple[str, str, float, bytes]]) -> None:
        await self.call(self.sync.save_story_members, list(members))

    async def story_members_since(self, cutoff: float) -> list[tuple[str, str, float, bytes]]:
        return await self.call(self.sync.story_members_since, cutoff)

    async def forget_stories_before(self, cutoff: float) -> int:
        return await self.call(self.sync.forget_stories_before, cutoff)

    async def save_signals(self, records: Iterable[Record], changes: Iterable[tuple[str, bytes | None]]) -> None:
        await self.call(self.sync.save_signals, list(records), list(changes))

    async def signal_state(self) -> list[tuple[str, bytes]]:
        return await self.call(self.sync.signal_state)

    async def load_subscriptions(self) -> list[Subscription]:
        return await self.call(self.sync.subscriptions)

    async def save_subscription(self, subscription: Subscription) -> None:
        # A row, not the record: the record changes on the loop while the thread writes.
        await self.call(self.sync.save_subscription, subscription.row())

    async def delete_subscription(self, feed_url: str, token: str) -> None:
        await self.call(self.sync.delete_subscription, feed_url, token)

    async def close(self) -> None:
        await self.call(self.sync.close)
        self._executor.shutdown(wait=True)

