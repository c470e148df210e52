"""``shared.auth``: shared-secret and signature checks."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from pydantic import SecretStr

from shared import auth
from shared.errors import Unauthenticated
from tests.support.signing import sign


def test_presented_secret_prefers_the_named_header() -> None:
    headers = {"X-API-Key": " k1 ", "Authorization": "Bearer k2"}
    assert auth.presented_secret(headers, "X-API-Key") == "k1"
    assert auth.presented_secret(headers) == "k2"
    assert auth.presented_secret({"Authorization": "bEaReR   k3  "}) == "k3"


@pytest.mark.parametrize("value", ["", "Bearer", "Bearer   ", "Basic abc", "Token abc", "abc"])
def test_no_bearer_token_is_no_credential(value: str) -> None:
    assert auth.presented_secret({"Authorization": value}) is None


def test_empty_named_header_is_no_credential_even_with_a_bearer() -> None:
    assert auth.presented_secret({"X-API-Key": "  ", "Authorization": "Bearer k"}, "X-API-Key") is None


def test_every_configured_secret_is_compared(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    keys = [SecretStr("first"), SecretStr("second-and-longer"), "third"]
    for presented in ("first", "third", "nope", None):
        calls.clear()
        auth.secret_matches(presented, keys)
        # No early exit, and only equal-length digests are compared.
        assert len(calls) == 3
        assert all(len(a) == len(b) == 32 for a, b in calls)


def test_rotation_and_refusal() -> None:
    keys = [SecretStr("old"), SecretStr("new")]
    auth.check_secret("old", keys)
    auth.check_secret("new", keys)
    for wrong in (None, "", "ol", "old ", "OLD", "oldnew"):
        with pytest.raises(Unauthenticated):
            auth.check_secret(wrong, keys)
    with pytest.raises(Unauthenticated):
        auth.check_secret("anything", [])


def test_signature_without_timestamp() -> None:
    body = b'{"a": 1}'
    signature = "sha256=" + hmac.new(b"s3", body, hashlib.sha256).hexdigest()
    assert sign(body, "s3") == signature
    auth.check_signature(body, signature, ["s3"])
    auth.check_signature(body, signature.upper().replace("SHA256=", "sha256="), ["s3"])
    auth.check_signature(body, signature, ["other", SecretStr("s3")])
    for bad in (
        None,
        "",
        signature[:-1],
        signature.replace("sha256=", "sha1="),
        "sha256=" + "0" * 64,
        signature + "00",
        "sha256=" + "zz" * 32,
    ):
        with pytest.raises(Unauthenticated):
            auth.check_signature(body, bad, ["s3"])
    with pytest.raises(Unauthenticated):
        auth.check_signature(body + b" ", signature, ["s3"])


def test_signature_with_timestamp_and_replay_window() -> None:
    body = b"{}"
    signature = sign(body, "s3", "1700000000")
    assert signature == "sha256=" + hmac.new(b"s3", b"1700000000.{}", hashlib.sha256).hexdigest()
    auth.check_signature(body, signature, ["s3"], timestamp="1700000000", now=lambda: 1700000100.0)
    for now in (1700000301.0, 1699999699.0):
        with pytest.raises(Unauthenticated):
            auth.check_signature(body, signature, ["s3"], timestamp="1700000000", now=lambda n=now: n)
    for stamp in ("1700000001", "", "abc", "-1700000000", "1" * 5000):
        with pytest.raises(Unauthenticated):
            auth.check_signature(body, signature, ["s3"], timestamp=stamp, now=lambda: 1700000000.0)
    with pytest.raises(Unauthenticated):
        # Signed without the timestamp, but sent with one: not the same message.
        auth.check_signature(body, sign(body, "s3"), ["s3"], timestamp="1700000000", now=lambda: 1700000000.0)
