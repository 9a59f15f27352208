"""Parsing off the event loop: a process pool with a per-parse time limit.

Feed parsing is the CPU bottleneck (tens of milliseconds per feed with feedparser), so
it runs in worker processes: both cores work and the event loop never blocks. A parse
that runs past its limit is abandoned and the pool is recycled, so one pathological
feed cannot stall the others.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from monitor.errors import FeedError
from monitor.log import get_logger
from monitor.parse import ParsedFeed, parse_feed

__all__ = ["ParserPool"]

log = get_logger("parse")


class ParserPool:
    """Runs :func:`monitor.parse.parse_feed` in worker processes (or a thread when ``workers == 0``)."""

    def __init__(self, workers: int = -1, timeout: float = 20.0) -> None:
        self.workers = (os.cpu_count() or 1) if workers < 0 else workers
        self.timeout = timeout
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> ProcessPoolExecutor | None:
        if self.workers == 0:
            return None
        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers)
        return self._pool

    async def parse(self, body: bytes, feed_url: str, content_type: str | None = None) -> ParsedFeed:
        """Parse one feed body; :class:`FeedError` when it cannot be read or takes too long."""
        loop = asyncio.get_running_loop()
        executor = self._executor()
        if executor is None:
            future = asyncio.ensure_future(asyncio.to_thread(parse_feed, body, feed_url, content_type))
        else:
            future = loop.run_in_executor(executor, parse_feed, body, feed_url, content_type)
        try:
            return await asyncio.wait_for(future, self.timeout)
        except asyncio.TimeoutError as exc:
            self._recycle()
            raise FeedError(f"{feed_url}: parsing took longer than {self.timeout:g}s and was abandoned",
                            hint="the feed is pathological; raise [feeds] parse_timeout if it is just huge") from exc
        except BrokenProcessPool as exc:
            self._recycle()
            raise FeedError(f"{feed_url}: the parser process died while parsing this feed") from exc

    def _recycle(self) -> None:
        """Kill the workers (one may be stuck in a runaway parse) and start afresh next time."""
        pool, self._pool = self._pool, None
        if pool is None:
            return
        # ProcessPoolExecutor has no public way to stop a running task; killing the
        # processes is the only way to get the core back.
        for process in list(getattr(pool, "_processes", {}).values()):
            process.kill()
        pool.shutdown(wait=False, cancel_futures=True)
        log.warning("parse.pool.recycled")

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
