"""Article languages: ISO 639-1 codes, language tags as feeds declare them, detection.

    from monitor.language import detect, language_of, language_tag
    language_tag("en-US")                    # "en": a feed's <language> or xml:lang
    detect(title, summary, body)             # "fr", or None when there is too little text
    language_of(declared, title, summary, body)  # the declared one when set, else detected
    with_language(article)                   # the article, its lang detected when it has none

Modules: ``codes`` (the ISO 639-1 table and :func:`language_tag`), ``detect`` (py3langid
on a bounded sample of the text; docs/languages.md says why that library and that sample).
Pure: no I/O besides the detector's model, which ships inside its package.
"""

from monitor.language.codes import AUTO, ISO_639_1, feed_language_problem, language_tag
from monitor.language.detect import SAMPLE_BYTES, detect, detect_samples, language_of, preload, sample, with_language

__all__ = [
    "AUTO", "ISO_639_1", "SAMPLE_BYTES", "detect", "detect_samples", "feed_language_problem", "language_of", "language_tag",
    "preload", "sample", "with_language",
]  # fmt: skip
