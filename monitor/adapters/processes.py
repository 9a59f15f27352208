"""The daemon's child processes die with it, and a port held by a stray process is named.

A daemon can be killed at any moment (``kill -9``, the OOM killer, a container runtime's
hard stop), and then runs none of its clean-up. Its children must not outlive it: an
orphaned parser worker or broker keeps CPU, memory and, worst, a listening port the
restarted daemon needs. Two mechanisms, for every child:

* On Linux the kernel sends the child SIGKILL when its parent dies
  (``prctl(PR_SET_PDEATHSIG)``). The signal fires when the *thread* that forked the
  child ends, not the process, so a child must be forked by a thread that lives as long
  as the daemon: the event loop's, or a single-threaded fork server.
* A parent-liveness check, everywhere: a multiprocessing child watches the pipe its
  parent holds open (:func:`multiprocessing.parent_process`) and exits when it closes.
  It needs no polling and has no race with the parent's death.

And when a port cannot be bound, :func:`port_holders` says which processes hold it
(found through ``/proc``: the socket's inode, then the process with that inode open).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

__all__ = ["describe_holders", "die_with_parent", "die_with_this_thread", "port_holders"]

#: From <linux/prctl.h>.
_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        # The interpreter's own symbols include libc's.
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


#: Resolved once, in the parent: a child between fork and exec must not import or load anything.
_PRCTL = _load_prctl()


def _set_parent_death_signal(sig: int) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent (thread) dies; False where it cannot."""
    if _PRCTL is None:
        return False
    return _PRCTL(_PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0


def die_with_parent() -> None:
    """In a multiprocessing child (a pool initializer): end this process when its parent ends.

    SIGKILL from the kernel when the process that forked this one dies (Linux), and on
    every platform a thread that waits on the multiprocessing parent's sentinel and exits
    the process when the parent is gone (it also covers a parent that died before the
    kernel was asked, and a parent that is a fork server rather than the daemon itself).
    """
    _set_parent_death_signal(signal.SIGKILL)
    parent = multiprocessing.parent_process()
    if parent is None or parent.sentinel is None:
        return
    sentinel = parent.sentinel

    def watch() -> None:
        from multiprocessing.connection import wait

        wait([sentinel])
        # No clean-up: whatever this child was doing was for a parent that is gone.
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def die_with_this_thread() -> Callable[[], None] | None:
    """A ``preexec_fn`` for :class:`subprocess.Popen`: the child gets SIGKILL when the calling
    thread (or process) dies. None where the platform cannot do it (not Linux).

    Call it, and start the child, from a thread that lives as long as the child should
    (see the module docstring). The child checks after asking that its parent is still the
    one that forked it: a parent that died in between would otherwise never signal it.
    """
    if _PRCTL is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        _set_parent_death_signal(signal.SIGKILL)
        if os.getppid() != parent:
            os._exit(1)

    return preexec


# -- who holds a port ----------------------------------------------------------------------

_TCP_LISTEN = "0A"


def _listening_inodes(port: int) -> set[str]:
    """Inodes of the TCP sockets listening on ``port`` (any address), from /proc/net/tcp{,6}."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _TCP_LISTEN:
                continue
            _address, _, hex_port = fields[1].rpartition(":")
            if int(hex_port, 16) == port:
                inodes.add(fields[9])
    return inodes


def port_holders(port: int) -> list[tuple[int, str]]:
    """(pid, command line) of every process with a socket listening on TCP ``port``.

    Linux only (empty elsewhere), and only processes whose file descriptors this user
    may read (all of them for root, this user's own otherwise).
    """
    inodes = _listening_inodes(port)
    if not inodes:
        return []
    targets = {f"socket:[{inode}]" for inode in inodes}
    holders: list[tuple[int, str]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            found = any(os.readlink(fd) in targets for fd in (entry / "fd").iterdir())
            if not found:
                continue
            # Whitespace collapsed: an argument with a line break must not split the error line.
            command = " ".join((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").split())
        except OSError:  # gone meanwhile, or not ours to read
            continue
        holders.append((int(entry.name), command or entry.name))
    return sorted(holders)


def describe_holders(port: int) -> str:
    """``"held by PID 123 (python3 -m monitor run)"``, or ``""`` when no holder can be found."""
    holders = port_holders(port)
    if not holders:
        return ""
    described = ", ".join(f"PID {pid} ({command[:80]})" for pid, command in holders[:5])
    more = f" and {len(holders) - 5} more" if len(holders) > 5 else ""
    return f"held by {described}{more}"
