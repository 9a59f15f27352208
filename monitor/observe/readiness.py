"""Readiness: whether the daemon can do its job now (``/readyz``), and if not why."""

from __future__ import annotations

from monitor.log import get_logger
from monitor.observe.wiring import Wiring

__all__ = ["Readiness"]

log = get_logger("observer")


class Readiness:
    """Rules loaded, broker reachable, state store writable, publishing working."""

    def __init__(self, wiring: Wiring) -> None:
        self._wiring = wiring
        self.broker_up: bool | None = None
        self.broker_error: str | None = None

    def broker_checked(self, reachable: bool, error: str | None = None) -> None:
        """The result of the periodic broker check (logged when it changes)."""
        if reachable != self.broker_up:
            if reachable:
                log.info("broker.reachable")
            else:
                log.warning("broker.unreachable", error=error)
        self.broker_up = reachable
        self.broker_error = None if reachable else error

    def check(self) -> tuple[bool, list[str]]:
        """(ready, the problems when not)."""
        wiring = self._wiring
        problems: list[str] = []
        if wiring.rules is None and wiring.needs_rules:
            problems.append("rules are not loaded")
        failure = wiring.store.failure if wiring.store is not None else None
        if failure is not None:
            problems.append(f"the state store is failing: {failure}")
        if self.broker_up is None:
            problems.append("the broker has not been checked yet")
        elif not self.broker_up:
            problems.append(f"the broker is unreachable: {self.broker_error or 'no answer'}")
        for role in wiring.roles:
            problems.extend(f"{role.name}: {problem}" for problem in role.problems())
        delivery = wiring.delivery
        if delivery is None and wiring.needs_rules:
            problems.append("delivery has not started")
        elif delivery is not None and not delivery.healthy and delivery.pending:
            problems.append(f"publishing is failing; {delivery.pending} record(s) wait for the broker")
        return not problems, problems
