"""The README documents every configuration key, under its section, and nothing that does not exist."""

from __future__ import annotations

import re

from monitor.settings import env_overridable_keys
from tests.support import ROOT


def _documented_sections() -> dict[str, set[str]]:
    readme = (ROOT / "README.md").read_text()
    config = readme[readme.index("## Configuration") :]
    config = config[: config.index("\n## ", 5)]
    sections: dict[str, set[str]] = {}
    for block in re.split(r"\n### ", config)[1:]:
        heading = block.splitlines()[0]
        names = re.findall(r"`\[(\w+)\]`", heading)
        if len(names) != 1:
            continue
        keys = set(re.findall(r"^\| `(\w+)` \|", block, flags=re.MULTILINE))
        sections[names[0]] = keys
    return sections


def test_every_setting_is_documented_in_the_readme():
    documented = _documented_sections()
    for section, keys in env_overridable_keys().items():
        expected = set(keys) - {"feed"}  # [[feeds.feed]] tables have their own example
        assert section in documented, f"README has no ### `[{section}]` table"
        missing = expected - documented[section]
        extra = documented[section] - expected
        assert not missing, f"[{section}] keys missing from the README: {sorted(missing)}"
        assert not extra, f"[{section}] keys in the README that do not exist: {sorted(extra)}"
