"""Article languages: tags as feeds declare them, detection on a bounded sample, and
where the language comes from when a feed is parsed (configured, declared, detected)."""

from __future__ import annotations

import json
import time

import pytest

from monitor.errors import ConfigError
from monitor.feeds.opml import feeds_from_opml
from monitor.language import SAMPLE_BYTES, detect, feed_language_problem, language_of, language_tag
from monitor.parse import parse_feed
from monitor.parse.textinput import article_from_input
from monitor.settings import load_settings


@pytest.mark.parametrize(
    ("tag", "code"),
    [("en", "en"), ("en-US", "en"), ("fr_FR", "fr"), (" ZH-Hans ", "zh"), ("iw", "he"), ("x-default", None), ("", None), ("fra", None)],
)
def test_language_tags(tag: str, code: str | None) -> None:
    assert language_tag(tag) == code


def test_configured_language_values() -> None:
    assert feed_language_problem("fr-CA") is None and feed_language_problem("AUTO") is None
    assert "not an ISO 639-1 code" in (feed_language_problem("french") or "")


NEWS = [
    ("Les dirigeants du G7 se retrouvent à Évian pour un sommet consacré à l'Ukraine.", "fr"),
    ("Die EU verhängt neue Sanktionen gegen Russland und friert Vermögen ein.", "de"),
    ("Путин и Трамп провели переговоры на высшем уровне в Анкоридже.", "ru"),
    ("习近平与普京在莫斯科举行会谈，双方讨论了乌克兰问题。", "zh"),
    ("日米首脳会談で両首脳は北朝鮮の非核化に向けて連携を確認した。", "ja"),
    ("فرضت الولايات المتحدة عقوبات جديدة على إيران بسبب برنامجها النووي.", "ar"),
    ("NATO leaders gathered in The Hague for a two-day summit on defence spending.", "en"),
]


@pytest.mark.parametrize(("text", "code"), NEWS)
def test_detection_on_short_news_text(text: str, code: str) -> None:
    assert detect(text) == code


def test_too_little_text_has_no_language() -> None:
    assert detect("Putin", "", "") is None
    assert detect("", "", "") is None
    assert language_of("de", "Putin") == "de"


def test_detection_reads_a_bounded_sample() -> None:
    """Title first, then summary and body, cut at SAMPLE_BYTES: a megabyte of body costs
    what its first bytes cost, and a title in one language decides over a body in another."""
    body = "Die Bundesregierung hat am Dienstag neue Sanktionen beschlossen. " * 20000
    detect("warm up the model")
    start = time.perf_counter()
    assert detect("", "", body) == "de"
    assert time.perf_counter() - start < 0.05
    title = "Le sommet du G7 s'ouvre dimanche à Évian-les-Bains, sur les rives du lac Léman, en présence des dirigeants"
    assert len(title.encode()) < SAMPLE_BYTES
    assert detect(title, "", body) == "fr"


RSS = """<?xml version="1.0" encoding="UTF-8"?>
<rss version="2.0"><channel><title>t</title><link>https://example.org/</link>{language}
<item><title>Die Staats- und Regierungschefs der EU treffen sich in Brüssel</title><link>https://example.org/1</link>
<description>Beim Gipfel geht es um neue Sanktionen gegen Russland und die Hilfe für die Ukraine.</description></item>
</channel></rss>"""

ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="fr-FR"><title>t</title><id>urn:t</id><updated>2026-01-01T00:00:00Z</updated>
<entry><title>Un titre</title><id>urn:1</id><updated>2026-01-01T00:00:00Z</updated><summary>x</summary></entry>
<entry xml:lang="de"><title>Ein Titel</title><id>urn:2</id><updated>2026-01-01T00:00:00Z</updated><summary>y</summary></entry>
</feed>"""


def test_rss_language_is_declared_and_detection_fills_in_without_it() -> None:
    declared = parse_feed(RSS.format(language="<language>en-us</language>").encode(), "https://example.org/rss")
    assert [article.lang for article in declared.articles] == ["en"]  # the feed says so, wrongly
    undeclared = parse_feed(RSS.format(language="").encode(), "https://example.org/rss")
    assert [article.lang for article in undeclared.articles] == ["de"]


def test_the_configured_language_overrides_and_auto_ignores_the_declaration() -> None:
    body = RSS.format(language="<language>en-us</language>").encode()
    assert parse_feed(body, "https://example.org/rss", language="it").articles[0].lang == "it"
    assert parse_feed(body, "https://example.org/rss", language="auto").articles[0].lang == "de"


def test_atom_xml_lang_per_entry() -> None:
    parsed = parse_feed(ATOM.encode(), "https://example.org/atom")
    assert [article.lang for article in parsed.articles] == ["fr", "de"]


def test_json_feed_language() -> None:
    document = {"version": "https://jsonfeed.org/version/1.1", "title": "t", "language": "pt-BR",
                "items": [{"id": "1", "title": "Lula recebe Modi", "content_text": "x"},
                          {"id": "2", "title": "x", "content_text": "y", "language": "es"}]}  # fmt: skip
    parsed = parse_feed(json.dumps(document).encode(), "https://example.org/feed.json")
    assert [article.lang for article in parsed.articles] == ["pt", "es"]


def test_match_input_takes_lang_or_detects() -> None:
    assert article_from_input(b'{"title": "x", "body": "y", "lang": "fr-CA"}', "in.json").lang == "fr"
    assert article_from_input("Путин и Трамп провели переговоры в Анкоридже.".encode(), "in.txt").lang == "ru"


def test_feed_language_in_the_config_and_in_opml(tmp_path) -> None:
    config = tmp_path / "monitor.toml"
    config.write_text('[[feeds.feed]]\nurl = "https://example.org/rss"\nlanguage = "fr-CA"\n\n'
                      '[[feeds.feed]]\nurl = "https://example.org/b"\nlanguage = "auto"\n', encoding="utf-8")  # fmt: skip
    assert [feed.language for feed in load_settings(config, environ={}).configured_feeds()] == ["fr", "auto"]
    config.write_text('[[feeds.feed]]\nurl = "https://example.org/rss"\nlanguage = "french"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"#1 \(https://example.org/rss\): language 'french' is not an ISO 639-1 code"):
        load_settings(config, environ={}).configured_feeds()
    opml = tmp_path / "feeds.opml"
    opml.write_text('<opml version="2.0"><body>\n<outline text="a" xmlUrl="https://a.example/rss" language="ja"/>\n'
                    '<outline text="b" xmlUrl="https://b.example/rss" language="klingon"/>\n</body></opml>', encoding="utf-8")  # fmt: skip
    with pytest.raises(ConfigError, match=r"feeds.opml:3.*language 'klingon'"):
        feeds_from_opml(opml, 300.0)


async def test_the_languages_of_many_new_articles_are_detected_in_one_worker_task() -> None:
    """A burst (a feed's first poll) goes to the parser's worker processes, as the parse did
    before detection waited for dedupe; a few are detected in place; a declared language stays."""
    from monitor.adapters.parser_pool import ParserPool
    from monitor.matching import DETECT_ON_LOOP, with_languages
    from monitor.model import Article

    texts = [text for text, _code in NEWS] * 2
    articles = [Article(id=str(n), feed_url="f", title=text) for n, text in enumerate(texts)]
    articles.append(Article(id="declared", feed_url="f", title="NATO leaders met in The Hague", lang="de"))
    pool = ParserPool(1, 20.0)
    try:
        burst = await with_languages(articles, pool, "f")
        assert pool.completed == 1 and len(texts) > DETECT_ON_LOOP
        few = await with_languages(articles[:DETECT_ON_LOOP], pool, "f")
        assert pool.completed == 1
    finally:
        pool.close(5.0)
    codes = [code for _text, code in NEWS] * 2
    assert [a.lang for a in burst] == [*codes, "de"] and [a.lang for a in few] == codes[:DETECT_ON_LOOP]

