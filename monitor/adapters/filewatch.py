"""The rule files' watcher: reloads the rules when a file under the rule paths changes.

Built on watchfiles (inotify on Linux). What a reload does, and what it refuses, is the
rules holder's business (:class:`monitor.engine.reload.RulesHolder`); this module only
decides which file system events may change the rule set.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

from watchfiles import awatch

from monitor.engine.reload import RulesHolder
from monitor.log import get_logger

__all__ = ["watch_rules"]

log = get_logger("rules")

_RULE_SUFFIXES = (".yaml", ".yml")


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
    directories, rule_dirs, rule_files = _watch_targets(holder.paths)
    if not directories:
        log.warning("rules.watch.disabled", reason="no rule path exists to watch", paths=list(holder.paths))
        return
    log.info("rules.watch.started", paths=[str(d) for d in directories])
    async for changes in awatch(*directories, stop_event=stop, debounce=debounce_ms, step=50, recursive=True):
        if any(_relevant(Path(path), rule_dirs, rule_files) for _change, path in changes):
            await holder.reload()
