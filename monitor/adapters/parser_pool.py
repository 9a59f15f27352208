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

Workers never outlive the daemon and hold none of its files or sockets: they are forked
by multiprocessing's fork server (started once, by the daemon, with only the descriptors
it needs, and with the parse modules imported, so a worker starts in milliseconds and
shares their memory), not by the daemon itself, which by then listens on its HTTP port.
The fork server exits when the daemon does, the kernel kills each worker when the fork
server dies, and each worker also exits when the daemon's end of its pipe closes (see
:mod:`monitor.adapters.processes`). Workers ignore SIGINT: a Ctrl-C reaches the whole
process group, and the daemon, not the signal, decides when they stop. As with any
start method other than fork, each worker imports the program's main module: a script
that runs a pool must keep its own code under ``if __name__ == "__main__":``.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from monitor.adapters.processes import die_with_parent
from monitor.dedupe.stories import SignedFeed, Signer, parse_and_sign
from monitor.errors import FeedError
from monitor.language import preload
from monitor.log import get_logger
from monitor.parse import ParsedFeed, parse_feed

__all__ = ["ParserPool"]

log = get_logger("parse")

T = TypeVar("T")

#: How much nicer than the daemon the worker processes run (see _yield_to_event_loop).
WORKER_NICENESS = 10


#: Seconds the workers of a new pool may take to start (the first pool also starts the
#: fork server, which imports the parse modules once).
STARTUP_TIMEOUT = 60.0


def _worker_started() -> None:
    """Worker start-up: die with the daemon, leave SIGINT to it, yield the CPU to it, and
    have the language detector's model (a worker forked by the fork server has it already;
    else the first feed parsed would pay its load, ~0.5 s)."""
    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _yield_to_event_loop()
    preload()


def _yield_to_event_loop() -> None:
    """Lower this process's CPU priority below the daemon's.

    With as many workers as cores, a busy pool leaves the event loop's thread waiting for
    a core, and a thread descheduled while it holds the GIL (the state-store thread)
    makes the loop wait too (long stalls, see docs/polling.md). Niced
    workers still take every idle cycle; they just never make the loop wait for one.
    """
    try:
        os.nice(WORKER_NICENESS)
    except OSError as exc:  # not expected on Linux (raising niceness needs no privilege)
        log.warning("parse.worker.nice_failed", error=str(exc))


def _ready() -> int:
    """A worker's first task: proves it started (its pid, for tests)."""
    return os.getpid()


def worker_context() -> multiprocessing.context.BaseContext:
    """How worker processes start: the fork server, preloaded with this module's imports
    (spawn where there is no fork server). Never a plain fork of the daemon: the children
    would inherit its listening sockets and everything else it has open."""
    if "forkserver" in multiprocessing.get_all_start_methods():
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__, "monitor.language.loaded"])
        return context
    return multiprocessing.get_context("spawn")


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
        #: Held while a new pool's workers start (one start at a time).
        self._starting = asyncio.Lock()
        #: Tasks that finished (for metrics and tests: a 304 or an unchanged body parses nothing).
        self.completed = 0
        #: Pools killed so far (for metrics and tests).
        self.recycled = 0
        #: Tasks run again after a pool was killed under them.
        self.retried = 0

    async def _executor(self) -> ProcessPoolExecutor:
        """The pool, its workers started and ready: their start-up is not a task's running time."""
        if self._pool is not None:
            return self._pool
        async with self._starting:
            if self._pool is None:
                pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=worker_context(), initializer=_worker_started)
                try:
                    # Submitted back to back, before any can finish: each starts a worker of its
                    # own. Off the loop: the first submit waits for the fork server to import
                    # the parse modules.
                    futures = await asyncio.to_thread(lambda: [pool.submit(_ready) for _ in range(self.workers)])
                    await asyncio.wait_for(asyncio.gather(*map(asyncio.wrap_future, futures)), STARTUP_TIMEOUT)
                except (TimeoutError, BrokenProcessPool) as exc:
                    self._kill(pool)
                    problem = f"did not start within {STARTUP_TIMEOUT:g}s" if isinstance(exc, asyncio.TimeoutError) else "died at start-up"
                    raise FeedError(
                        f"the parser worker processes {problem}",
                        hint="their error is on stderr; a program that runs the monitor must guard its own code with "
                        "if __name__ == '__main__' (workers import it); [feeds] parse_workers = 0 parses on a thread instead",
                    ) from exc
                self._pool = pool
            return self._pool

    async def parse(
        self, body: bytes, feed_url: str, content_type: str | None = None, language: str | None = None, detect_languages: bool = True
    ) -> ParsedFeed:
        """Parse one feed body (``language``: the feed's configured one; ``detect_languages``:
        see :func:`parse_feed`); :class:`FeedError` when it cannot be read or takes too long."""
        return await self.run(parse_feed, body, feed_url, content_type, language, detect_languages, label=feed_url, what="parsing")

    async def parse_and_sign(
        self,
        body: bytes,
        feed_url: str,
        content_type: str | None,
        signer: Signer,
        language: str | None = None,
        detect_languages: bool = True,
    ) -> SignedFeed:
        """:meth:`parse` plus each article's story signature (see :func:`parse_and_sign`)."""
        return await self.run(
            parse_and_sign, body, feed_url, content_type, signer, language, detect_languages, label=feed_url, what="parsing"
        )

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
                executor = await self._executor()
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
                except TimeoutError as exc:
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
        except TimeoutError as exc:
            raise FeedError(f"{label}: {what} took longer than {self.timeout:g}s and was abandoned") from exc

    def _recycle(self, pool: ProcessPoolExecutor, *, reason: str, culprit: str | None = None) -> None:
        """Kill ``pool``'s workers (one may be stuck in a runaway task); a new pool starts next time."""
        if self._pool is not pool:
            return  # Someone else already replaced it.
        self._pool = None
        self.recycled += 1
        self._kill(pool)
        log.warning("parse.pool.recycled", reason=reason, culprit=culprit)

    @staticmethod
    def _kill(pool: ProcessPoolExecutor) -> None:
        # ProcessPoolExecutor has no public way to stop a running task; killing the
        # processes is the only way to get the core back. Futures of the tasks it held
        # then fail with BrokenProcessPool, which :meth:`run` turns into a retry.
        for process in _processes(pool):
            process.kill()
        pool.shutdown(wait=False)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the workers: queued tasks are cancelled, running ones get up to ``timeout``
        seconds to finish (0: none), then their workers are killed."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        processes = _processes(pool)
        pool.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + max(0.0, timeout)
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()


def _processes(pool: ProcessPoolExecutor) -> list[Any]:
    """The pool's worker processes (private to ProcessPoolExecutor, so read defensively)."""
    return list((getattr(pool, "_processes", None) or {}).values())
