"""The active rule set and its hot reload.

:meth:`RulesHolder.reload` is the one entry point for "reload now": the file watcher
(:mod:`monitor.adapters.filewatch`) calls it on a change, SIGHUP calls it too.
On each reload the *whole* rule set is loaded and validated again; only a valid set is
swapped in, in one assignment on the event loop, so an article is always matched by one
complete rule set, old or new, never a mix. Reloads never overlap: a second call waits
for the first to finish.

An invalid edit never takes the daemon down: the old set stays active,
``rules.reload.failed`` is logged with the first errors' file, line and column, and the
next change is tried again. A reload that would leave no rule at all (a rule directory
emptied, a rule file emptied, every rule disabled) is refused the same way unless
``allow_empty`` is set: a half-written file or an unmounted volume must not silently
switch every alert off. For the same reason :meth:`RulesHolder.load`, the daemon's start,
refuses rule paths that hold no enabled rule unless ``allow_empty`` is set; when it is,
starting (or reloading) with no enabled rule logs the warning ``rules.empty``.

Reading, compiling, comparing and freeing rule sets (seconds for a large set) happen in
a worker thread, and in small steps, so the event loop keeps answering: no single step
holds the interpreter for long (see :func:`_release`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import sys
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass, field

from monitor.engine import RuleSet, RuleSetError, collect_rules, load_rules
from monitor.engine.loader import rule_files
from monitor.errors import RuleError, error_text
from monitor.log import get_logger
from monitor.model import Rule

__all__ = ["LOGGED_IDS", "RuleSetChanges", "RulesHolder", "why_no_rule"]

log = get_logger("rules")

#: Rule ids (and errors) named per kind in one reload log line; the rest are counted.
LOGGED_IDS = 5


@dataclass(frozen=True)
class RuleSetChanges:
    """What a reload changes: rule ids added, removed and changed (in rule-file order),
    and how many named lists were added, removed or changed."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    lists_changed: int = 0

    @classmethod
    def between(cls, old: RuleSet, new: RuleSet) -> RuleSetChanges:
        """Compare two rule sets; a rule that only moved in its file is not changed."""
        before = {rule.id: _definition(rule) for rule in old.rules}
        after = {rule.id: _definition(rule) for rule in new.rules}
        return cls(
            added=tuple(rule_id for rule_id in after if rule_id not in before),
            removed=tuple(rule_id for rule_id in before if rule_id not in after),
            changed=tuple(rule_id for rule_id, value in after.items() if rule_id in before and before[rule_id] != value),
            lists_changed=len({name for name in old.lists.keys() | new.lists.keys() if old.lists.get(name) != new.lists.get(name)}),
        )

    def summary(self) -> dict[str, object]:
        """Counts and the first :data:`LOGGED_IDS` ids of each kind, for one log line."""
        return {
            "added": len(self.added),
            "removed": len(self.removed),
            "changed": len(self.changed),
            "lists_changed": self.lists_changed,
            "added_ids": list(self.added[:LOGGED_IDS]),
            "removed_ids": list(self.removed[:LOGGED_IDS]),
            "changed_ids": list(self.changed[:LOGGED_IDS]),
        }


_RULE_FIELDS = tuple(f.name for f in dataclasses.fields(Rule) if f.name != "location")


def _definition(rule: Rule) -> tuple[object, ...]:
    return tuple(getattr(rule, name) for name in _RULE_FIELDS)


@dataclass
class _Outcome:
    """What the loading thread found: a rule set to swap in (None: nothing to do)."""

    ruleset: RuleSet | None = None
    changes: RuleSetChanges = field(default_factory=RuleSetChanges)
    error: RuleError | None = None


@dataclass
class RulesHolder:
    """Holds the active :class:`RuleSet`; calling it returns the current one."""

    current: RuleSet
    paths: tuple[str, ...] = ()
    #: Accept a reload that leaves no rule at all (``[rules] allow_empty``).
    allow_empty: bool = False
    #: Freeze a reloaded set out of the cyclic GC (``gc.freeze()``) before any collection
    #: can traverse it, as the daemon does with the first set at start-up: a large set is
    #: hundreds of thousands of objects that every full collection would re-traverse,
    #: stalling the loop. The old set has no reference cycles, so it is still freed; cyclic garbage
    #: that exists at that moment is kept, a bounded cost paid once per reload.
    freeze: bool = False
    reloads: int = 0
    reload_failures: int = 0
    last_error: str | None = None
    #: Called with the new rule set after each successful reload (metrics, topic checks).
    listeners: list[Callable[[RuleSet], None]] = field(default_factory=list)
    #: Called with the error after each failed reload.
    failure_listeners: list[Callable[[RuleError], None]] = field(default_factory=list)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False, compare=False)

    @classmethod
    def load(cls, paths: tuple[str, ...], *, allow_empty: bool = False, freeze: bool = False) -> RulesHolder:
        """The daemon's rules at start: every file valid (:class:`RuleSetError` otherwise) and
        at least one enabled rule, else a :class:`RuleError` naming the rule paths, unless
        ``allow_empty`` (then the warning ``rules.empty``): a daemon that would alert on
        nothing must not start silently, as a reload must not silently empty the set."""
        ruleset = load_rules(paths)
        reason = why_no_rule(ruleset, paths)
        if reason is not None:
            if not allow_empty:
                raise RuleError(
                    f"no enabled rule in {_where(paths)}: {reason}",
                    hint="the monitor would alert on nothing; add or enable a rule, check [rules] paths, "
                    "or set [rules] allow_empty = true to start with no rules",
                )
            _warn_empty(ruleset, paths, reason)
        return cls(ruleset, paths=paths, allow_empty=allow_empty, freeze=freeze)

    def __call__(self) -> RuleSet:
        return self.current

    async def reload(self) -> bool:
        """Load and validate every rule file again; swap in the new set only when all is valid.

        The public "reload now": safe to call from any task on the loop, at any time; calls
        are serialised. Returns False when the reload was refused (the previous rules stay
        active, the failure is logged and counted), True otherwise (also when nothing changed).
        """
        async with self._lock:
            return await self._reload()

    async def _reload(self) -> bool:
        try:
            outcome = await asyncio.to_thread(_load, self.paths, self.current, self.allow_empty, self.freeze)
        except RuleError as exc:
            errors = exc.errors if isinstance(exc, RuleSetError) else [exc]
            log.error(
                "rules.reload.failed",
                errors=[str(e) for e in errors[:LOGGED_IDS]],
                error_count=len(errors),
                active_version=self.current.version,
                hint="the previous rules stay active; fix the file and save it again",
            )
            return self._failed(exc)
        except Exception as exc:
            # A bug in loading, not a mistake in the file: the daemon still keeps running
            # on the rules it has, and the traceback goes to the log for a bug report.
            failure = RuleError(
                f"loading the rules failed unexpectedly: {error_text(exc)}",
                hint="the previous rules stay active; run 'news-monitor rules check' on the files and report the traceback",
            )
            log.exception("rules.reload.crashed", error=str(failure), active_version=self.current.version)
            return self._failed(failure)
        if outcome.error is not None:
            log.error(
                "rules.reload.failed",
                errors=[outcome.error.message],
                error_count=1,
                active_version=self.current.version,
                active_rules=len(self.current.rules),
                hint=outcome.error.hint,
            )
            return self._failed(outcome.error)
        if outcome.ruleset is None:
            log.debug("rules.reload.unchanged", version=self.current.version)
            return True
        self._swap(outcome.ruleset, outcome.changes)
        reason = why_no_rule(self.current, self.paths)
        if reason is not None:
            _warn_empty(self.current, self.paths, reason)
        return True

    def _swap(self, ruleset: RuleSet, changes: RuleSetChanges) -> None:
        """Put ``ruleset`` in force, tell the listeners, and free the old set off the loop."""
        previous, self.current = self.current, ruleset
        self.reloads += 1
        self.last_error = None
        log.info(
            "rules.reloaded",
            version=self.current.version,
            previous_version=previous.version,
            rules=len(self.current.rules),
            **changes.summary(),
        )
        for listener in self.listeners:
            listener(self.current)
        # Dropping the last reference to the old set on the loop would free it there in
        # one go; a thread frees it piece by piece instead.
        old = [previous]
        del previous, ruleset
        threading.Thread(target=_release_logged, args=(old,), name="rules-release", daemon=True).start()

    def _failed(self, error: RuleError) -> bool:
        """Count a refused reload (the active rules stay) and tell the listeners."""
        self.reload_failures += 1
        self.last_error = str(error)
        for listener in self.failure_listeners:
            listener(error)
        return False


def _load(paths: tuple[str, ...], current: RuleSet, allow_empty: bool, freeze: bool) -> _Outcome:
    """Load the rule files and compare them with ``current`` (in a worker thread).

    The cyclic GC stays paused until the new set is frozen or freed: a collection
    triggered right after loading would traverse every object of the new set, holding
    the interpreter (and the event loop) for a long while with a large set.
    """
    collecting = gc.isenabled()
    gc.disable()
    try:
        ruleset, errors = collect_rules(paths)
        if errors or ruleset.version == current.version:
            unused = [ruleset]
            del ruleset
            _release(unused)
            if errors:
                raise RuleSetError(errors)
            return _Outcome()
        active = _enabled(current)
        reason = None if allow_empty or not active else why_no_rule(ruleset, paths)
        if reason is not None:
            return _Outcome(
                error=RuleError(
                    f"the reload would leave no enabled rule in {_where(paths)} ({active} active now): {reason}",
                    hint="the previous rules stay active; restore the rule files, "
                    "or set [rules] allow_empty = true to allow running with no rules",
                )
            )
        changes = RuleSetChanges.between(current, ruleset)
        if freeze:
            gc.freeze()
        return _Outcome(ruleset, changes)
    finally:
        if collecting:
            gc.enable()


def _enabled(ruleset: RuleSet) -> int:
    return sum(1 for rule in ruleset.rules if rule.enabled)


def _where(paths: tuple[str, ...]) -> str:
    return ", ".join(paths) or "[rules] paths"


def why_no_rule(ruleset: RuleSet, paths: tuple[str, ...]) -> str | None:
    """Why ``ruleset`` (loaded from ``paths``) has no enabled rule, in a few words; None
    when it has one."""
    if _enabled(ruleset):
        return None
    if ruleset.rules:
        return f"all {len(ruleset.rules)} rules are disabled (enabled: false)"
    files, _missing = rule_files(paths)
    if not files:
        return "no rule file (*.yaml or *.yml) found"
    return f"{'the rule file holds' if len(files) == 1 else f'the {len(files)} rule files hold'} no rule"


def _warn_empty(ruleset: RuleSet, paths: tuple[str, ...], reason: str) -> None:
    log.warning(
        "rules.empty",
        paths=list(paths),
        rules=len(ruleset.rules),
        reason=reason,
        hint="no article is matched and no alert is raised until a rule is enabled ([rules] allow_empty = true)",
    )


# Never walked into: shared by the whole interpreter (a function leads to its module's globals).
_SHARED = (type, types.ModuleType, types.FunctionType, types.MethodType, types.BuiltinFunctionType, types.CodeType)
_CONTAINERS = (tuple, list, dict, set, frozenset)


def _release_logged(box: list[RuleSet]) -> None:
    """:func:`_release` for a thread of its own: a failure is logged, never raised into nothing."""
    try:
        _release(box, wait=_RELEASE_WAIT)
    except Exception:
        log.exception("rules.release.crashed")


#: Seconds the release of an old rule set waits for polls still using it.
_RELEASE_WAIT = 30.0


def _release(box: list[RuleSet], *, wait: float = 0.0) -> None:
    """Free the rule set in ``box`` a piece at a time (in a worker thread).

    Freeing an object frees everything only it refers to in one uninterruptible step, so
    dropping a large rule set holds the interpreter until all of it is gone. Instead the
    containers and objects of the set are collected (breadth first: its attributes, the
    items of its tuples, lists and dicts, and of those nested in them) and dropped one by
    one, parents first: each drop frees one small object, or one container whose items
    are still held, and the interpreter can switch threads between two drops. Holding an
    extra reference never frees anything in use, so this is safe for any object.

    Polls in flight may still use the old set for a moment; the walk waits (up to
    ``wait`` seconds) until the thread holds the only reference, else the last user
    would free the rest in one go.
    """
    root = box.pop()
    deadline = time.monotonic() + wait
    # 2: the local name and getrefcount's own argument.
    while sys.getrefcount(root) > 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    held: list[object] = []
    level: list[object] = [root]
    walked: set[int] = set()
    for depth in range(8):
        below: list[object] = []
        for obj in level:
            if id(obj) in walked:
                continue
            children = gc.get_referents(obj)
            # Small objects of the set's own types (a rule, a query node) are freed whole.
            if depth >= 2 and len(children) < 32 and not isinstance(obj, _CONTAINERS) and not type(obj).__dictoffset__:
                continue
            walked.add(id(obj))
            for child in children:
                if gc.is_tracked(child) and not isinstance(child, _SHARED):
                    held.append(child)
                    below.append(child)
        level = below
    del level, walked
    del root  # from here on ``held`` keeps every piece alive
    held.reverse()
    while held:
        held.pop()
