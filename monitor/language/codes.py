"""ISO 639-1 language codes, and the language tags feeds declare (``en-us``, ``fr_FR``)."""

from __future__ import annotations

__all__ = ["AUTO", "ISO_639_1", "feed_language_problem", "language_tag"]

_CODES = """
aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs
cu cv cy da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha
he hi ho hr ht hu hy hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn
ko kr ks ku kv kw ky la lb lg li ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb
nd ne ng nl nn no nr nv ny oc oj om or os pa pi pl ps pt qu rm rn ro ru rw sa sc sd
se sg si sk sl sm sn so sq sr ss st su sv sw ta te tg th ti tk tl tn to tr ts tt tw
ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu
"""

#: Every ISO 639-1 code (two letters), as of the 2023 list.
ISO_639_1: frozenset[str] = frozenset(_CODES.split())

#: A feed's configured language that means "ignore what the feed declares: detect".
AUTO = "auto"

#: Former codes feeds still declare, to the current ones.
_RENAMED = {"iw": "he", "in": "id", "ji": "yi", "jw": "jv", "mo": "ro"}


def language_tag(value: str | None) -> str | None:
    """The ISO 639-1 code of a language tag as feeds write it (``en``, ``en-US``,
    ``fr_FR``, ``ZH-Hans``), or None when it names no ISO 639-1 language (empty,
    ``x-default``, a three-letter code without a two-letter one)."""
    if not value:
        return None
    primary = value.strip().replace("_", "-").split("-", 1)[0].lower()
    primary = _RENAMED.get(primary, primary)
    return primary if primary in ISO_639_1 else None


def feed_language_problem(value: str) -> str | None:
    """Why ``value`` is not a valid configured feed language (an ISO 639-1 code, a tag
    whose primary subtag is one, or ``auto``), or None when it is."""
    if value.strip().lower() == AUTO or language_tag(value) is not None:
        return None
    return f"language {value!r} is not an ISO 639-1 code (such as en, fr, zh) or {AUTO!r}"
