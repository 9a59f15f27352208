"""One push subscription, and the Protocols of what keeps it and what talks to hubs.

A :class:`Subscription` is the monitor's side of one feed's subscription at one hub:
the topic, the callback token and secret (both random, per subscription), what it
waits for, the lease the hub granted, when to act next, and its counts. Its ``state``:

``pending``
    subscribe asked of the hub; its verification of intent has not come yet.
``active``
    verified: the hub pushes until ``expires_at`` (renewed at 80 % of the lease).
``denied``
    the hub refused it (``hub.mode=denied``, ``reason`` kept); asked again after ``[websub] retry_max``.
``failing``
    the hub answered with an error, could not be reached, or the lease ran out; asked again with back-off.
``unsubscribing``
    the feed left the list (or its hub did): unsubscribe asked; the row goes when the hub verifies it.

The store (:class:`SubscriptionStore`) is the SQLite state store in one process; the
poller role keeps the same records on ``[cluster] websub_topic``
(:mod:`monitor.adapters.websubstate`, docs/websub.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "ACTIVE",
    "DENIED",
    "FAILING",
    "NONE",
    "PENDING",
    "PUSH_STATES",
    "SUBSCRIPTION_COLUMNS",
    "UNSUBSCRIBING",
    "HubAnswer",
    "HubClient",
    "Subscription",
    "SubscriptionStore",
]

NONE, PENDING, ACTIVE, DENIED, FAILING, UNSUBSCRIBING = "none", "pending", "active", "denied", "failing", "unsubscribing"
#: Every push state a feed can show, ``none`` for a feed without a subscription.
PUSH_STATES = (NONE, PENDING, ACTIVE, DENIED, FAILING, UNSUBSCRIBING)


@dataclass(slots=True)
class Subscription:
    """One feed's subscription (see the module docstring); mutated on the event loop only."""

    feed_url: str
    hub: str
    topic: str
    #: The last path segment of our callback URL: who a verification or push is for.
    token: str
    secret: str
    #: The callback URL the hub was given (the base may change between runs: then it is asked again).
    callback: str
    state: str = PENDING
    #: The mode the hub's next verification of intent must carry ("subscribe", "unsubscribe"), if any.
    awaiting: str | None = None
    lease_seconds: float | None = None
    expires_at: float | None = None
    #: When the subscriber acts on it next (subscribe again, renew, unsubscribe again).
    next_action_at: float | None = None
    #: Failed requests in a row (the back-off's exponent).
    attempts: int = 0
    last_error: str | None = None
    updated_at: float | None = None
    last_push_at: float | None = None
    pushes: int = 0

    def row(self) -> tuple[object, ...]:
        """The record as a store row, in :data:`SUBSCRIPTION_COLUMNS` order."""
        return tuple(getattr(self, name) for name in SUBSCRIPTION_COLUMNS)


SUBSCRIPTION_COLUMNS: tuple[str, ...] = tuple(Subscription.__dataclass_fields__)


class SubscriptionStore(Protocol):
    """Where subscriptions live across restarts (``monitor.adapters.store.AsyncStore``)."""

    async def load_subscriptions(self) -> list[Subscription]: ...

    async def save_subscription(self, subscription: Subscription) -> None: ...

    async def delete_subscription(self, feed_url: str, token: str) -> None:
        """Delete ``feed_url``'s subscription if the stored one has ``token`` (a newer one,
        of this process or of the feed's next owner, is left alone)."""


@dataclass(frozen=True, slots=True)
class HubAnswer:
    """What a hub answered a subscription request."""

    status: int
    location: str | None = None
    #: Seconds the hub asked us to wait (``Retry-After`` on 429/503).
    retry_after: float | None = None
    #: The start of its body, for the log.
    detail: str = ""


class HubClient(Protocol):
    """Something that POSTs a form to a hub (``monitor.adapters.websub.HttpHubClient``);
    raises :class:`~monitor.errors.FeedError` when the hub cannot be reached."""

    async def post(self, url: str, form: Mapping[str, str]) -> HubAnswer: ...
