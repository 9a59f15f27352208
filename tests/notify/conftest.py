"""Fixtures of the notify tests."""

from __future__ import annotations

import pytest

from tests.notify.support import Webhook


@pytest.fixture
async def webhook():
    """A local webhook destination (loopback), stopped after the test."""
    server = await Webhook().start()
    try:
        yield server
    finally:
        await server.stop()
