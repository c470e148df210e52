"""Credential checks for the HTTP functions: shared secrets and signed bodies.

Every check takes the same time whether the credential is missing, wrong, or right
for the first or the last of several configured secrets:

* each value is reduced to a SHA-256 digest first, so ``hmac.compare_digest`` always
  compares two 32-byte strings and the length of a secret leaks nothing;
* a presented value is compared against *every* configured secret, without stopping
  at the first match, so rotation (old and new secret both valid) costs no signal;
* a missing credential is compared like a wrong one and fails the same way, with the
  same answer (``Unauthenticated`` → 401).

Headers. ``Authorization: Bearer <secret>`` (scheme matched case-insensitively, as
RFC 9110 asks) or a function-specific header such as ``X-API-Key``. When the named
header is present it wins, because a caller behind Cloud Run IAM may put Google's ID
token in ``Authorization``. Cloud Run's own token normally travels in
``X-Serverless-Authorization``, which this module never reads, so the two never meet.
Whitespace around a header value is not part of it (RFC 9110 §5.5) and is ignored;
whitespace inside a credential makes it wrong.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Iterable, Mapping

from pydantic import SecretStr

from shared.errors import Unauthenticated

SIGNATURE_PREFIX = "sha256="
# Compared against when no credential was presented, so that case costs the same.
_ABSENT = hashlib.sha256(b"\x00no credential presented\x00").digest()


def _digest(value: str | bytes) -> bytes:
    raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
    return hashlib.sha256(raw).digest()


def _plain(secret: SecretStr | str) -> str:
    return secret.get_secret_value() if isinstance(secret, SecretStr) else secret


def presented_secret(headers: Mapping[str, str], header: str | None = None) -> str | None:
    """The credential a request carries: ``header`` if present, else a Bearer token."""
    if header is not None and header in headers:
        return headers.get(header, "").strip() or None
    authorization = headers.get("Authorization", "").strip()
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def secret_matches(presented: str | None, secrets: Iterable[SecretStr | str]) -> bool:
    """Whether ``presented`` equals any of ``secrets``, in time independent of which (or none)."""
    candidate = _ABSENT if presented is None else _digest(presented)
    matched = False
    for secret in secrets:
        # No short-circuit: every configured secret is compared on every call.
        matched |= hmac.compare_digest(candidate, _digest(_plain(secret)))
    return matched and presented is not None


def check_secret(presented: str | None, secrets: Iterable[SecretStr | str]) -> None:
    """Raise ``Unauthenticated`` unless ``presented`` is one of ``secrets``."""
    if not secret_matches(presented, secrets):
        raise Unauthenticated("missing or invalid credentials")


def sign(body: bytes, secret: str, timestamp: str | None = None) -> str:
    """The ``sha256=HEX`` signature of ``body`` (of ``timestamp + "." + body`` when timed)."""
    message = body if timestamp is None else timestamp.encode("ascii") + b"." + body
    return SIGNATURE_PREFIX + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def check_signature(
    body: bytes,
    signature: str | None,
    secrets: Iterable[SecretStr | str],
    *,
    timestamp: str | None = None,
    tolerance_seconds: int = 300,
    now: Callable[[], float] = time.time,
) -> None:
    """Raise ``Unauthenticated`` unless ``signature`` signs ``body`` with one of ``secrets``.

    With ``timestamp`` (Unix seconds), the signed message is ``timestamp + "." + body``
    and the timestamp must lie within ``tolerance_seconds`` of now, so a captured
    request cannot be replayed later. The hex digest is compared case-insensitively.
    """
    presented = _signature_hex(signature)
    message = body
    if timestamp is not None:
        stamp = timestamp.strip()
        if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12) or abs(
            now() - int(stamp)
        ) > tolerance_seconds:
            # Still compare, so a bad timestamp and a bad signature cost the same.
            presented = None
        message = stamp.encode("ascii", "replace") + b"." + body
    matched = False
    for secret in secrets:
        expected = hmac.new(_plain(secret).encode("utf-8"), message, hashlib.sha256).hexdigest()
        matched |= hmac.compare_digest(_digest(presented or "\x00"), _digest(expected))
    if not matched or presented is None:
        raise Unauthenticated("missing or invalid signature")


def _signature_hex(signature: str | None) -> str | None:
    if signature is None:
        return None
    value = signature.strip()
    if not value[: len(SIGNATURE_PREFIX)].lower() == SIGNATURE_PREFIX:
        return None
    hex_part = value[len(SIGNATURE_PREFIX) :].lower()
    if len(hex_part) != 64 or not all(c in "0123456789abcdef" for c in hex_part):
        return None
    return hex_part
