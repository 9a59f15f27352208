"""``X-Hub-Signature``: the HMAC a hub computes over a pushed body with the subscription's
secret (WebSub section 8), as ``method=hexdigest``. The spec's methods are sha1, sha256,
sha384 and sha512; anything else fails. Digests are compared in constant time."""

from __future__ import annotations

import hashlib
import hmac

__all__ = ["METHODS", "check_signature"]

METHODS = {"sha1": hashlib.sha1, "sha256": hashlib.sha256, "sha384": hashlib.sha384, "sha512": hashlib.sha512}


def check_signature(header: str | None, body: bytes, secret: str) -> str:
    """``"ok"``, ``"unsigned"`` (no header) or ``"bad"`` (unknown method, malformed, or wrong)."""
    if not header:
        return "unsigned"
    method, _, digest = header.strip().partition("=")
    algorithm = METHODS.get(method.strip().lower())
    digest = digest.strip().lower()
    # compare_digest refuses non-ASCII text, and no hex digest has any.
    if algorithm is None or not digest or not digest.isascii():
        return "bad"
    expected = hmac.new(secret.encode(), body, algorithm).hexdigest()
    return "ok" if hmac.compare_digest(expected, digest) else "bad"
