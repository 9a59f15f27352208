"""XML attacks: entity expansion never happens and external entities are never read.

Every attack is run through :func:`monitor.parse.parse_feed`, in the shapes that slip
past feedparser's own line-based DOCTYPE stripping (declarations on one line, or on the
XML declaration's line) as well as the plain multi-line shape, and in UTF-16.
"""

from __future__ import annotations

import socket
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.errors import FeedError
from monitor.parse import ParsedFeed, parse_feed
from monitor.parse._xmlguard import MAX_ENTITY_VALUE, UnsafeDoctype, defuse_doctype

FEED_URL = "https://attacker.example/feed.xml"
SECRET = "TOP-SECRET-CONTENT-7f3a"

LAUGHS = '<!ENTITY lol "lol">' + "".join(
    f'<!ENTITY lol{i} "{("&lol;" if i == 1 else f"&lol{i - 1};") * 10}">' for i in range(1, 10)
)


def rss(prolog: str, title: str) -> str:
    return (
        f'<?xml version="1.0"?>{prolog}<rss version="2.0"><channel><title>t</title>'
        f"<item><title>{title}</title><guid>x:1</guid><description>d {title}</description></item>"
        "</channel></rss>"
    )


def measured_parse(body: bytes) -> tuple[ParsedFeed | FeedError, float, int]:
    """Parse, returning the result (or FeedError), the CPU seconds it took (this thread's:
    other work on a busy machine does not count) and the peak Python bytes allocated."""
    tracemalloc.start()
    started = time.thread_time()
    try:
        result: ParsedFeed | FeedError = parse_feed(body, FEED_URL)
    except FeedError as error:
        result = error
    elapsed = time.thread_time() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return result, elapsed, peak


def all_text(result: ParsedFeed | FeedError) -> str:
    if isinstance(result, FeedError):
        return str(result)
    return repr(result)


BOMB_SHAPES = {
    "multiline": "\n<!DOCTYPE rss [\n" + LAUGHS.replace("><", ">\n<") + "\n]>\n",
    "one-line": "\n<!DOCTYPE rss [" + LAUGHS + "]>\n",
    "same-line-as-xml-declaration": "<!DOCTYPE rss [" + LAUGHS + "]>",
    "after-a-comment": "<!-- hi --><!DOCTYPE rss [" + LAUGHS + "]>",
    "single-quoted": "<!DOCTYPE rss [" + LAUGHS.replace('"', "'") + "]>",
}


class TestEntityExpansion:
    @pytest.mark.parametrize("shape", sorted(BOMB_SHAPES))
    def test_billion_laughs_is_not_expanded(self, shape: str) -> None:
        body = rss(BOMB_SHAPES[shape], "&lol9;").encode()
        result, elapsed, peak = measured_parse(body)
        assert elapsed < 0.5, f"took {elapsed:.2f}s"
        assert peak < 10 * 2**20, f"peak {peak / 2**20:.1f} MiB"
        assert "lollol" not in all_text(result)

    def test_billion_laughs_in_utf16(self) -> None:
        body = rss(BOMB_SHAPES["same-line-as-xml-declaration"], "&lol9;").replace(
            '<?xml version="1.0"?>', '<?xml version="1.0" encoding="utf-16"?>'
        )
        result, elapsed, peak = measured_parse(body.encode("utf-16"))
        assert elapsed < 0.5 and peak < 10 * 2**20
        assert "lollol" not in all_text(result)

    def test_bomb_in_atom(self) -> None:
        body = (
            '<?xml version="1.0"?><!DOCTYPE feed [' + LAUGHS + ']><feed xmlns="http://www.w3.org/2005/Atom">'
            "<title>&lol9;</title><entry><id>x:1</id><title>&lol9;</title></entry></feed>"
        ).encode()
        result, elapsed, _ = measured_parse(body)
        assert elapsed < 0.5 and "lollol" not in all_text(result)

    def test_quadratic_blowup_is_not_expanded(self) -> None:
        big = "A" * 50_000
        body = rss(f'<!DOCTYPE rss [<!ENTITY a "{big}">]>', "&a;" * 5_000).encode()
        result, elapsed, peak = measured_parse(body)
        assert elapsed < 1.0 and peak < 30 * 2**20
        assert big not in all_text(result)

    def test_parameter_entity_bomb(self) -> None:
        prolog = '<!DOCTYPE rss [<!ENTITY % a "aaaaaaaaaa"><!ENTITY % b "%a;%a;%a;%a;%a;%a;"> %b;]>'
        result, elapsed, _ = measured_parse(rss(prolog, "fine").encode())
        assert elapsed < 0.5 and isinstance(result, ParsedFeed)
        assert result.articles[0].title == "fine"

    def test_short_literal_entities_still_work(self) -> None:
        # A real feed use (feedparser's wellformed/rss/entity_in_doctype.xml).
        prolog = '\n<!DOCTYPE rss [\n  <!ENTITY id "tag:example.com,">\n  <!ENTITY nbsp "&#160;">\n]>\n'
        parsed = parse_feed(rss(prolog, "a&nbsp;b").replace("x:1", "&id;2006:/blog/").encode(), FEED_URL)
        assert isinstance(parsed, ParsedFeed) and parsed.warning is None
        assert parsed.articles[0].guid == "tag:example.com,2006:/blog/"
        assert parsed.articles[0].title == "a b"


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "secret.txt"
    path.write_text(SECRET)
    return path


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A local TCP port that records whether anything connected to it."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    yield server
    server.close()


def connected(server: socket.socket) -> bool:
    try:
        connection, _ = server.accept()
    except BlockingIOError:
        return False
    connection.close()
    return True


def external_prologs(uri: str) -> dict[str, tuple[str, str]]:
    """Attack name -> (prolog, title) for an external resource at ``uri``."""
    return {
        "general-entity-multiline": (f'\n<!DOCTYPE rss [\n<!ENTITY xxe SYSTEM "{uri}">\n]>\n', "a &xxe; b"),
        "general-entity-one-line": (f'<!DOCTYPE rss [<!ENTITY xxe SYSTEM "{uri}">]>', "a &xxe; b"),
        "public-entity": (f'<!DOCTYPE rss [<!ENTITY xxe PUBLIC "-//X//Y" "{uri}">]>', "a &xxe; b"),
        "parameter-entity": (f'<!DOCTYPE rss [<!ENTITY % pe SYSTEM "{uri}"> %pe;]>', "a b"),
        "external-dtd": (f'<!DOCTYPE rss SYSTEM "{uri}">', "a &xxe; b"),
        "external-dtd-and-subset": (f'<!DOCTYPE rss SYSTEM "{uri}" [<!ENTITY x "y">]>', "a &xxe; b"),
    }


ATTACKS = sorted(external_prologs("file:///x"))


class TestExternalEntities:
    @pytest.mark.parametrize("attack", ATTACKS)
    def test_local_file_is_never_read(self, attack: str, secret_file: Path) -> None:
        prolog, title = external_prologs(secret_file.as_uri())[attack]
        for body in (rss(prolog, title).encode(), rss(prolog, title).encode("utf-16")):
            result, _, _ = measured_parse(body)
            assert SECRET not in all_text(result)

    @pytest.mark.parametrize("attack", ATTACKS)
    def test_network_is_never_reached(self, attack: str, listener: socket.socket) -> None:
        port = listener.getsockname()[1]
        prolog, title = external_prologs(f"http://127.0.0.1:{port}/evil.dtd")[attack]
        measured_parse(rss(prolog, title).encode())
        assert not connected(listener)

    def test_external_entity_in_json_feed_html_is_inert(self, secret_file: Path) -> None:
        html = f'<!DOCTYPE x [<!ENTITY xxe SYSTEM \\"{secret_file.as_uri()}\\">]><p>&xxe;</p>'
        parsed = parse_feed(('{"version": "https://jsonfeed.org/version/1.1", "items": [{"id": "x:1", "content_html": "' + html + '"}]}').encode(), FEED_URL)
        assert SECRET not in repr(parsed)


class TestDefuseDoctype:
    def test_document_without_doctype_is_untouched(self) -> None:
        data = b'<?xml version="1.0"?><rss version="2.0"/>'
        assert defuse_doctype(data) == (data, False)

    def test_external_id_only_is_untouched(self) -> None:
        data = b'<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN" "http://my.netscape.com/publish/formats/rss-0.91.dtd"><rss/>'
        assert defuse_doctype(data) == (data, False)

    def test_brackets_and_gt_inside_quotes_and_comments(self) -> None:
        data = b'<!DOCTYPE rss [<!-- ]> --><!ENTITY a "]>"><!ENTITY b \'x\'>]><rss>&b;</rss>'
        defused, changed = defuse_doctype(data)
        assert changed
        # "]>" is dropped: feedparser's own DOCTYPE regex would end the declaration there.
        assert defused == b"\n<!DOCTYPE rss [\n<!ENTITY b 'x'>\n]><rss>&b;</rss>"

    def test_long_literal_dropped(self) -> None:
        value = "v" * (MAX_ENTITY_VALUE + 1)
        defused, changed = defuse_doctype(f'<!DOCTYPE r [<!ENTITY a "{value}">]><r/>'.encode())
        assert changed and defused == b"<!DOCTYPE r ><r/>"

    def test_safe_entities_laid_out_for_feedparser(self) -> None:
        data = b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "x"><!ENTITY % p "y">]><rss/>'
        defused, changed = defuse_doctype(data)
        assert changed
        assert defused == b'<?xml version="1.0"?>\n<!DOCTYPE rss [\n<!ENTITY a "x">\n]><rss/>'

    def test_unterminated_subset_is_refused(self) -> None:
        with pytest.raises(UnsafeDoctype):
            defuse_doctype(b'<!DOCTYPE rss [<!ENTITY a "b"><rss/>')

    def test_unterminated_subset_is_a_feed_error(self) -> None:
        with pytest.raises(FeedError, match=f"^{FEED_URL}: .*DOCTYPE"):
            parse_feed(b'<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "b"><rss version="2.0"/>', FEED_URL)

    def test_utf16_round_trip(self) -> None:
        text = '<!DOCTYPE r [<!ENTITY % p SYSTEM "file:///etc/passwd">%p;]><r>é</r>'
        defused, changed = defuse_doctype(text.encode("utf-16"))
        assert changed and defused.decode("utf-16") == "<!DOCTYPE r ><r>é</r>"
