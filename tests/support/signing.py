"""Signing webhook bodies the way a signing sender does, to test ``shared.auth``'s check."""

from __future__ import annotations

import hashlib
import hmac

from shared.auth import SIGNATURE_PREFIX


def sign(body: bytes, secret: str, timestamp: str | None = None) -> str:
    """The ``sha256=HEX`` signature of ``body`` (of ``timestamp + "." + body`` when timed)."""
    message = body if timestamp is None else timestamp.encode("ascii") + b"." + body
    return SIGNATURE_PREFIX + hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()
