"""The active rule set and its hot reload.

The daemon watches its rule paths. On any change the *whole* rule set is loaded and
validated again; only a valid set is swapped in, in one assignment, so an article is
always matched by one complete rule set, old or new, never a mix. An invalid edit
never takes the daemon down: the old set stays active, ``rules.reload.failed`` is
logged with every error's file, line and column, and the next change is tried again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from monitor.engine import RuleSet, RuleSetError, load_rules
from monitor.errors import RuleError
from monitor.log import get_logger

__all__ = ["RulesHolder", "watch_rules"]

log = get_logger("rules")

_RULE_SUFFIXES = (".yaml", ".yml")


@dataclass
class RulesHolder:
    """Holds the active :class:`RuleSet`; calling it returns the current one."""

    current: RuleSet
    paths: tuple[str, ...] = ()
    reloads: int = 0
    reload_failures: int = 0
    last_error: str | None = None
    #: Called with the new rule set after each successful reload (metrics, topic checks).
    listeners: list[Callable[[RuleSet], None]] = field(default_factory=list)
    #: Called with the error after each failed reload.
    failure_listeners: list[Callable[[RuleError], None]] = field(default_factory=list)

    def __call__(self) -> RuleSet:
        return self.current

    async def reload(self) -> bool:
        """Load and validate every rule file again; swap in the new set only when all is valid."""
        try:
            # Reading and compiling thousands of rules takes a moment: keep the loop free.
            ruleset = await asyncio.to_thread(load_rules, list(self.paths))
        except RuleError as exc:
            errors = exc.errors if isinstance(exc, RuleSetError) else [exc]
            log.error(
                "rules.reload.failed",
                errors=[str(e) for e in errors],
                active_version=self.current.version,
                hint="the previous rules stay active; fix the file and save it again",
            )
            return self._failed(exc)
        except Exception as exc:
            # A bug in loading, not a mistake in the file: the daemon still keeps running
            # on the rules it has, and the traceback goes to the log for a bug report.
            failure = RuleError(
                f"loading the rules failed unexpectedly: {type(exc).__name__}: {exc}",
                hint="the previous rules stay active; run 'news-monitor rules check' on the files and report the traceback",
            )
            log.exception("rules.reload.crashed", error=str(failure), active_version=self.current.version)
            return self._failed(failure)
        if ruleset.version == self.current.version:
            log.debug("rules.reload.unchanged", version=ruleset.version)
            return True
        previous = self.current
        self.current = ruleset
        self.reloads += 1
        self.last_error = None
        log.info(
            "rules.reloaded",
            version=ruleset.version,
            previous_version=previous.version,
            rules=len(ruleset.rules),
            added=sorted({r.id for r in ruleset.rules} - {r.id for r in previous.rules}),
            removed=sorted({r.id for r in previous.rules} - {r.id for r in ruleset.rules}),
        )
        for listener in self.listeners:
            listener(ruleset)
        return True

    def _failed(self, error: RuleError) -> bool:
        """Count a refused reload (the active rules stay) and tell the listeners."""
        self.reload_failures += 1
        self.last_error = str(error)
        for listener in self.failure_listeners:
            listener(error)
        return False


def _watch_targets(paths: Iterable[str]) -> tuple[list[Path], set[Path], set[Path]]:
    """(directories to watch, rule directories, single rule files) for the rule paths.

    A single file is watched through its directory, and by the path it was given as well
    as the file it points to: editors save by writing a new file and renaming it over
    the old one, which a watch on the file itself would lose, and a Kubernetes ConfigMap
    mounts it as a symlink through ``..data`` whose target directory is replaced on every
    update.
    """
    watched: list[Path] = []
    rule_dirs: set[Path] = set()
    rule_files: set[Path] = set()
    for raw in paths:
        given = Path(raw).absolute()
        if given.is_dir():
            target = given.resolve()
            rule_dirs.add(target)
        else:
            rule_files.update((given, given.resolve()))
            target = given.parent
        if target.exists() and target not in watched:
            watched.append(target)
    return watched, rule_dirs, rule_files


def _relevant(changed: Path, rule_dirs: set[Path], rule_files: set[Path]) -> bool:
    """Whether a change reported under a watched directory may change the rule set."""
    resolved = changed.resolve()
    if changed in rule_files or resolved in rule_files:
        return True
    if changed.name.startswith("..") and any(changed.parent == f.parent for f in rule_files):
        # Kubernetes swaps the "..data" symlink that a ConfigMap's files point through.
        return True
    return resolved.suffix in _RULE_SUFFIXES and any(d in resolved.parents for d in rule_dirs)


async def watch_rules(holder: RulesHolder, stop: asyncio.Event, *, debounce_ms: int = 400) -> None:
    """Reload ``holder`` whenever a rule file under its paths changes, until ``stop`` is set."""
    from watchfiles import awatch

    directories, rule_dirs, rule_files = _watch_targets(holder.paths)
    if not directories:
        log.warning("rules.watch.disabled", reason="no rule path exists to watch", paths=list(holder.paths))
        return
    log.info("rules.watch.started", paths=[str(d) for d in directories])
    async for changes in awatch(*directories, stop_event=stop, debounce=debounce_ms, step=50, recursive=True):
        if any(_relevant(Path(path), rule_dirs, rule_files) for _change, path in changes):
            await holder.reload()
