"""monitor.parse.normalize: HTML to text and the canonical plain-text form."""

from __future__ import annotations

import unicodedata

import pytest

from monitor.parse.normalize import clean_text, html_to_text, looks_like_html, markup_to_text


class TestCleanText:
    def test_collapses_spaces_and_keeps_single_line_breaks(self) -> None:
        assert clean_text("  a \t b\u00a0\u2009c  \n\n\n  d  ") == "a b c\nd"

    def test_all_line_break_kinds_become_newline(self) -> None:
        assert clean_text("a\r\nb\rc\u2028d\u2029e\x0cf") == "a\nb\nc\nd\ne\nf"

    def test_nfc(self) -> None:
        decomposed = "Cafe\u0301"
        assert clean_text(decomposed) == "Caf\u00e9"
        assert unicodedata.is_normalized("NFC", clean_text(decomposed))

    def test_control_and_invisible_characters_removed(self) -> None:
        assert clean_text("a\x00b\x07c\x9fd\ufeffe\u200bf\u00adg") == "abcdefg"

    def test_lone_surrogates_removed(self) -> None:
        assert clean_text("a\ud800b") == "ab"

    def test_zero_width_joiners_kept(self) -> None:
        # ZWNJ is spelling in Persian; ZWJ builds emoji sequences.
        assert clean_text("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645") == "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"

    def test_empty(self) -> None:
        assert clean_text("") == ""
        assert clean_text(" \n\t ") == ""


class TestHtmlToText:
    def test_block_elements_never_run_words_together(self) -> None:
        html = "<p>one</p><p>two</p><div>three</div><ul><li>four</li><li>five</li></ul>six<br>seven<h2>eight</h2>"
        assert html_to_text(html) == "one\ntwo\nthree\nfour\nfive\nsix\nseven\neight"

    def test_table_cells_are_separated(self) -> None:
        assert html_to_text("<table><tr><td>a</td><td>b</td></tr></table>") == "a\nb"

    def test_inline_elements_do_not_add_spaces(self) -> None:
        assert html_to_text("un<b>believ</b><i>able</i> <a href='x'>link</a>") == "unbelievable link"

    def test_scripts_styles_and_comments_dropped(self) -> None:
        html = "<p>keep</p><script>var x = '<p>no</p>';</script><style>p{}</style><!-- hidden -->tail"
        assert html_to_text(html) == "keep\ntail"

    def test_entities_decoded(self) -> None:
        assert html_to_text("Caf&eacute; &amp; bar&#8217;s &#x2014; &nbsp;x") == "Café & bar’s — x"

    def test_text_with_angle_brackets_kept(self) -> None:
        assert html_to_text("x < y and y > z") == "x < y and y > z"

    def test_plain_text_skips_parser(self) -> None:
        assert html_to_text("just   text") == "just text"

    def test_xml_declaration_inside_cdata_fragment(self) -> None:
        assert html_to_text('<?xml version="1.0" encoding="latin-1"?><p>hi</p>') == "hi"

    def test_whole_page_drops_head(self) -> None:
        page = "<html><head><title>T</title><script>x()</script></head><body><p>a</p><p>b</p></body></html>"
        assert html_to_text(page) == "a\nb"

    def test_doctype_entities_in_html_not_expanded(self) -> None:
        assert "AAAA" not in html_to_text('<!DOCTYPE x [<!ENTITY a "AAAA">]><p>&a;&a;</p>')

    def test_empty_and_comment_only(self) -> None:
        assert html_to_text("") == ""
        assert html_to_text("<!-- only a comment -->") == ""

    def test_result_is_clean(self) -> None:
        assert html_to_text("<p>Cafe\u0301\x00</p>") == "Caf\u00e9"

    @pytest.mark.parametrize(
        ("html", "text"),
        [("<p>a&#12;b</p>", "a\nb"), ("<p>a\x0bb</p>c", "a\nb\nc"), ("<div>a&#1;b</div>", "ab"), ("<p>a&#xFFFF;b\x1f</p>", "ab")],
    )
    def test_characters_xml_does_not_allow_are_read_not_raised(self, html: str, text: str) -> None:
        # lxml parses them but refuses them as an element's text: ValueError, and the whole feed was lost.
        assert html_to_text(html) == text


class TestLooksLikeHtml:
    @pytest.mark.parametrize("text", ["<p>x</p>", "a<br/>b", "Tom &amp; Jerry", "it&#8217;s", "</b>"])
    def test_html(self, text: str) -> None:
        assert looks_like_html(text)

    @pytest.mark.parametrize("text", ["AT&T <3 Apple", "x < y > z", "Q&A; more", "a <foo> b", "plain"])
    def test_plain(self, text: str) -> None:
        assert not looks_like_html(text)


class TestMarkupToText:
    def test_plain_text_is_not_parsed(self) -> None:
        assert markup_to_text("Use <br> tags & co", is_html=False) == "Use <br> tags & co"

    def test_html_is_parsed(self) -> None:
        assert markup_to_text("<b>Bold</b> &amp; x", is_html=True) == "Bold & x"

    def test_unknown_is_sniffed(self) -> None:
        assert markup_to_text("AT&T <3 Apple") == "AT&T <3 Apple"
        assert markup_to_text("Tom &amp;amp; Jerry".replace("&amp;amp;", "&amp;")) == "Tom & Jerry"
