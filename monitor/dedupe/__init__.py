"""The dedupe stage: which articles are new, which of their alerts are new, and which
articles are copies of one story.

:mod:`monitor.dedupe.articles`  exact duplicates: the same id or canonical link, seen before
:mod:`monitor.dedupe.stories`   near duplicates: wire copy republished under other URLs (MinHash LSH)
"""

from monitor.dedupe.articles import (
    Admission,
    ArticleFailure,
    Candidate,
    MakeSighting,
    SeenArticle,
    SeenStore,
    Verdict,
    admit,
    needs_matching,
)

__all__ = ["Admission", "ArticleFailure", "Candidate", "MakeSighting", "SeenArticle", "SeenStore", "Verdict", "admit", "needs_matching"]
