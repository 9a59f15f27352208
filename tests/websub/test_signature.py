"""X-Hub-Signature: every method the spec lists, and what fails."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from monitor.websub import check_signature

BODY = b"<rss>pushed</rss>"


@pytest.mark.parametrize("method", ["sha1", "sha256", "sha384", "sha512"])
def test_each_method_of_the_spec(method):
    digest = hmac.new(b"s3cret", BODY, getattr(hashlib, method)).hexdigest()
    assert check_signature(f"{method}={digest}", BODY, "s3cret") == "ok"
    assert check_signature(f"{method.upper()}={digest.upper()}", BODY, "s3cret") == "ok", "case-insensitive"
    assert check_signature(f"{method}={digest}", BODY + b" ", "s3cret") == "bad", "another body"
    assert check_signature(f"{method}={digest}", BODY, "other") == "bad", "another secret"


def test_missing_malformed_and_unknown_methods():
    assert check_signature(None, BODY, "s") == "unsigned"
    assert check_signature("", BODY, "s") == "unsigned"
    assert check_signature("sha256", BODY, "s") == "bad"
    assert check_signature("md5=" + hashlib.md5(BODY).hexdigest(), BODY, "s") == "bad"


def test_a_digest_with_non_ascii_characters_is_bad_not_a_crash():
    # aiohttp hands header bytes that are not UTF-8 over as surrogate escapes.
    assert check_signature("sha256=\udcc3\udca9", BODY, "s") == "bad"
    assert check_signature("sha256=é" + "0" * 63, BODY, "s") == "bad"
