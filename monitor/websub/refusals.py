"""Refused verifications of intent, which anyone can cause at will (a GET with a made-up
token), cost a bounded number of log lines: :class:`RefusalLog`.

Per key (a feed url, or one key for requests that name no subscription), the first
refusal is logged in full at once (``websub.verify.refused``); while more come, one
``websub.verify.refused.repeated`` line per ``interval`` counts them and carries the
latest one's fields; after an interval without any, the next refusal is logged in full
again. So a one-off refusal is never hidden or delayed, a flood costs a line a minute,
and one key's flood never hides another key's refusals.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from monitor.log import get_logger

__all__ = ["REFUSAL_LOG_INTERVAL", "RefusalLog"]

log = get_logger("websub")

#: Seconds between two ``.repeated`` lines of one key (docs/websub.md).
REFUSAL_LOG_INTERVAL = 60.0


@dataclass
class _Window:
    """The refusals of one key since its last line."""

    started: float
    count: int = 0
    latest: dict[str, Any] = field(default_factory=dict)
    timer: asyncio.TimerHandle | None = None


class RefusalLog:
    """Logs refused verifications (warnings), floods folded into ``.repeated`` lines (see
    the module docstring). Runs in the event loop that calls :meth:`refused`."""

    def __init__(self, interval: float = REFUSAL_LOG_INTERVAL) -> None:
        self.interval = interval
        self._windows: dict[str, _Window] = {}

    def refused(self, key: str, **fields: Any) -> None:
        """One refusal: logged now, or counted for the next ``.repeated`` line of ``key``."""
        window = self._windows.get(key)
        if window is not None:
            window.count += 1
            window.latest = fields
            return
        log.warning("websub.verify.refused", **fields)
        loop = asyncio.get_running_loop()
        window = self._windows[key] = _Window(started=loop.time())
        window.timer = loop.call_later(self.interval, self._tick, key)

    def flush(self) -> None:
        """Log what is counted and not yet logged (at shutdown), and start afresh."""
        for window in self._windows.values():
            if window.timer is not None:
                window.timer.cancel()
            self._repeated(window)
        self._windows.clear()

    def _tick(self, key: str) -> None:
        window = self._windows[key]
        if not window.count:
            # A quiet interval: the next refusal of this key is logged in full.
            del self._windows[key]
            return
        self._repeated(window)
        loop = asyncio.get_running_loop()
        window.started, window.count = loop.time(), 0
        window.timer = loop.call_later(self.interval, self._tick, key)

    def _repeated(self, window: _Window) -> None:
        if window.count:
            seconds = round(asyncio.get_running_loop().time() - window.started, 1)
            log.warning("websub.verify.refused.repeated", count=window.count, seconds=seconds, **window.latest)
