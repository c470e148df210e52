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
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import SecretStr
from werkzeug.datastructures import Headers

from shared.config import Settings
from shared.errors import ConfigError, Unauthenticated, Unavailable, echo

SIGNATURE_PREFIX = "sha256="
# Compared against when no credential was presented, so that case costs the same.
_ABSENT = hashlib.sha256(b"\x00no credential presented\x00").digest()


def _digest(value: str | bytes) -> bytes:
    raw = value if isinstance(value, bytes) else value.encode("utf-8", "surrogateescape")
    return hashlib.sha256(raw).digest()


def _plain(secret: SecretStr | str) -> str:
    return secret.get_secret_value() if isinstance(secret, SecretStr) else secret


def presented_secret(headers: Headers, header: str | None = None) -> str | None:
    """The credential a request carries: ``header`` if present, else a Bearer token."""
    if header is not None and header in headers:
        return headers.get(header, "").strip() or None
    return bearer_token(headers)


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
        if (
            not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12)
            or abs(now() - int(stamp)) > tolerance_seconds
        ):
            # Still compare, so a bad timestamp and a bad signature cost the same.
            presented = None
        message = stamp.encode("ascii", "replace") + b"." + body
    matched = False
    for secret in secrets:
        expected = hmac.new(_plain(secret).encode("utf-8"), message, hashlib.sha256).hexdigest()
        matched |= hmac.compare_digest(_digest(presented or "\x00"), _digest(expected))
    if not matched or presented is None:
        raise Unauthenticated("missing or invalid signature")


# -- enqueue: services holding an API key -------------------------------------------------

API_KEY_HEADER = "X-API-Key"


def check_enqueue_caller(headers: Headers, settings: Settings) -> None:
    """Raise ``Unauthenticated`` unless the request carries one of ``API_KEYS``.

    The key travels as ``X-API-Key: KEY`` or ``Authorization: Bearer KEY``; behind Cloud
    Run IAM, Google's token stays in ``X-Serverless-Authorization``.
    """
    # main.py refuses to start enqueue without API_KEYS; were that check skipped, no key
    # matches and the caller is refused like any other, never with a 500.
    check_secret(presented_secret(headers, API_KEY_HEADER), settings.api_keys)


# -- webhook: Supabase's database webhook triggers ----------------------------------------

WEBHOOK_SECRET_HEADER = "X-Webhook-Secret"
WEBHOOK_SIGNATURE_HEADER = "X-Webhook-Signature"
WEBHOOK_TIMESTAMP_HEADER = "X-Webhook-Timestamp"


def check_webhook_caller(headers: Headers, settings: Settings, read_body: Callable[[], bytes]) -> bytes:
    """The raw body of an authenticated webhook delivery; ``Unauthenticated`` otherwise.

    Database webhooks are not signed: the trigger sends one of ``WEBHOOK_SECRET``
    (comma-separated, so old and new are both valid while it rotates) as
    ``Authorization: Bearer SECRET`` or ``X-Webhook-Secret: SECRET``. A sender that signs
    adds ``X-Webhook-Signature: sha256=HEX`` (HMAC-SHA256 of the raw body with the same
    secret; of ``TIMESTAMP + "." + body`` when ``X-Webhook-Timestamp`` is sent, which
    must then be within ``WEBHOOK_SIGNATURE_TOLERANCE_SECONDS``). Every credential sent
    must be valid and at least one must be sent; ``WEBHOOK_REQUIRE_SIGNATURE`` makes the
    signature mandatory. A secret is checked before the body is read.
    """
    # As for enqueue: no secret configured means nothing matches (401), never a 500.
    secrets = settings.webhook_secrets
    signed = WEBHOOK_SIGNATURE_HEADER in headers
    if not signed and settings.webhook_require_signature:
        raise Unauthenticated(f"a signature ({WEBHOOK_SIGNATURE_HEADER}) is required")
    if not signed or WEBHOOK_SECRET_HEADER in headers or "Authorization" in headers:
        check_secret(presented_secret(headers, WEBHOOK_SECRET_HEADER), secrets)
    body = read_body()
    if signed:
        check_signature(
            body,
            headers.get(WEBHOOK_SIGNATURE_HEADER),
            secrets,
            timestamp=headers.get(WEBHOOK_TIMESTAMP_HEADER),
            tolerance_seconds=settings.webhook_signature_tolerance_seconds,
        )
    return body


def _signature_hex(signature: str | None) -> str | None:
    if signature is None:
        return None
    value = signature.strip()
    if value[: len(SIGNATURE_PREFIX)].lower() != SIGNATURE_PREFIX:
        return None
    hex_part = value[len(SIGNATURE_PREFIX) :].lower()
    if len(hex_part) != 64 or not all(c in "0123456789abcdef" for c in hex_part):
        return None
    return hex_part


# -- Google-signed OIDC tokens (drain) --------------------------------------------------
#
# Cloud Scheduler calls drain with an OIDC ID token of a dedicated service account in
# ``Authorization: Bearer``. The token is verified here with google-auth: signature
# against Google's certificates (fetched from a configurable URL, cached as long as
# Google's Cache-Control allows, refetched once when a token names an unknown key),
# expiry, audience, issuer, and a verified email on the allow-list.
#
# ``X-Serverless-Authorization``: Cloud Run checks this header in preference to
# ``Authorization`` and removes the token's signature before passing it on, so the
# function itself cannot verify it. Such a token is accepted only when the operator
# says the function is private behind Cloud Run IAM (``trust_cloud_run``); its claims
# are still checked. A token in that header that does carry a signature is verified.

GOOGLE_ISSUER = "https://accounts.google.com"
_CERTS_TIMEOUT_SECONDS = 5.0
_CERTS_DEFAULT_TTL_SECONDS = 300.0
_CLOCK_SKEW_SECONDS = 10


class CertificatesUnavailable(Unavailable):
    """Google's token-signing certificates cannot be fetched; tokens cannot be checked now."""

    code = "certificates_unavailable"


class CachingCertsRequest:
    """A google-auth transport request that caches GET answers per their Cache-Control."""

    def __init__(self, inner: Callable[..., Any] | None = None, *, clock: Callable[[], float] = time.monotonic):
        self._inner = inner
        self._clock = clock
        self._cache: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def forget(self, url: str) -> None:
        with self._lock:
            self._cache.pop(url, None)

    def __call__(self, url: str, method: str = "GET", **kwargs: Any) -> Any:
        with self._lock:
            cached = self._cache.get(url)
        if method == "GET" and cached is not None and self._clock() < cached[0]:
            return cached[1]
        if self._inner is None:
            import google.auth.transport.requests  # needs the requests package

            self._inner = google.auth.transport.requests.Request()
        kwargs.setdefault("timeout", _CERTS_TIMEOUT_SECONDS)
        response = self._inner(url, method=method, **kwargs)
        if method == "GET" and response.status == 200:
            with self._lock:
                self._cache[url] = (self._clock() + _max_age(response.headers), response)
        return response


def _max_age(headers: Headers) -> float:
    for name, value in headers.items():
        if name.lower() == "cache-control":
            for directive in value.split(","):
                key, _, seconds = directive.strip().partition("=")
                if key.lower() == "max-age" and seconds.strip().isdigit():
                    return float(seconds.strip())
    return _CERTS_DEFAULT_TTL_SECONDS


_certs_request = CachingCertsRequest()


def bearer_token(headers: Headers, header: str = "Authorization") -> str | None:
    """The token of ``header: Bearer <token>``, if that is what the header holds."""
    scheme, _, token = headers.get(header, "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return token.strip() or None


def verify_google_oidc(
    token: str,
    *,
    audiences: Iterable[str],
    emails: Iterable[str],
    certs_url: str,
    signed: bool = True,
    request: CachingCertsRequest | None = None,
) -> str:
    """The verified service-account email of a Google ID token, or ``Unauthenticated``.

    ``signed=False`` checks the claims of a token whose signature someone trusted
    (Cloud Run) already checked and removed; everything else is checked the same.
    """
    from google.auth import exceptions as google_errors
    from google.auth import jwt
    from google.oauth2 import id_token

    audiences = list(audiences)
    # Any: google-auth types this as its abstract transport Request, which ours serves
    # without inheriting from (importing its transport module would cost every cold start).
    transport: Any = request or _certs_request

    def verify_signed() -> Any:
        return id_token.verify_token(
            token, transport, audience=audiences, certs_url=certs_url, clock_skew_in_seconds=_CLOCK_SKEW_SECONDS
        )

    try:
        if signed:
            try:
                claims = verify_signed()
            except google_errors.MalformedError as exc:
                if "Certificate for key id" not in str(exc):
                    raise
                transport.forget(certs_url)  # Google rotated its keys since we cached them
                claims = verify_signed()
        else:
            claims = jwt.decode(token if token.count(".") == 2 else token + ".", verify=False)
            _check_unsigned_claims(claims, audiences)
    except google_errors.TransportError as exc:
        raise CertificatesUnavailable(f"cannot fetch Google's token certificates: {exc}") from None
    except (ValueError, google_errors.GoogleAuthError) as exc:
        raise Unauthenticated(
            f"OIDC token rejected: {_library_reason(exc, token, google_errors.MalformedError)}"
        ) from None
    if claims.get("iss") != GOOGLE_ISSUER:
        raise Unauthenticated(f"OIDC token rejected: issuer {echo(claims.get('iss'))} is not {GOOGLE_ISSUER}")
    email = claims.get("email")
    if not isinstance(email, str) or claims.get("email_verified") is not True:
        raise Unauthenticated("OIDC token rejected: no verified email")
    if email.lower() not in {allowed.lower() for allowed in emails}:
        raise Unauthenticated(f"OIDC token rejected: {echo(email)} is not an allowed service account")
    return email


def _check_unsigned_claims(claims: Mapping[str, Any], audiences: list[str]) -> None:
    now = time.time()
    issued, expires = claims.get("iat"), claims.get("exp")
    if not isinstance(issued, int | float) or not isinstance(expires, int | float):
        raise ValueError("Token does not contain iat and exp")
    if now < issued - _CLOCK_SKEW_SECONDS:
        raise ValueError("Token used too early")
    if expires + _CLOCK_SKEW_SECONDS < now:
        raise ValueError("Token expired")
    if claims.get("aud") not in audiences:
        raise ValueError(f"Token has wrong audience {echo(claims.get('aud'))}")


def _library_reason(exc: BaseException, token: str, malformed: type[Exception]) -> str:
    """The first line of google-auth's reason, with any piece of the token cut out.

    Some of its messages quote the token they could not parse ("Wrong number of
    segments in token: b'…'"); the reason goes into the answer and the log line, and a
    bearer token must appear in neither.
    """
    text = (str(exc).strip() or type(exc).__name__).splitlines()[0]
    if isinstance(exc, malformed) and "signature" not in text:
        # Its parse errors quote the token or a decoded piece of it, which no scrub can find.
        return "not a well-formed JWT (three base64url segments, JSON header and claims)"
    for piece in sorted({token, *token.split(".")}, key=len, reverse=True):
        if len(piece) >= 8:
            text = text.replace(piece, "<token>")
    return text[:200]


def check_drain_configured(settings: Settings) -> None:
    """``ConfigError`` when drain has no way at all to accept a caller (checked at cold start)."""
    if settings.drain_token is None and not settings.drain_oidc_audiences:
        raise ConfigError(
            "drain accepts no caller: set DRAIN_OIDC_AUDIENCES and DRAIN_OIDC_SERVICE_ACCOUNTS, "
            "or DRAIN_TOKEN for local runs"
        )


def check_drain_caller(headers: Headers, settings: Settings) -> str:
    """Who is calling drain: ``"drain-token"`` or a verified service-account email.

    Accepts ``Authorization: Bearer DRAIN_TOKEN`` (local runs) or a Google OIDC token
    (production) as described above; raises ``Unauthenticated`` for anything else, also
    when neither is configured (``check_drain_configured`` stops such an instance at start).
    """
    oidc = bool(settings.drain_oidc_audiences)
    token = bearer_token(headers)
    if settings.drain_token is not None and secret_matches(token, [settings.drain_token]):
        return "drain-token"
    if oidc:

        def verify(candidate: str, signed: bool = True) -> str:
            return verify_google_oidc(
                candidate,
                audiences=settings.drain_oidc_audiences,
                emails=settings.drain_oidc_service_accounts,
                certs_url=settings.drain_oidc_certs_url,
                signed=signed,
            )

        if token is not None and token.count(".") == 2:
            return verify(token)
        serverless = bearer_token(headers, "X-Serverless-Authorization")
        if serverless is not None:
            if serverless.count(".") == 2 and not serverless.endswith("."):
                return verify(serverless)
            if settings.drain_oidc_trust_cloud_run:
                return verify(serverless, signed=False)
            raise Unauthenticated(
                "X-Serverless-Authorization carries no signature; it is trusted only with "
                "DRAIN_OIDC_TRUST_CLOUD_RUN=true (drain private behind Cloud Run IAM)"
            )
    raise Unauthenticated("missing or invalid credentials")
