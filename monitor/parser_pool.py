"""CPU work off the event loop: a process pool with a per-task time limit.

Feed parsing is the CPU bottleneck (tens of milliseconds per feed with feedparser), and
full-text extraction is as costly, so both run in worker processes: every core works
and the event loop never blocks.

A task that runs past its limit is abandoned. A process pool cannot stop one running
task, so the stuck worker is killed with the whole pool (a fresh pool starts on the
next task). The other tasks that pool was running die with it through no fault of
their own: they are run once more on the fresh pool instead of failing, so one
pathological feed costs only its own poll.

The limit measures a task's own running time, not time spent queueing behind others:
no more tasks are handed to the pool than it has workers (the rest wait here, on the
event loop), so a busy pool never makes an innocent task look pathological.

With ``workers == 0`` tasks run on threads, which cannot be killed: a runaway task is
only abandoned (its thread keeps a core until it ends). Use worker processes wherever
feeds are untrusted.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

from monitor.errors import FeedError
from monitor.log import get_logger
from monitor.parse import ParsedFeed, parse_feed
from monitor.stories import story_text

__all__ = ["ParserPool", "SignedFeed", "parse_and_sign"]

log = get_logger("parse")

T = TypeVar("T")

#: Turns article texts into story signatures (see :attr:`monitor.stories.StoryIndex.signer`).
Signer = Callable[[Sequence[str]], "list[bytes | None]"]


@dataclass(frozen=True, slots=True)
class SignedFeed:
    """A parsed feed and the story signature of each of its articles (same order)."""

    parsed: ParsedFeed
    signatures: list[bytes | None]


def parse_and_sign(body: bytes, feed_url: str, content_type: str | None, signer: Signer) -> SignedFeed:
    """:func:`~monitor.parse.parse_feed`, then every article's story signature, in one worker task.

    Signing in the worker that already holds the articles costs no extra round trip and
    keeps shingling and MinHash (~0.3 ms an article) off the event loop.
    """
    parsed = parse_feed(body, feed_url, content_type)
    return SignedFeed(parsed, signer([story_text(article) for article in parsed.articles]))


#: How much nicer than the daemon the worker processes run (see _yield_to_event_loop).
WORKER_NICENESS = 10


def _yield_to_event_loop() -> None:
    """Worker start-up: lower this process's CPU priority below the daemon's.

    With as many workers as cores, a busy pool leaves the event loop's thread waiting for
    a core, and a thread descheduled while it holds the GIL (the state-store thread)
    makes the loop wait too: stalls of 100-300 ms in the 10,000-feed benchmark. Niced
    workers still take every idle cycle; they just never make the loop wait for one.
    """
    try:
        os.nice(WORKER_NICENESS)
    except OSError as exc:  # not expected on Linux (raising niceness needs no privilege)
        log.warning("parse.worker.nice_failed", error=str(exc))


class ParserPool:
    """Runs :func:`monitor.parse.parse_feed` (and other pure CPU tasks) in worker processes.

    ``workers == 0`` runs tasks on a thread instead (tests, tiny deployments); a thread
    cannot be killed, so there the time limit only stops waiting.
    """

    def __init__(self, workers: int = -1, timeout: float = 20.0) -> None:
        self.workers = (os.cpu_count() or 1) if workers < 0 else workers
        self.timeout = timeout
        self._pool: ProcessPoolExecutor | None = None
        #: One slot per worker: a task is submitted only when a worker is free for it.
        self._slots = asyncio.Semaphore(max(1, self.workers))
        #: Tasks that finished (for metrics and tests: a 304 or an unchanged body parses nothing).
        self.completed = 0
        #: Pools killed so far (for metrics and tests).
        self.recycled = 0
        #: Tasks run again after a pool was killed under them.
        self.retried = 0

    def _executor(self) -> ProcessPoolExecutor | None:
        if self.workers == 0:
            return None
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, initializer=_yield_to_event_loop)
        return self._pool

    async def parse(self, body: bytes, feed_url: str, content_type: str | None = None) -> ParsedFeed:
        """Parse one feed body; :class:`FeedError` when it cannot be read or takes too long."""
        return await self.run(parse_feed, body, feed_url, content_type, label=feed_url, what="parsing")

    async def parse_and_sign(self, body: bytes, feed_url: str, content_type: str | None, signer: Signer) -> SignedFeed:
        """:meth:`parse` plus each article's story signature (see :func:`parse_and_sign`)."""
        return await self.run(parse_and_sign, body, feed_url, content_type, signer, label=feed_url, what="parsing")

    async def run(self, function: Callable[..., T], *args: Any, label: str, what: str = "processing") -> T:
        """Run a picklable module-level ``function(*args)`` within the time limit.

        ``label`` (a feed or page url) and ``what`` name the task in errors.
        """
        if self.workers == 0:
            result = await self._run_in_thread(function, args, label, what)
            self.completed += 1
            return result
        for attempt in (1, 2):
            async with self._slots:
                executor = self._executor()
                assert executor is not None
                try:
                    future: Future[T] = executor.submit(function, *args)
                except (BrokenProcessPool, RuntimeError):
                    # The pool broke (or was shut down) between our check and the submit.
                    self._recycle(executor, reason="broken")
                    continue
                try:
                    result = await asyncio.wait_for(asyncio.wrap_future(future), self.timeout)
                    self.completed += 1
                    return result
                except asyncio.TimeoutError as exc:
                    if self._pool is not executor and attempt == 1:
                        # Another task's timeout killed the pool under us at about the same
                        # moment: this task never had its full time; give it a fresh pool.
                        self.retried += 1
                        log.info("parse.retried", label=label, reason="pool recycled by another task")
                        continue
                    self._recycle(executor, reason="timeout", culprit=label)
                    raise FeedError(
                        f"{label}: {what} took longer than {self.timeout:g}s and was abandoned",
                        hint="the input is pathological; raise [feeds] parse_timeout if it is just huge",
                    ) from exc
                except BrokenProcessPool as exc:
                    if self._pool is executor:
                        # Nobody recycled it: a worker died while running this very task.
                        self._recycle(executor, reason="worker died", culprit=label)
                        raise FeedError(f"{label}: the worker process died while {what} it") from exc
                    if attempt == 2:
                        raise FeedError(f"{label}: {what} was interrupted twice by other tasks' failures") from exc
                    # Another task's timeout killed the pool under us: run again on a fresh one.
                    self.retried += 1
                    log.info("parse.retried", label=label, reason="pool recycled by another task")
        raise FeedError(f"{label}: {what} failed: the worker pool broke twice")

    async def _run_in_thread(self, function: Callable[..., T], args: tuple[Any, ...], label: str, what: str) -> T:
        task = asyncio.ensure_future(asyncio.to_thread(function, *args))
        try:
            return await asyncio.wait_for(task, self.timeout)
        except asyncio.TimeoutError as exc:
            raise FeedError(f"{label}: {what} took longer than {self.timeout:g}s and was abandoned") from exc

    def _recycle(self, pool: ProcessPoolExecutor, *, reason: str, culprit: str | None = None) -> None:
        """Kill ``pool``'s workers (one may be stuck in a runaway task); a new pool starts next time."""
        if self._pool is not pool:
            return  # Someone else already replaced it.
        self._pool = None
        self.recycled += 1
        # ProcessPoolExecutor has no public way to stop a running task; killing the
        # processes is the only way to get the core back. Futures of the tasks it held
        # then fail with BrokenProcessPool, which :meth:`run` turns into a retry.
        processes = getattr(pool, "_processes", None) or {}
        for process in list(processes.values()):
            process.kill()
        pool.shutdown(wait=False)
        log.warning("parse.pool.recycled", reason=reason, culprit=culprit)

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
