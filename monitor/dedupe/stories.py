"""Story clusters: wire copy republished by several outlets under different URLs is one story.

Exact duplicates (same id or canonical link) are caught by the dedupe stage. This stage
catches the rest: the same agency text on five sites, each with its own URL, headline
tweaks and trimmed paragraphs. Each new article's matchable text is normalised
(its words as the rule engine sees them, :func:`monitor.engine.text.words`: folded,
lower case, a combining mark part of the word of the letter before it), cut into
overlapping word shingles and summarised as a MinHash
signature (datasketch); a MinHash LSH index over the signatures of the last
``[stories] window_hours`` finds earlier articles whose estimated Jaccard similarity
is at least ``[stories] threshold``. The article joins the oldest such article's story;
otherwise it starts a story of its own.

The dedupe stage then alerts once per rule per story: a later copy names the story
(``story_id``), is counted as a copy, and raises an alert only for a rule no earlier
copy alerted on.

Texts shorter than ``min_shingles`` shingles (a bare headline) are not clustered: too
little text makes unrelated articles look alike.

Signatures are persisted by the state store (table ``story_members``) so a restart
keeps the window: :meth:`StoryIndex.restore` reloads them.

Signing (shingling and hashing) is CPU work, so the daemon signs in its worker processes
with :func:`sign_texts` (pure, picklable: :attr:`StoryIndex.signer`); the event loop only
queries and updates the index, and that is bounded too: a story keeps at most
:data:`INDEXED_PER_STORY` members in the index (its first members already find every
later copy), and at most :data:`MAX_CANDIDATES` candidates are compared per article.

The index holds only containers the cyclic garbage collector does not track (dicts of
bytes, strings, floats and arrays, sharded by :class:`_Shards`), so collections never
walk a day's window. What that and the sharding cost and saved is in docs/polling.md
("Story index").
"""

from __future__ import annotations

import hashlib
import itertools
import sys
from array import array
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from datasketch import MinHash, MinHashLSH

from monitor.engine.text import words
from monitor.model import Article
from monitor.parse import ParsedFeed, parse_feed

__all__ = [
    "INDEXED_PER_STORY",
    "MAX_CANDIDATES",
    "Assignment",
    "SignedFeed",
    "Signer",
    "StoryIndex",
    "parse_and_sign",
    "shingles",
    "sign_texts",
    "story_text",
]

#: Members of one story kept in the LSH index; later copies join without being indexed.
INDEXED_PER_STORY = 8
#: LSH candidates compared with a new article, at most.
MAX_CANDIDATES = 64

#: Per process: (num_perm, seed) -> (permutations, scheme); making them costs more than an article.
_PERMUTATIONS: dict[tuple[int, int], tuple[object, object]] = {}


def story_text(article: Article) -> str:
    """The text two copies of one story share: title, summary and body."""
    return " ".join(part for part in (article.title, article.summary, article.body) if part)


def shingles(text: str, size: int) -> set[bytes]:
    """Overlapping ``size``-word shingles of the words of ``text`` as the rule engine reads
    them (:func:`monitor.engine.text.words`: a Hindi or Thai vowel sign does not split a
    word, each letter of Chinese or Thai is a word), as bytes."""
    found = words(text)
    if len(found) < size:
        return set()
    return {" ".join(found[i : i + size]).encode("utf-8", "surrogatepass") for i in range(len(found) - size + 1)}


def _template(num_perm: int, seed: int) -> tuple[object, object]:
    cached = _PERMUTATIONS.get((num_perm, seed))
    if cached is None:
        template = MinHash(num_perm=num_perm, seed=seed)
        cached = _PERMUTATIONS[(num_perm, seed)] = (template.permutations, template.scheme)
    return cached


def _signature(text: str, num_perm: int, seed: int, shingle_size: int, min_shingles: int) -> MinHash | None:
    grams = shingles(text, shingle_size)
    if len(grams) < min_shingles:
        return None
    permutations, scheme = _template(num_perm, seed)
    minhash = MinHash(num_perm=num_perm, seed=seed, permutations=permutations, scheme=scheme)
    minhash.update_batch(list(grams))
    return minhash


def sign_texts(
    texts: Sequence[str], *, num_perm: int = 64, seed: int = 1, shingle_size: int = 4, min_shingles: int = 8
) -> list[bytes | None]:
    """The packed MinHash signature of each text (None for one too short to cluster).

    Pure and picklable: the daemon runs it in its worker processes. The result is what
    :meth:`StoryIndex.assign` takes as ``signature``.
    """
    signed = []
    for text in texts:
        minhash = _signature(text, num_perm, seed, shingle_size, min_shingles)
        signed.append(None if minhash is None else _pack(minhash.hashvalues))
    return signed


#: Turns article texts into story signatures (see :attr:`monitor.dedupe.stories.StoryIndex.signer`).
Signer = Callable[[Sequence[str]], "list[bytes | None]"]


@dataclass(frozen=True, slots=True)
class SignedFeed:
    """A parsed feed and the story signature of each of its articles (same order)."""

    parsed: ParsedFeed
    signatures: list[bytes | None]


def parse_and_sign(
    body: bytes, feed_url: str, content_type: str | None, signer: Signer, language: str | None = None, detect_languages: bool = True
) -> SignedFeed:
    """:func:`~monitor.parse.parse_feed`, then every article's story signature, in one worker task.

    Signing in the worker that already holds the articles costs no extra round trip and
    keeps shingling and MinHash off the event loop.
    """
    parsed = parse_feed(body, feed_url, content_type, language, detect_languages)
    return SignedFeed(parsed, signer([story_text(article) for article in parsed.articles]))


#: Shards of each of the index's dicts (see :class:`_Shards`).
_SHARDS = 256


class _Shards:
    """A dict split by key hash into :data:`_SHARDS` small dicts.

    A dict grows by rebuilding its whole table in one step, and the index's dicts grow in
    lockstep (an entry per member each): unsplit, one insert could rebuild them all at
    once. Split, each step rebuilds one small table, and the shards reach their
    thresholds at different moments. Shards hold plain values only (not GC-tracked).
    """

    __slots__ = ("shards",)

    def __init__(self) -> None:
        self.shards: list[dict[Any, Any]] = [{} for _ in range(_SHARDS)]

    def get(self, key: Any, default: Any = None) -> Any:
        return self.shards[hash(key) % _SHARDS].get(key, default)

    def pop(self, key: Any, *default: Any) -> Any:
        return self.shards[hash(key) % _SHARDS].pop(key, *default)

    def __getitem__(self, key: Any) -> Any:
        return self.shards[hash(key) % _SHARDS][key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self.shards[hash(key) % _SHARDS][key] = value

    def __delitem__(self, key: Any) -> None:
        del self.shards[hash(key) % _SHARDS][key]

    def __contains__(self, key: Any) -> bool:
        return key in self.shards[hash(key) % _SHARDS]

    def __len__(self) -> int:
        return sum(map(len, self.shards))


class _Bands:
    """MinHash LSH: ``b`` bands of ``r`` signature rows; texts sharing a band are candidates.

    Members are serial numbers. A bucket holds them packed as 8-byte integers in one
    bytes object, in one table of bytes (band number + band rows) to bytes, which the
    cyclic garbage collector never tracks (see the module docstring).
    """

    def __init__(self, threshold: float, num_perm: int) -> None:
        # datasketch's choice of bands and rows for this threshold (minimising false
        # positives and negatives), so candidates are those MinHashLSH would propose.
        probe = MinHashLSH(threshold=threshold, num_perm=num_perm)
        self.bands, self.rows = probe.b, probe.r
        self._table = _Shards()

    def _keys(self, values: np.ndarray) -> list[bytes]:
        r = self.rows
        return [i.to_bytes(2, "little") + values[i * r : (i + 1) * r].tobytes() for i in range(self.bands)]

    def insert(self, serial: int, values: np.ndarray) -> None:
        packed = serial.to_bytes(8, sys.byteorder)
        shards = self._table.shards  # shard by shard, without a method call per band
        for band in self._keys(values):
            shard = shards[hash(band) % _SHARDS]
            shard[band] = shard.get(band, b"") + packed

    def remove(self, serial: int, values: np.ndarray) -> None:
        table = self._table
        for band in self._keys(values):
            members = table.get(band)
            if members is None:
                continue
            rest = [member for member in _serials(members) if member != serial]
            if rest:
                table[band] = array("Q", rest).tobytes()
            else:
                del table[band]

    def query(self, values: np.ndarray) -> list[int]:
        """Serials sharing at least one band with ``values``, each once, in insertion order per band."""
        found: dict[int, None] = {}
        shards = self._table.shards
        for band in self._keys(values):
            members = shards[hash(band) % _SHARDS].get(band)
            if members:
                found.update(dict.fromkeys(_serials(members)))
        return list(found)


def _serials(packed: bytes) -> list[int]:
    return memoryview(packed).cast("Q").tolist()


@dataclass(frozen=True, slots=True)
class Assignment:
    """Which story an article belongs to."""

    story_id: str
    #: True when the story existed before this article (a later copy).
    copy: bool
    #: The article's signature, for :meth:`StoryIndex.restore` after a restart.
    signature: bytes
    #: Estimated Jaccard similarity to the story's closest earlier article (1.0 for a new story).
    similarity: float = 1.0


class StoryIndex:
    """MinHash LSH over recent articles. Not thread-safe: use from the event loop only."""

    def __init__(
        self,
        *,
        threshold: float = 0.5,
        window: float = 24 * 3600.0,
        num_perm: int = 64,
        shingle_size: int = 4,
        min_shingles: int = 8,
        seed: int = 1,
    ) -> None:
        self.threshold = threshold
        self.window = window
        self.num_perm = num_perm
        self.shingle_size = shingle_size
        self.min_shingles = min_shingles
        self._seed = seed
        self._lsh = _Bands(threshold, num_perm)
        # Members are numbered in the order they are added. Their attributes live in
        # dicts of plain values (strings, floats, arrays), never tuples: such dicts are
        # invisible to the garbage collector (see the module docstring).
        # Sharded (see _Shards): these grow together, an entry per member each.
        self._serial_of = _Shards()  # article id -> serial
        self._article_of = _Shards()  # serial -> article id
        self._story_of = _Shards()  # serial -> story id
        self._values_of = _Shards()  # serial -> signature (numpy array)
        #: Serial -> time added (expiry walks the serials from ``_oldest``).
        self._added_at = _Shards()
        #: Serial -> whether the member is in the LSH index.
        self._in_index = _Shards()
        self._next_serial = 0
        #: No member has a smaller serial.
        self._oldest = 0
        #: Members of each story in the LSH index (at most INDEXED_PER_STORY).
        self._indexed = _Shards()
        #: Story id -> serials of its members left out of the index, oldest first (promoted
        #: as indexed ones expire).
        self._unindexed: dict[str, deque[int]] = {}
        # Made once: generating the permutations costs more than hashing a whole article.
        self._permutations, self._scheme = _template(num_perm, seed)

    @property
    def signer(self) -> Callable[[Sequence[str]], list[bytes | None]]:
        """:func:`sign_texts` with this index's settings; picklable, for worker processes."""
        return partial(
            sign_texts, num_perm=self.num_perm, seed=self._seed, shingle_size=self.shingle_size, min_shingles=self.min_shingles
        )

    def __len__(self) -> int:
        return len(self._serial_of)

    def signature(self, text: str) -> MinHash | None:
        """The MinHash of ``text``, or None when it is too short to cluster."""
        return _signature(text, self.num_perm, self._seed, self.shingle_size, self.min_shingles)

    def assign(self, article: Article, now: float, signature: bytes | object | None = ...) -> Assignment | None:
        """Put the article in a story (an earlier one, or its own); None when too short.

        ``signature`` is the article's packed signature from :attr:`signer` (None: too
        short to cluster); without it the signature is computed here, on the caller's thread.
        """
        self.expire(now)
        existing = self._serial_of.get(article.id)
        values: np.ndarray | None
        if signature is ...:
            minhash = self.signature(story_text(article))
            if minhash is None:
                return None
            # One dtype for every source (the packed form is uint64): band keys are its bytes.
            values = np.asarray(minhash.hashvalues, dtype=np.uint64)
        else:
            values = _unpack(signature) if isinstance(signature, bytes) else None
            if values is None or len(values) != self.num_perm:
                return None
        if existing is not None:
            story_id = self._story_of[existing]
            return Assignment(story_id, story_id != _story_id_for(article.id), _pack(values))
        best: tuple[float, str] | None = None
        for serial in itertools.islice(self._lsh.query(values), MAX_CANDIDATES):
            story_id = self._story_of[serial]
            similarity = float(np.mean(values == self._values_of[serial]))
            # LSH only proposes candidates: keep those whose estimate really passes.
            if similarity >= self.threshold and (best is None or similarity > best[0]):
                best = (similarity, story_id)
        if best is None:
            story_id, copy, similarity = _story_id_for(article.id), False, 1.0
        else:
            similarity, story_id = best
            copy = True
        self._insert(article.id, story_id, values, now)
        return Assignment(story_id, copy, _pack(values), similarity)

    def restore(self, article_id: str, story_id: str, signature: bytes, seen_at: float, now: float) -> bool:
        """Re-add a member saved by an earlier run; False when it is outside the window or unreadable."""
        if now - seen_at > self.window or article_id in self._serial_of:
            return False
        values = _unpack(signature)
        if values is None or len(values) != self.num_perm:
            return False
        self._insert(article_id, story_id, values, seen_at)
        return True

    def expire(self, now: float) -> int:
        """Forget members older than the window; returns how many."""
        dropped = 0
        # Oldest first, stopping at the first member still inside the window (as members
        # are added in time order, bar restored ones, that is every expired member).
        while self._oldest < self._next_serial:
            serial = self._oldest
            added = self._added_at.get(serial)
            if added is not None and now - added <= self.window:
                break
            self._oldest += 1
            if added is None:
                continue
            dropped += 1
            story_id, indexed = self._forget(serial)
            if not indexed:
                waiting = self._unindexed.get(story_id)
                if waiting and waiting[0] == serial:
                    # Expiry goes oldest first, so it is usually the head of its story's line.
                    waiting.popleft()
                continue
            self._indexed[story_id] = remaining = self._indexed[story_id] - 1
            waiting = self._unindexed.get(story_id)
            while waiting:
                # The story's newest copies keep it findable once its first ones expire.
                promoted = waiting.pop()
                if promoted in self._in_index:
                    self._lsh.insert(promoted, self._values_of[promoted])
                    self._in_index[promoted] = True
                    self._indexed[story_id] = remaining = remaining + 1
                    break
            if remaining <= 0:
                del self._indexed[story_id]
                self._unindexed.pop(story_id, None)
        return dropped

    def _insert(self, article_id: str, story_id: str, values: np.ndarray, when: float) -> None:
        # A story's first members find every later copy; indexing all of them would make
        # a burst of one wire text compare each copy with every earlier one.
        serial = self._next_serial
        self._next_serial += 1
        count = self._indexed.get(story_id, 0)
        indexed = count < INDEXED_PER_STORY
        if indexed:
            self._lsh.insert(serial, values)
            self._indexed[story_id] = count + 1
        else:
            self._unindexed.setdefault(story_id, deque()).append(serial)
        self._serial_of[article_id] = serial
        self._article_of[serial] = article_id
        self._story_of[serial] = story_id
        self._values_of[serial] = values
        self._added_at[serial] = when
        self._in_index[serial] = indexed

    def _forget(self, serial: int) -> tuple[str, bool]:
        """Drop one member everywhere but the story bookkeeping: (its story, whether it was indexed)."""
        del self._serial_of[self._article_of.pop(serial)]
        story_id = self._story_of.pop(serial)
        values = self._values_of.pop(serial)
        del self._added_at[serial]
        indexed = self._in_index.pop(serial)
        if indexed:
            self._lsh.remove(serial, values)
        return story_id, indexed


def _story_id_for(article_id: str) -> str:
    """A story is named after its first article, so the name is stable across restarts."""
    return "story-" + hashlib.sha256(article_id.encode("utf-8", "surrogatepass")).hexdigest()[:20]


def _pack(values: np.ndarray) -> bytes:
    return np.asarray(values, dtype="<u8").tobytes()


def _unpack(blob: bytes) -> np.ndarray | None:
    if not blob or len(blob) % 8:
        return None
    return np.frombuffer(blob, dtype="<u8").astype(np.uint64)
