"""Every file of the shared feed corpus goes through parse_feed without crashing.

The corpus (/work/shared/corpus, a sibling of the repository) holds feedparser's own
test files and a few real-world feeds (see realworld/MANIFEST.tsv). It is never copied
into the repository; the module is skipped when it is absent.

Checked here:

* no file raises anything but :class:`FeedError` (and FeedError messages name the url);
* every feedparser ``tests/wellformed/`` feed yields as many articles as feedparser
  itself finds entries;
* every ``realworld/`` feed that feedparser reads without bozo yields the same number
  of entries, with the same links (canonicalised) in the same order.

Files are parsed once per session (a module fixture) and failures are reported together,
one line each, so a regression shows its whole extent at once.
"""

from __future__ import annotations

import io
import traceback
from dataclasses import dataclass
from pathlib import Path

import feedparser
import pytest

from monitor.errors import FeedError
from monitor.parse import ParsedFeed, parse_feed
from monitor.parse.identity import canonical_url
from tests.support import SHARED

CORPUS = SHARED / "corpus"

if not CORPUS.is_dir():
    pytest.skip(f"feed corpus not found at {CORPUS}", allow_module_level=True)

WELLFORMED = CORPUS / "feedparser" / "tests" / "wellformed"
REALWORLD = CORPUS / "realworld"


@dataclass(frozen=True)
class Outcome:
    path: Path
    url: str
    parsed: ParsedFeed | None = None
    feed_error: FeedError | None = None
    crash: str | None = None  # formatted traceback of any other exception


def corpus_files() -> list[Path]:
    return sorted(path for path in CORPUS.rglob("*") if path.is_file())


def ingest(path: Path) -> Outcome:
    url = f"https://corpus.example/{path.relative_to(CORPUS).as_posix()}"
    try:
        return Outcome(path, url, parsed=parse_feed(path.read_bytes(), url))
    except FeedError as error:
        return Outcome(path, url, feed_error=error)
    except Exception:  # noqa: BLE001 - the point of this test is to catch any crash
        return Outcome(path, url, crash=traceback.format_exc(limit=-3))


def reference(path: Path, url: str) -> feedparser.FeedParserDict:
    """feedparser's own reading of a file, with its default settings (and the same base URL)."""
    headers = {"content-location": url, "content-type": "application/xml"}
    return feedparser.parse(io.BytesIO(path.read_bytes()), response_headers=headers)


@pytest.fixture(scope="module")
def outcomes() -> dict[Path, Outcome]:
    return {path: ingest(path) for path in corpus_files()}


def rel(path: Path) -> str:
    return path.relative_to(CORPUS).as_posix()


def article_count(outcome: Outcome) -> int:
    return len(outcome.parsed.articles) if outcome.parsed is not None else 0


def test_corpus_is_there(outcomes: dict[Path, Outcome]) -> None:
    assert len(outcomes) > 2000
    assert any(path.is_relative_to(REALWORLD) for path in outcomes)


def test_nothing_crashes(outcomes: dict[Path, Outcome]) -> None:
    crashes = [f"{rel(o.path)}:\n{o.crash}" for o in outcomes.values() if o.crash is not None]
    assert not crashes, f"{len(crashes)} file(s) raised something other than FeedError:\n" + "\n".join(crashes)


def test_feed_errors_name_the_url(outcomes: dict[Path, Outcome]) -> None:
    bad = [rel(o.path) for o in outcomes.values() if o.feed_error and not str(o.feed_error).startswith(o.url)]
    assert not bad


def test_wellformed_feeds_yield_all_their_entries(outcomes: dict[Path, Outcome]) -> None:
    mismatches = []
    for path, outcome in outcomes.items():
        if not path.is_relative_to(WELLFORMED):
            continue
        expected = len(reference(path, outcome.url).entries)
        if article_count(outcome) != expected:
            mismatches.append(f"{rel(path)}: {article_count(outcome)} articles, feedparser {expected} ({outcome.feed_error})")
    assert not mismatches, f"{len(mismatches)} mismatch(es):\n" + "\n".join(mismatches)


def test_realworld_feeds_match_feedparser(outcomes: dict[Path, Outcome]) -> None:
    checked, mismatches = 0, []
    for path, outcome in outcomes.items():
        if not path.is_relative_to(REALWORLD) or path.name == "MANIFEST.tsv":
            continue
        expected = reference(path, outcome.url)
        if expected.bozo:
            continue
        checked += 1
        if outcome.parsed is None:
            mismatches.append(f"{rel(path)}: {outcome.feed_error}")
            continue
        links = [canonical_url(e.link) if e.get("link") else None for e in expected.entries]
        got = [a.url for a in outcome.parsed.articles]
        if got != links:
            mismatches.append(f"{rel(path)}: {len(got)} articles, feedparser {len(links)}; links differ: {got[:2]} vs {links[:2]}")
        if any(not a.title for a in outcome.parsed.articles if a.url) and all(e.get("title") for e in expected.entries):
            mismatches.append(f"{rel(path)}: an entry lost its title")
    assert checked >= 15, f"only {checked} realworld feeds were read by feedparser without bozo"
    assert not mismatches, "\n".join(mismatches)


def test_summary(outcomes: dict[Path, Outcome]) -> None:
    """Not an assertion of behaviour: a record of what the corpus looks like, shown with -rA."""
    errors = sorted(f"{rel(o.path)}: {o.feed_error}" for o in outcomes.values() if o.feed_error)
    warned = sum(1 for o in outcomes.values() if o.parsed is not None and o.parsed.warning)
    articles = sum(article_count(o) for o in outcomes.values())
    print(f"{len(outcomes)} files, {articles} articles, {len(errors)} FeedErrors, {warned} with warnings")
    for line in errors:
        print("  ", line)
