"""One daemon per state directory: an exclusive lock held for the life of the process.

Two monitors on one state directory would both send the alerts of one outbox (each
re-sends what it finds pending at start-up, and again when its own sends fail), so
every alert could reach Kafka twice. ``news-monitor run`` (and ``run --once``) takes an
exclusive ``flock`` on ``<state dir>/monitor.lock`` before anything else and holds it
until it exits; a second one fails at once, naming the PID that holds it.

``news-monitor notify`` takes its own lock the same way (``notify.lock``, beside its own
``notify.sqlite3``), so it can run beside the daemon on the same state directory, but
two notify processes cannot share one.

The kernel drops the lock when the process ends, however it ends (a SIGKILL leaves no
stale lock to clean up), and the file itself is never deleted: removing a lock file
while another process waits on it would let two processes hold "the" lock. Readers
(``news-monitor status``) never take it. The lock is advisory and local: a state
directory on a network filesystem may not honour it.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from monitor.errors import ConfigError
from monitor.model import SourceLocation

__all__ = ["StateLock"]


class StateLock:
    """The exclusive lock of one state directory (see the module docstring)."""

    FILENAME = "monitor.lock"

    def __init__(
        self,
        state_dir: Path | str,
        filename: str = FILENAME,
        *,
        hint: str = "one daemon per state directory: stop that one first, or give this one its own [state] dir",
        setting: str = "[state] dir",
    ) -> None:
        self.path = Path(state_dir) / filename
        self._hint = hint
        self._setting = setting
        self._fd: int | None = None

    def acquire(self) -> StateLock:
        """Take the lock, or raise :class:`ConfigError` naming the PID that holds it."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Not inherited by child processes (Python's default): a child must not keep the lock alive.
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            # A file where the directory should be, no permission: say which setting (was "PATH: File exists").
            raise ConfigError(
                f"cannot use {self.path.parent} as the state directory: "
                + ("it is a file, not a directory" if isinstance(exc, FileExistsError) else exc.strerror or str(exc))
                + (f" ({exc.filename})" if exc.filename and str(exc.filename) != str(self.path.parent) else ""),
                location=SourceLocation(self._setting),
                hint="give it a directory this user can create and write",
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"news-monitor PID {holder}" if holder else "another process"
            raise ConfigError(
                f"state directory {self.path.parent} is in use by {who} (it holds {self.path})",
                location=SourceLocation(self._setting),
                hint=self._hint,
            ) from None
        except BaseException:
            os.close(fd)
            raise
        # For the next one to name us; written only once the lock is ours.
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            # A full disk: the only line was "No space left on device", naming no file.
            os.close(fd)
            raise ConfigError(
                f"cannot write {self.path}: {exc.strerror or exc}",
                location=SourceLocation(self._setting),
                hint=_WRITE_HINTS.get(exc.errno or 0, "give it a directory this user can create and write").format(self.path.parent),
            ) from exc
        self._fd = fd
        return self

    def release(self) -> None:
        """Drop the lock (closing the file drops it); safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> StateLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


#: What to do when the lock file cannot be written, by errno ({} is the state directory).
_WRITE_HINTS = {
    errno.ENOSPC: "free space on the disk of {}; nothing was started",
    errno.EDQUOT: "this user's disk quota is used up on {}; free space or raise the quota",
    errno.EFBIG: "the file size limit (ulimit -f) of this process allows no file in {}; raise it",
}


def _read_pid(fd: int) -> int | None:
    """The PID the holder wrote, or None (still being written, or not a number)."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
