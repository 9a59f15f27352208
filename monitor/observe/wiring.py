"""What the observers read of the rest of the daemon, declared as Protocols.

The parts are wired in when they exist (the store and delivery start after the
observers do), and every observer holds the same :class:`Wiring`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from monitor.delivery import DeliveryStats
from monitor.errors import StoreError
from monitor.feeds.state import FeedState
from monitor.model import Record, Rule

if TYPE_CHECKING:
    from monitor.websub.inbox import PushInbox

__all__ = ["ChartView", "DeliveryView", "RoleMetric", "RoleView", "RuleSetView", "RulesView", "SignalsView", "StoreView", "Wiring"]


class StoreView(Protocol):
    """The state store as the observers use it (``monitor.adapters.store.AsyncStore``)."""

    @property
    def failure(self) -> StoreError | None:
        """The store's fault while it is failing, else None."""

    async def all_feed_states(self) -> list[FeedState]: ...

    async def set_feed_health(self, url: str, health: str) -> None: ...

    async def enqueue(self, records: list[Record]) -> None: ...


class DeliveryView(Protocol):
    """Delivery as the observers use it (``monitor.delivery.Delivery``)."""

    @property
    def healthy(self) -> bool: ...

    @property
    def stats(self) -> DeliveryStats: ...

    @property
    def pending(self) -> int: ...

    async def submit(self, records: list[Record]) -> None: ...


class RuleSetView(Protocol):
    @property
    def version(self) -> str: ...

    @property
    def rules(self) -> Sequence[Rule]: ...


class RulesView(Protocol):
    """The rules holder (``monitor.engine.reload.RulesHolder``): the rules in force and its reloads."""

    @property
    def current(self) -> RuleSetView: ...

    @property
    def reloads(self) -> int: ...

    @property
    def reload_failures(self) -> int: ...

    @property
    def last_error(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class RoleMetric:
    """One number a role exposes on ``/metrics`` as ``news_monitor_<name>``."""

    name: str
    help: str
    value: float
    #: A counter (only ever grows) or a gauge.
    counter: bool = True


class RoleView(Protocol):
    """A role of ``news-monitor run --role`` as the observers see it (``monitor.app.roles.Role``)."""

    @property
    def name(self) -> str: ...

    def status(self) -> dict[str, object]:
        """The role's part of the status page and ``/status.json`` (JSON-able values)."""

    def problems(self) -> list[str]:
        """Why the role is not ready now (empty when it is)."""

    def metrics(self) -> list[RoleMetric]: ...


class ChartView(Protocol):
    """One rule's matches per hour (``monitor.signals.Chart``)."""

    @property
    def first_hour(self) -> int: ...

    @property
    def counts(self) -> Sequence[int]: ...

    @property
    def baseline(self) -> float: ...

    @property
    def signals(self) -> Sequence[tuple[float, str]]: ...


class SignalsView(Protocol):
    """The story signals' detectors (``monitor.signals.Signals``): signals raised, by rule
    and kind; the rules with matches in the last 48 hours and their charts."""

    @property
    def raised(self) -> Mapping[str, Mapping[str, int]]: ...

    def active(self, now: float) -> list[str]: ...

    def chart(self, rule_id: str, now: float) -> ChartView | None: ...


@dataclass
class Wiring:
    """The parts the observers read, as they come up."""

    rules: RulesView | None = None
    store: StoreView | None = None
    delivery: DeliveryView | None = None
    signals: SignalsView | None = None
    #: Topic of the feed-health events (records that are not alerts).
    health_topic: str = field(default="monitor.feed-health")
    #: The roles of ``run --role`` (none in the single process), in start order.
    roles: list[RoleView] = field(default_factory=list)
    #: Whether readiness needs rules (a poller-only process has none).
    needs_rules: bool = True
    #: WebSub's pushes and subscriptions, when ``[websub]`` is on.
    websub: PushInbox | None = None
