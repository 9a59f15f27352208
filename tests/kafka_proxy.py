"""A Kafka-protocol proxy on loopback that injects broker errors, in front of a real Tansu.

The broker advertises the proxy's address, so every client connection goes through it.
Requests and responses pass byte for byte, in order, except:

* in a Produce request, the partitions of every topic whose name contains ``marker``
  are answered by the proxy with ``error_code``, as a broker answers records it
  refuses; the rest of the request goes to the broker, and its answer is merged;
* while :attr:`KafkaProxy.down` is set, new connections are closed at once and open
  ones are cut (an outage, like a broker that is away).

Only the Produce response is built here (non-flexible versions 0-8, those aiokafka
speaks), from aiokafka's own protocol classes; everything else is the broker's.
"""

from __future__ import annotations

import asyncio
import struct
import subprocess
from collections import deque
from io import BytesIO
from typing import Any

from aiokafka.protocol import produce

from monitor.adapters.broker import free_port, resolve_broker_binary, wait_for_port


class KafkaProxy:
    def __init__(self, *, marker: bytes = b"", error_code: int = 0) -> None:
        self.port = free_port()
        self.broker_port = free_port()
        self.marker = marker
        self.error_code = error_code
        #: Produce requests answered with ``error_code``.
        self.refused = 0
        self.down = False
        self._broker: subprocess.Popen[bytes] | None = None
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> KafkaProxy:
        self._broker = subprocess.Popen(
            [
                resolve_broker_binary(), "broker",
                "--listener-url", f"tcp://127.0.0.1:{self.broker_port}",
                "--advertised-listener-url", f"tcp://127.0.0.1:{self.port}",
                "--storage-engine", "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        if not await asyncio.to_thread(wait_for_port, "127.0.0.1", self.broker_port, 15.0):
            await self.stop()
            raise RuntimeError("tansu did not listen within 15 s")
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    def cut(self) -> None:
        """Close every open client connection (with :attr:`down` set: an outage)."""
        for writer in list(self._writers):
            writer.close()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._broker is not None and self._broker.poll() is None:
            self._broker.terminate()
            await asyncio.to_thread(self._broker.wait, 10)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        if self.down:
            client_writer.close()
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(client_writer)
        try:
            broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", self.broker_port)
        except OSError:
            client_writer.close()
            return
        # Responses go back in request order, whoever answers (the broker or the proxy).
        answers: asyncio.Queue[asyncio.Future[bytes]] = asyncio.Queue()
        waiting: deque[tuple[asyncio.Future[bytes], Any]] = deque()
        loop = asyncio.get_running_loop()

        async def requests() -> None:
            while True:
                frame = await _read_frame(client_reader)
                api_key, version, correlation = struct.unpack(">hhi", frame[4:12])
                answer: asyncio.Future[bytes] = loop.create_future()
                split = _split_produce(frame, version, self.marker) if api_key == 0 and self.marker else None
                if split is None:
                    waiting.append((answer, None))
                    broker_writer.write(frame)
                    await broker_writer.drain()
                else:
                    forward, refused = split
                    self.refused += sum(len(partitions) for _topic, partitions in refused)
                    errors = [(topic, [(partition, self.error_code) for partition, _ in partitions]) for topic, partitions in refused]
                    if forward is None:
                        answer.set_result(_produce_response(version, correlation, [], errors))
                    else:
                        waiting.append((answer, (version, errors)))
                        broker_writer.write(forward)
                        await broker_writer.drain()
                await answers.put(answer)

        async def responses() -> None:
            while True:
                frame = await _read_frame(broker_reader)
                answer, merge = waiting.popleft()
                if merge is not None:
                    version, errors = merge
                    (correlation,) = struct.unpack(">i", frame[4:8])
                    decoded = getattr(produce, f"ProduceResponse_v{version}").decode(frame[8:])
                    frame = _produce_response(version, correlation, decoded.topics, errors)
                answer.set_result(frame)

        async def replies() -> None:
            while True:
                answer = await answers.get()
                client_writer.write(await answer)
                await client_writer.drain()

        parts = [asyncio.create_task(part()) for part in (requests, responses, replies)]
        try:
            await asyncio.wait(parts, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for part in parts:
                part.cancel()
            await asyncio.gather(*parts, return_exceptions=True)
            for writer in (client_writer, broker_writer):
                writer.close()
            self._writers.discard(client_writer)
            self._tasks.discard(task)


async def _read_frame(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readexactly(4)
    (size,) = struct.unpack(">i", head)
    return head + await reader.readexactly(size)


def _split_produce(frame: bytes, version: int, marker: bytes) -> tuple[bytes | None, list[Any]] | None:
    """None when no topic of this Produce request is marked; else (the request without the
    marked topics, or None when nothing is left; the marked topics and their partitions)."""
    body = BytesIO(frame[12:])
    (client_id_length,) = struct.unpack(">h", body.read(2))
    body.read(max(0, client_id_length))
    header = frame[4 : 12 + 2 + max(0, client_id_length)]
    request_class = getattr(produce, f"ProduceRequest_v{version}")
    decoded = request_class.decode(body)
    refused = [(topic, partitions) for topic, partitions in decoded.topics if marker in topic.encode()]
    if not refused:
        return None
    kept = [(topic, partitions) for topic, partitions in decoded.topics if marker not in topic.encode()]
    if not kept:
        return None, refused
    values = [getattr(decoded, name) for name in request_class.SCHEMA.names]
    values[request_class.SCHEMA.names.index("topics")] = kept
    payload = header + request_class(*values).encode()
    return struct.pack(">i", len(payload)) + payload, refused


def _produce_response(version: int, correlation: int, topics: list[Any], errors: list[Any]) -> bytes:
    """A Produce response frame of ``version``: the broker's ``topics`` plus ``errors``, a list
    of (topic, [(partition, error code)])."""
    answered = [(topic, [tuple(p) for p in partitions]) for topic, partitions in topics]
    for topic, partitions in errors:
        entries = []
        for partition, code in partitions:
            entry: tuple[Any, ...] = (partition, code, -1)
            if version >= 2:
                entry += (-1,)
            if version >= 5:
                entry += (-1,)
            if version >= 8:
                entry += ([], None)
            entries.append(entry)
        answered.append((topic, entries))
    response_class = getattr(produce, f"ProduceResponse_v{version}")
    response = response_class(answered, 0) if version >= 1 else response_class(answered)
    payload = struct.pack(">i", correlation) + response.encode()
    return struct.pack(">i", len(payload)) + payload
