"""Story clusters: wire copy republished by several outlets under different URLs is one story.

Exact duplicates (same id or canonical link) are caught by the dedupe stage. This stage
catches the rest: the same agency text on five sites, each with its own URL, headline
tweaks and trimmed paragraphs. Each new article's matchable text is normalised
(case-folded words), cut into overlapping word shingles and summarised as a MinHash
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
"""

from __future__ import annotations

import hashlib
import re
from collections import deque
from dataclasses import dataclass

import numpy as np
from datasketch import MinHash, MinHashLSH

from monitor.model import Article

__all__ = ["Assignment", "StoryIndex", "shingles", "story_text"]

_WORD = re.compile(r"\w+", re.UNICODE)


def story_text(article: Article) -> str:
    """The text two copies of one story share: title, summary and body."""
    return " ".join(part for part in (article.title, article.summary, article.body) if part)


def shingles(text: str, size: int) -> set[bytes]:
    """Overlapping ``size``-word shingles of case-folded words, as bytes."""
    words = _WORD.findall(text.casefold())
    if len(words) < size:
        return set()
    return {" ".join(words[i : i + size]).encode("utf-8", "surrogatepass") for i in range(len(words) - size + 1)}


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
        self._lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
        #: article id -> (story id, signature)
        self._members: dict[str, tuple[str, np.ndarray]] = {}
        #: (time added, article id), oldest first, for expiry.
        self._order: deque[tuple[float, str]] = deque()
        # Made once: generating the permutations costs more than hashing a whole article.
        template = MinHash(num_perm=num_perm, seed=seed)
        self._permutations = template.permutations
        #: The hashing scheme of this datasketch version; signatures are only comparable within one.
        self._scheme = template.scheme

    def __len__(self) -> int:
        return len(self._members)

    def signature(self, text: str) -> MinHash | None:
        """The MinHash of ``text``, or None when it is too short to cluster."""
        grams = shingles(text, self.shingle_size)
        if len(grams) < self.min_shingles:
            return None
        minhash = self._minhash()
        minhash.update_batch(list(grams))
        return minhash

    def assign(self, article: Article, now: float) -> Assignment | None:
        """Put the article in a story (an earlier one, or its own); None when too short."""
        self.expire(now)
        existing = self._members.get(article.id)
        minhash = self.signature(story_text(article))
        if minhash is None:
            return None
        values = np.asarray(minhash.hashvalues)
        if existing is not None:
            return Assignment(existing[0], existing[0] != _story_id_for(article.id), _pack(values))
        best: tuple[float, str] | None = None
        for key in self._lsh.query(minhash):
            story_id, other = self._members[key]
            similarity = float(np.mean(values == other))
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
        if now - seen_at > self.window or article_id in self._members:
            return False
        values = _unpack(signature)
        if values is None or len(values) != self.num_perm:
            return False
        self._insert(article_id, story_id, values, seen_at)
        return True

    def expire(self, now: float) -> int:
        """Forget members older than the window; returns how many."""
        dropped = 0
        while self._order and now - self._order[0][0] > self.window:
            _when, key = self._order.popleft()
            if self._members.pop(key, None) is not None:
                self._lsh.remove(key)
                dropped += 1
        return dropped

    def _minhash(self, values: np.ndarray | None = None) -> MinHash:
        return MinHash(
            num_perm=self.num_perm,
            seed=self._seed,
            hashvalues=values,
            permutations=self._permutations,
            scheme=self._scheme,
        )

    def _insert(self, article_id: str, story_id: str, values: np.ndarray, when: float) -> None:
        minhash = self._minhash(values)
        self._lsh.insert(article_id, minhash, check_duplication=False)
        self._members[article_id] = (story_id, values)
        self._order.append((when, article_id))


def _story_id_for(article_id: str) -> str:
    """A story is named after its first article, so the name is stable across restarts."""
    return "story-" + hashlib.sha256(article_id.encode("utf-8", "surrogatepass")).hexdigest()[:20]


def _pack(values: np.ndarray) -> bytes:
    return np.asarray(values, dtype="<u8").tobytes()


def _unpack(blob: bytes) -> np.ndarray | None:
    if not blob or len(blob) % 8:
        return None
    return np.frombuffer(blob, dtype="<u8").astype(np.uint64)
