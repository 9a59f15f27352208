"""Fixtures of the WebSub tests: a local W3C hub, and the WebSub parts of one process."""

from __future__ import annotations

import pytest

from monitor.model import Feed
from tests.websub.hub import Hub
from tests.websub.support import TOPIC, Parts


@pytest.fixture
async def hub():
    hub = await Hub().start()
    try:
        yield hub
    finally:
        await hub.stop()


START_OPTIONS = ("rate_limit", "max_bytes", "port", "queue_size")


@pytest.fixture
async def running(tmp_path):
    started: list[Parts] = []

    async def start(feeds=None, **options):
        parts = await Parts(tmp_path, **{k: v for k, v in options.items() if k not in START_OPTIONS}).start(
            list(feeds or [Feed(TOPIC)]), **{k: v for k, v in options.items() if k in START_OPTIONS}
        )
        started.append(parts)
        return parts

    yield start
    for parts in started:
        await parts.stop()


