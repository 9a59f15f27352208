"""Hot reload of rule files in a running daemon, against the real broker."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from pathlib import Path

import orjson
import pytest

from monitor.worker import Monitor
from tests.support import RULES, make_settings, read_topic

pytestmark = pytest.mark.integration

FEED = """<?xml version="1.0"?><rss version="2.0"><channel><title>Widgets Daily</title><link>https://widgets.example/</link>
{items}</channel></rss>"""
ITEM = """<item><title>{title}</title><link>https://widgets.example/{slug}</link><guid>https://widgets.example/{slug}</guid>
<description>{text}</description></item>"""


def _feed(*stories: tuple[str, str]) -> str:
    return FEED.format(items="".join(ITEM.format(slug=slug, title=f"Story {slug}", text=text) for slug, text in stories))


async def _until(condition, timeout: float = 20.0) -> None:
    async def wait() -> None:
        while not condition():
            await asyncio.sleep(0.05)

    await asyncio.wait_for(wait(), timeout)


def _rule(rule_id: str, topic: str, query: str) -> str:
    return f"rules:\n  - id: {rule_id}\n    topic: {topic}\n    query: '{query}'\n"


async def test_rule_edits_apply_live_and_broken_edits_keep_old_rules(broker, feed_server, tmp_path):
    rules = tmp_path / "rules"
    shutil.copytree(RULES, rules)
    topic = f"alerts.widgets-{uuid.uuid4().hex[:8]}"
    url = feed_server.serve("/widgets.rss", _feed(("a", "Quantum widget makers gathered in Oslo.")))
    settings = make_settings(
        tmp_path,
        broker.bootstrap_servers,
        [{"url": url, "interval": 1}],
        rules=[rules],
        overrides={"rules": {"watch": True}},
    )
    monitor = Monitor(settings)
    run = asyncio.create_task(monitor.run(handle_signals=False))
    try:
        await _until(lambda: monitor.summary.polls >= 1)
        assert sum(monitor.summary.alerts_by_topic.values()) == 0

        # An operator adds a rule while the daemon runs.
        (rules / "widgets.yaml").write_text(_rule("widgets", topic, '"quantum widget*"'))
        await _until(lambda: monitor.rules.reloads == 1)
        assert monitor.rules.current.get("widgets") is not None

        feed_server.serve("/widgets.rss", _feed(("a", "Quantum widget makers gathered in Oslo."), ("b", "Quantum widgets sold out in Bergen.")))
        records = await read_topic(broker.bootstrap_servers, topic, until=lambda rs: len(rs) >= 1, timeout=20)
        assert len(records) == 1
        assert b"widgets.example/b" in records[0].value

        # A broken edit: the old rules stay active and the daemon keeps publishing.
        version = monitor.rules.current.version
        (rules / "widgets.yaml").write_text(_rule("widgets", topic, '("quantum widget*" AND'))
        await _until(lambda: monitor.rules.reload_failures >= 1)
        assert monitor.rules.current.version == version
        assert "widgets.yaml:4" in (monitor.rules.last_error or "")

        feed_server.serve(
            "/widgets.rss",
            _feed(("a", "Quantum widget makers gathered in Oslo."), ("b", "Quantum widgets sold out in Bergen."), ("c", "A quantum widget recall in Trondheim.")),
        )
        records = await read_topic(broker.bootstrap_servers, topic, until=lambda rs: len(rs) >= 2, timeout=20)
        urls = sorted(orjson.loads(r.value)["article"]["url"] for r in records)
        assert urls == ["https://widgets.example/b", "https://widgets.example/c"]
        assert not run.done()
    finally:
        monitor.stop()
        await asyncio.wait_for(run, timeout=20)
    # The first article was never re-alerted by the new rule: it was already seen unchanged.
    assert not any(orjson.loads(r.value)["article"]["url"].endswith("/a") for r in records)


async def test_reload_swaps_whole_set_or_nothing(tmp_path):
    from monitor.engine import load_rules
    from monitor.hot_reload import RulesHolder

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "one.yaml").write_text(_rule("one", "alerts.one", "alpha"))
    holder = RulesHolder(load_rules([rules]), paths=(str(rules),))
    # Two files change; one is broken: neither change may apply.
    (rules / "one.yaml").write_text(_rule("one", "alerts.one", "beta"))
    (rules / "two.yaml").write_text(_rule("two", "alerts.two", "(gamma"))
    assert await holder.reload() is False
    assert [r.query for r in holder.current.rules] == ["alpha"]
    (rules / "two.yaml").write_text(_rule("two", "alerts.two", "gamma"))
    assert await holder.reload() is True
    assert sorted(r.query for r in holder.current.rules) == ["beta", "gamma"]
    assert holder.reloads == 1 and holder.reload_failures == 1


async def test_a_crash_while_loading_keeps_the_old_rules_and_is_counted(tmp_path, monkeypatch):
    # A bug in the loader (not a mistake in the file) must not end the watch task, and
    # with it the daemon: the reload fails like a bad edit would, with the traceback logged.
    from monitor import hot_reload
    from monitor.engine import load_rules
    from monitor.errors import RuleError

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "one.yaml").write_text(_rule("one", "alerts.one", "alpha"))
    failures: list[RuleError] = []
    holder = hot_reload.RulesHolder(load_rules([rules]), paths=(str(rules),), failure_listeners=[failures.append])

    def crash(paths):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(hot_reload, "load_rules", crash)
    assert await holder.reload() is False
    assert [r.query for r in holder.current.rules] == ["alpha"]
    assert holder.reload_failures == 1 and holder.reloads == 0
    assert "RecursionError" in (holder.last_error or "") and len(failures) == 1
    monkeypatch.undo()
    (rules / "one.yaml").write_text(_rule("one", "alerts.one", "beta"))
    assert await holder.reload() is True and [r.query for r in holder.current.rules] == ["beta"]


def _kubelet_update(mount: Path, rule_text: str, stamp: str) -> None:
    """What the kubelet does to a ConfigMap volume on every update: the files go into a
    new timestamped directory, the ``..data`` symlink is swapped to it atomically (via
    ``..data_tmp``), and the old directory is removed. The visible files are symlinks
    through ``..data``."""
    import os

    fresh = mount / f"..{stamp}"
    fresh.mkdir()
    (fresh / "rules.yaml").write_text(rule_text)
    previous = os.readlink(mount / "..data") if (mount / "..data").is_symlink() else None
    os.symlink(fresh.name, mount / "..data_tmp")
    os.replace(mount / "..data_tmp", mount / "..data")
    if not (mount / "rules.yaml").is_symlink():
        os.symlink("..data/rules.yaml", mount / "rules.yaml")
    if previous:
        shutil.rmtree(mount / previous)


@pytest.mark.parametrize("configured", ["directory", "file"])
async def test_configmap_updates_reload_every_time(tmp_path, configured):
    # A rule file given by its own path is a symlink into a directory that each update
    # replaces: watching where it pointed at start-up saw the first update only.
    from monitor.engine import load_rules
    from monitor.hot_reload import RulesHolder, watch_rules

    mount = tmp_path / "rules"
    mount.mkdir()
    _kubelet_update(mount, _rule("one", "alerts.one", "alpha"), "2026_11_26_01")
    path = str(mount if configured == "directory" else mount / "rules.yaml")
    holder = RulesHolder(load_rules([path]), paths=(path,))
    reloaded = asyncio.Queue()
    holder.listeners.append(reloaded.put_nowait)
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_rules(holder, stop, debounce_ms=50))

    async def reload_to(query: str, timeout: float) -> None:
        while [r.query for r in (await asyncio.wait_for(reloaded.get(), timeout)).rules] != [query]:
            pass

    try:
        # awatch gives no signal once its watch is in place, and an update before that
        # is never seen: update until one reload shows the watch is live.
        for attempt in range(100):
            _kubelet_update(mount, _rule("one", "alerts.one", f"warmup{attempt}"), f"2026_11_26_00_{attempt:02}")
            try:
                await reload_to(f"warmup{attempt}", timeout=0.5)
                break
            except TimeoutError:
                continue
        for stamp, query in (("2026_11_26_02", "beta"), ("2026_11_26_03", "gamma")):
            _kubelet_update(mount, _rule("one", "alerts.one", query), stamp)
            await reload_to(query, timeout=20)
            assert [r.query for r in holder.current.rules] == [query]
    finally:
        stop.set()
        await watcher


async def test_a_reloaded_rule_set_is_kept_out_of_full_gc_traversals(tmp_path):
    # At 10,000 rules a reloaded set is ~260,000 objects; left in the collector's
    # generations, every full collection re-traversed them and stalled the loop for
    # 100-200 ms. The daemon freezes them as it froze the first set at start-up.
    import gc

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "one.yaml").write_text(_rule("one", "alerts.one", "alpha"))
    monitor = Monitor(make_settings(tmp_path, "127.0.0.1:9", ["http://127.0.0.1:9/feed.xml"], rules=[rules]))
    (rules / "one.yaml").write_text(_rule("one", "alerts.one", "beta OR " + " OR ".join(f"w{i}" for i in range(500))))
    before = gc.get_freeze_count()
    try:
        assert await monitor.rules.reload() is True
        # Every object the new rule set holds is now in the permanent generation.
        assert gc.get_freeze_count() - before >= 500
        tracked = {id(o) for o in gc.get_objects()}
        assert not any(id(rule) in tracked for rule in monitor.rules.current.rules)
    finally:
        gc.unfreeze()
