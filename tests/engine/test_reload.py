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
    from monitor.engine.reload import RulesHolder

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
    from monitor.engine import load_rules
    from monitor.engine import reload as hot_reload
    from monitor.errors import RuleError

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "one.yaml").write_text(_rule("one", "alerts.one", "alpha"))
    failures: list[RuleError] = []
    holder = hot_reload.RulesHolder(load_rules([rules]), paths=(str(rules),), failure_listeners=[failures.append])

    def crash(paths):
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(hot_reload, "collect_rules", crash)
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
    from monitor.adapters.filewatch import watch_rules
    from monitor.engine import load_rules
    from monitor.engine.reload import RulesHolder

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


def _holder(rules: Path, **kwargs):
    from monitor.engine import load_rules
    from monitor.engine.reload import RulesHolder

    return RulesHolder(load_rules([rules]), paths=(str(rules),), **kwargs)


def _rules_file(count: int, prefix: str = "r", query: str = "alpha") -> str:
    return "rules:\n" + "".join(f"  - id: {prefix}{i}\n    topic: alerts.t\n    query: '{query}{i}'\n" for i in range(count))


@pytest.mark.parametrize("how", ["file emptied", "file with an empty list", "directory emptied", "file deleted"])
async def test_a_reload_that_would_remove_every_rule_keeps_the_old_rules(tmp_path, how, log_lines):
    # A half-written file or an unmounted volume must not switch every alert off.
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "one.yaml").write_text(_rule("one", "alerts.one", "alpha"))
    path = folder if how == "directory emptied" else folder / "one.yaml"
    holder = _holder(path)
    failures = []
    holder.failure_listeners.append(failures.append)
    if how == "file emptied":
        (folder / "one.yaml").write_text("")
    elif how == "file with an empty list":
        (folder / "one.yaml").write_text("rules: []\n")
    else:
        (folder / "one.yaml").unlink()
    assert await holder.reload() is False
    assert [r.id for r in holder.current.rules] == ["one"]
    assert holder.reload_failures == 1 and holder.reloads == 0 and len(failures) == 1
    failed = [orjson.loads(line) for line in log_lines() if '"rules.reload.failed"' in line]
    assert len(failed) == 1 and failed[0]["level"] == "error"
    if how == "file deleted":
        assert "no such rule file" in holder.last_error
    else:
        assert "would leave no enabled rule in" in holder.last_error and "(1 active now)" in holder.last_error
        assert "allow_empty = true" in holder.last_error and "allow_empty = true" in failed[0]["hint"]


async def test_allow_empty_accepts_a_reload_with_no_rules(tmp_path):
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "one.yaml").write_text(_rule("one", "alerts.one", "alpha"))
    holder = _holder(folder, allow_empty=True)
    (folder / "one.yaml").unlink()
    assert await holder.reload() is True
    assert len(holder.current.rules) == 0 and holder.reloads == 1 and holder.reload_failures == 0


def test_the_allow_empty_setting_reaches_the_daemons_rules(tmp_path):
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "one.yaml").write_text(_rule("one", "alerts.one", "alpha"))
    for allow in (False, True):
        settings = make_settings(tmp_path, "127.0.0.1:9", ["http://127.0.0.1:9/feed.xml"], rules=[rules], overrides={"rules": {"allow_empty": allow}})
        assert Monitor(settings).rules.allow_empty is allow


@pytest.fixture
def log_lines():
    """The daemon's JSON log lines at info level while the test runs (as raw text)."""
    import io

    from monitor.log import configure_logging

    stream = io.StringIO()
    configure_logging("info", "json", stream)
    yield lambda: stream.getvalue().splitlines()
    configure_logging("warning", "json")  # what conftest set up for the rest of the suite


async def test_the_reload_log_line_summarises_the_changes(tmp_path, log_lines):
    # With 100,000 rules the line listed every id: one 889 KB line.
    from monitor.engine.reload import LOGGED_IDS

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.yaml").write_text(_rules_file(2000))
    holder = _holder(rules)
    # 1,000 rules removed, 1,000 added, 500 changed, and 500 that only moved in the file.
    kept = "".join(f"  - id: r{i}\n    topic: alerts.t\n    query: '{'beta' if i < 1500 else 'alpha'}{i}'\n" for i in range(1000, 2000))
    (rules / "a.yaml").write_text("rules:\n" + "".join(f"  - id: n{i}\n    topic: alerts.t\n    query: 'gamma{i}'\n" for i in range(1000)) + kept)
    assert await holder.reload() is True
    [line] = [line for line in log_lines() if '"rules.reloaded"' in line]
    assert len(line) < 1000
    event = orjson.loads(line)
    assert (event["added"], event["removed"], event["changed"], event["rules"]) == (1000, 1000, 500, 2000)
    assert event["added_ids"] == [f"n{i}" for i in range(LOGGED_IDS)]
    assert event["removed_ids"] == [f"r{i}" for i in range(LOGGED_IDS)]
    assert event["changed_ids"] == [f"r{i}" for i in range(1000, 1000 + LOGGED_IDS)]


async def test_reloads_never_overlap(tmp_path, monkeypatch):
    # The watcher and a signal handler may ask at the same moment. Two loads at once could
    # finish in either order, and the one that read the files first could swap in last.
    import threading

    from monitor.engine import loader

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.yaml").write_text(_rules_file(3))
    holder = _holder(rules)
    (rules / "a.yaml").write_text(_rules_file(3, query="beta"))
    collect = loader._collect_rules
    inside: list[int] = []
    most = [0]
    second = threading.Event()

    def counting(paths):
        inside.append(1)
        most[0] = max(most[0], len(inside))
        if len(inside) > 1:
            second.set()
        else:
            second.wait(1.0)  # long enough for an overlapping load to start
        try:
            return collect(paths)
        finally:
            inside.pop()

    monkeypatch.setattr(loader, "_collect_rules", counting)
    assert await asyncio.gather(holder.reload(), holder.reload()) == [True, True]
    assert most[0] == 1
    assert holder.reloads == 1 and [r.query for r in holder.current.rules] == ["beta0", "beta1", "beta2"]


async def test_reload_work_stays_off_the_event_loop(tmp_path):
    # Loading ran in a thread, but a garbage collection right after it traversed the whole
    # young rule set (0.7 s at 100,000 rules), and the old set was freed on the loop in one
    # go (0.4 s): /healthz took 1.7 s to answer during such a reload.
    import gc
    import threading
    import weakref

    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "a.yaml").write_text(_rules_file(3000))
    monitor = Monitor(make_settings(tmp_path, "127.0.0.1:9", ["http://127.0.0.1:9/feed.xml"], rules=[rules]))
    freed = threading.Event()
    freed_in: list[int] = []

    def on_free() -> None:
        freed_in.append(threading.get_ident())
        freed.set()

    weakref.finalize(monitor.rules.current, on_free)
    young_at_collection: list[int] = []

    def on_collection(phase: str, _info: dict) -> None:
        if phase == "start":
            young_at_collection.append(gc.get_count()[0])

    (rules / "a.yaml").write_text(_rules_file(3000, query="beta"))
    gc.callbacks.append(on_collection)
    try:
        assert await monitor.rules.reload() is True
        assert await asyncio.get_running_loop().run_in_executor(None, freed.wait, 20)
    finally:
        gc.callbacks.remove(on_collection)
        gc.unfreeze()
    # 3,000 rules are ~75,000 objects: no collection saw them young.
    assert max(young_at_collection, default=0) < 20_000
    assert freed_in and freed_in[0] != threading.get_ident()


def _no_enabled_rule(folder: Path, how: str) -> None:
    folder.mkdir()
    if how == "only disabled rules":
        (folder / "one.yaml").write_text(_rule("one", "alerts.one", "alpha") + "    enabled: false\n")
    elif how == "no rule file":
        (folder / "README.md").write_text("rules go here\n")
        (folder / "one.yaml.bak").write_text(_rule("one", "alerts.one", "alpha"))
    elif how == "an empty rule list":
        (folder / "one.yaml").write_text("rules: []\n")


@pytest.mark.parametrize(
    ("how", "reason"),
    [
        ("empty directory", "no rule file (*.yaml or *.yml) found"),
        ("no rule file", "no rule file (*.yaml or *.yml) found"),
        ("an empty rule list", "the rule file holds no rule"),
        ("only disabled rules", "all 1 rules are disabled (enabled: false)"),
    ],
)
def test_the_daemon_and_the_matcher_role_refuse_to_start_with_no_enabled_rule(tmp_path, how, reason):
    # Before: both started and silently alerted on nothing.
    from monitor.app.roles import RoleHost
    from monitor.errors import RuleError

    folder = tmp_path / "rules"
    _no_enabled_rule(folder, how)
    settings = make_settings(tmp_path, "127.0.0.1:9", ["http://127.0.0.1:9/feed.xml"], rules=[folder])
    for start in (lambda: Monitor(settings), lambda: RoleHost(settings, ("matcher",))):
        with pytest.raises(RuleError) as refused:
            start()
        assert str(refused.value) == (
            f"no enabled rule in {folder}: {reason} (the monitor would alert on nothing; add or enable a rule, "
            "check [rules] paths, or set [rules] allow_empty = true to start with no rules)"
        )
    # The roles that match nothing do not read the rules: not refused.
    assert RoleHost(settings, ("poller",)).rules is None


async def test_allow_empty_starts_with_no_enabled_rule_and_says_so(broker, feed_server, tmp_path, log_lines):
    from monitor.adapters.web import render_status_page

    folder = tmp_path / "rules"
    _no_enabled_rule(folder, "only disabled rules")
    url = feed_server.serve(f"/empty-{uuid.uuid4().hex[:8]}.rss", _feed(("a", "Quantum widget makers gathered in Oslo.")))
    settings = make_settings(tmp_path, broker.bootstrap_servers, [url], rules=[folder], overrides={"rules": {"allow_empty": True}})
    monitor = Monitor(settings)
    [warning] = [orjson.loads(line) for line in log_lines() if '"rules.empty"' in line]
    assert warning["level"] == "warning" and warning["paths"] == [str(folder)] and warning["rules"] == 1
    assert warning["reason"] == "all 1 rules are disabled (enabled: false)"
    page = render_status_page(monitor.observer.status.snapshot(), refresh=0)
    assert 'id="no-rules">no enabled rule: no article is matched and no alert is raised<' in page
    summary = await monitor.run(once=True, handle_signals=False)
    assert summary.polls == 1 and summary.alerts_raised == 0


async def test_a_reload_that_disables_every_rule_is_refused_unless_allowed(tmp_path, log_lines):
    # Before: accepted, and the daemon went on alerting on nothing.
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "one.yaml").write_text(_rule("one", "alerts.one", "alpha"))
    refused, allowed = _holder(folder), _holder(folder, allow_empty=True)
    (folder / "one.yaml").write_text(_rule("one", "alerts.one", "alpha") + "    enabled: false\n")
    assert await refused.reload() is False
    assert refused.current.rules[0].enabled and refused.reload_failures == 1
    assert refused.last_error == (
        f"the reload would leave no enabled rule in {folder} (1 active now): all 1 rules are disabled (enabled: false) "
        "(the previous rules stay active; restore the rule files, or set [rules] allow_empty = true to allow running with no rules)"
    )
    assert await allowed.reload() is True
    assert not allowed.current.rules[0].enabled and allowed.reloads == 1
    [warning] = [orjson.loads(line) for line in log_lines() if '"rules.empty"' in line]
    assert warning["level"] == "warning" and warning["reason"] == "all 1 rules are disabled (enabled: false)"
