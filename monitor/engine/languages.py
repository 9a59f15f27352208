"""What matching does per language, at load time: stems as prefixes, Arabic clitics.

Nothing here runs per article. A list entry in a language section (``fr: [sommet]``)
of a language with a Snowball stemmer (:data:`STEMMED`) becomes a prefix: its last
word is cut to its Snowball stem (PyStemmer), kept to at least :data:`MIN_STEM`
letters (four for a five-letter word), and may continue, so ``санкции`` matches ``санкций`` and ``санкциями``,
``Sanktion`` matches ``Sanktionen``. A word of fewer than :data:`MIN_STEM` letters, a
wildcard, a case-sensitive or a quoted entry is kept as written.

A term in Arabic script also matches with the prefixes Arabic attaches to a word
(:func:`arabic_variants`: the article al-, and wa-, fa-, bi-, li-, ka- with or without
it), since Arabic writes "and the sanctions" as one word, والعقوبات.
"""

from __future__ import annotations

import threading

import Stemmer

from monitor.engine.text import fold

__all__ = ["MIN_STEM", "STEMMED", "arabic_variants", "is_arabic", "stem_prefix"]

#: ISO 639-1 code -> PyStemmer algorithm, for the languages whose entries are stemmed.
STEMMED = {"de": "german", "es": "spanish", "fr": "french", "it": "italian", "pt": "portuguese", "ru": "russian"}
#: Fewest letters a stemmed prefix keeps (Snowball cuts "desarme" to "des").
MIN_STEM = 5

_LOCAL = threading.local()


def _stemmer(lang: str) -> Stemmer.Stemmer:
    # PyStemmer's objects are not thread-safe (a rule reload runs in its own thread).
    stemmers = getattr(_LOCAL, "stemmers", None)
    if stemmers is None:
        stemmers = _LOCAL.stemmers = {}
    stemmer = stemmers.get(lang)
    if stemmer is None:
        stemmer = stemmers[lang] = Stemmer.Stemmer(STEMMED[lang])
    return stemmer


def stem_prefix(lang: str, word: str) -> str | None:
    """The folded prefix an entry's last ``word`` (folded, lower case) matches as in
    ``lang`` (the whole word when its stem is the word: ``sommet`` matches ``sommets``);
    None to keep it a whole word (no stemmer, too short, or not only letters)."""
    if lang not in STEMMED or len(word) < MIN_STEM or not word.isalpha():
        return None
    stem = fold(_stemmer(lang).stemWord(word)).lower
    common = 0
    for a, b in zip(stem, word):
        if a != b:
            break
        common += 1
    # A five-letter word keeps four ("tetto" -> "tett": "tetti"), longer ones five at least.
    return word[: max(common, min(MIN_STEM, len(word) - 1))]


#: Proclitics Arabic writes attached to the next word: conjunctions wa-, fa-, and the
#: prepositions bi-, li-, ka-, alone or after a conjunction.
_PROCLITICS = ("و", "ف", "ب", "ل", "ك", "وب", "ول", "فب", "فل", "وك")
_ARTICLE = "ال"


def is_arabic(text: str) -> bool:
    """Whether ``text`` starts with a letter of the Arabic script."""
    return bool(text) and ("\u0600" <= text[0] <= "\u06ff" or "\u0750" <= text[0] <= "\u077f")


def arabic_variants(pattern: str) -> tuple[str, ...]:
    """``pattern`` (folded) with every attached prefix its first word may carry: the
    article (ال), the proclitics before it or the bare word; li- + al- is written لل."""
    bases = [pattern] if pattern.startswith(_ARTICLE) else [pattern, _ARTICLE + pattern]
    variants = list(bases)
    for base in bases:
        for clitic in _PROCLITICS:
            if clitic.endswith("ل") and base.startswith(_ARTICLE):
                variants.append(clitic + base[1:])  # li + al-kalima -> lil-kalima
            else:
                variants.append(clitic + base)
    return tuple(dict.fromkeys(variants))
