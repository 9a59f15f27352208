"""Detecting an article's language with py3langid, on a bounded sample of its text.

py3langid (a maintained fork of langid.py, its naive-Bayes model inside the package)
won over lingua-language-detector on cost at equal accuracy on short news text; the
measurements are in docs/languages.md. Its cost grows with the bytes it reads (a Python
loop per byte), so it reads a sample: the title, then the summary, then the body, cut at
:data:`SAMPLE_BYTES` UTF-8 bytes (on a character boundary). It chooses among the ISO
639-1 languages of its model only (not, e.g., Wu Chinese or Nigerian Pidgin, which
would take short Chinese or English texts away from ``zh`` and ``en``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import replace

from monitor.model import Article

__all__ = ["MIN_LETTERS", "SAMPLE_BYTES", "detect", "detect_samples", "language_of", "preload", "sample", "with_language"]

#: Bytes of text the detector reads: 100 % on the labeled passages (docs/languages.md).
SAMPLE_BYTES = 200
#: Fewer letters than this in the sample: no language (a bare name or a number is none).
MIN_LETTERS = 8

_LOCK = threading.Lock()
_classify: Callable[[str], tuple[str, float]] | None = None


def _classifier() -> Callable[[str], tuple[str, float]]:
    """py3langid's classify, restricted to two-letter codes, loaded once (~0.5 s)."""
    global _classify
    if _classify is None:
        with _LOCK:
            if _classify is None:
                import py3langid  # the model loads on first use: not at import of the monitor

                py3langid.classify("")  # builds the module's identifier
                labels = py3langid.langid.IDENTIFIER.nb_classes
                py3langid.set_languages([label for label in labels if len(label) == 2])
                _classify = py3langid.classify
    return _classify


def preload() -> None:
    """Load the detector's model now (~0.5 s), not in the first article's parse: a
    parser worker does it at start-up, where no feed's time limit runs."""
    _classifier()


def sample(*texts: str) -> str:
    """What :func:`detect` reads of ``texts``: at most :data:`SAMPLE_BYTES` bytes, title first."""
    return _sample(texts)


def detect_samples(samples: list[str]) -> list[str | None]:
    """:func:`detect` of each sample (:func:`sample`): many articles' languages in one task
    of a worker process."""
    return [detect(text) for text in samples]


def _sample(texts: tuple[str, ...]) -> str:
    pieces: list[str] = []
    size = 0
    for text in texts:
        if text:
            pieces.append(text[:SAMPLE_BYTES])
            size += len(pieces[-1])
            if size >= SAMPLE_BYTES:
                break
    sample = " ".join(pieces)
    encoded = sample.encode("utf-8", "ignore")
    if len(encoded) > SAMPLE_BYTES:
        sample = encoded[:SAMPLE_BYTES].decode("utf-8", "ignore")
    return sample


def detect(*texts: str) -> str | None:
    """The ISO 639-1 code of the language of ``texts`` (title, summary, body: read in that
    order, at most :data:`SAMPLE_BYTES` bytes of them), or None when the sample has fewer
    than :data:`MIN_LETTERS` letters."""
    sample = _sample(texts)
    if sum(char.isalpha() for char in sample) < MIN_LETTERS:
        return None
    code: str = _classifier()(sample)[0]
    return code


def language_of(declared: str | None, *texts: str) -> str | None:
    """An article's language: ``declared`` (an ISO 639-1 code) when given, else detected."""
    return declared if declared else detect(*texts)


def with_language(article: Article) -> Article:
    """``article`` with its language: as it is when it has one, else detected from its
    title, summary and body (what a parse with ``detect_languages=False`` left to do, for
    the articles that turned out new or changed)."""
    if article.lang is not None:
        return article
    lang = detect(article.title, article.summary, article.body)
    return article if lang is None else replace(article, lang=lang)
