"""drain's OIDC check: Google-style ID tokens signed by keys made here, certificates
served from 127.0.0.1, verified by google-auth as in production."""

from __future__ import annotations

import base64
import datetime
import http.server
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth import crypt, jwt

from shared import log
from tests.drain.conftest import job_row

AUDIENCE = "https://drain-100000000003.europe-west1.run.app"
SCHEDULER = "processing-scheduler@manda-processing-prod.iam.gserviceaccount.com"
KEY_ID = "test-key-1"


class KeyPair:
    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, key_id)])
        now = datetime.datetime.now(datetime.UTC)
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .sign(self.key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
            .decode()
        )
        private = self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        self.signer = crypt.RSASigner.from_string(private, key_id=key_id)

    def token(self, **overrides: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": "https://accounts.google.com",
            "aud": AUDIENCE,
            "azp": "112233445566778899",
            "sub": "112233445566778899",
            "email": SCHEDULER,
            "email_verified": True,
            "iat": now,
            "exp": now + 3600,
        }
        claims.update(overrides)
        claims = {key: value for key, value in claims.items() if value is not None}
        return jwt.encode(self.signer, claims).decode()


class CertsServer:
    """Google's certificate endpoint format (``{kid: PEM}``), on 127.0.0.1."""

    def __init__(self, certs: dict[str, str]) -> None:
        self.certs = certs
        self.hits = 0
        self.status = 200
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                body = json.dumps(outer.certs).encode()
                self.send_response(outer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "public, max-age=3600")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/oauth2/v1/certs"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def google() -> KeyPair:
    return KeyPair(KEY_ID)


@pytest.fixture(scope="module")
def stranger() -> KeyPair:
    return KeyPair(KEY_ID)  # same key id, different key: a forged signature


@pytest.fixture
def certs(google: KeyPair) -> Iterator[CertsServer]:
    server = CertsServer({google.key_id: google.certificate})
    yield server
    server.close()


@pytest.fixture
def oidc_drain(drain_client, certs: CertsServer):
    def make(**env: str):
        settings = {
            "DRAIN_TOKEN": "",
            "DRAIN_OIDC_AUDIENCES": f"https://other.example,{AUDIENCE}",
            "DRAIN_OIDC_SERVICE_ACCOUNTS": SCHEDULER.upper(),
            "DRAIN_OIDC_CERTS_URL": certs.url,
            "DRAIN_OIDC_TRUST_CLOUD_RUN": "false",
        }
        settings.update(env)
        return drain_client(**settings)

    return make


def bearer(token: str, header: str = "Authorization") -> dict[str, str]:
    return {header: f"Bearer {token}"}


def test_cloud_schedulers_token_is_accepted_and_the_certificates_are_cached(oidc_drain, google, certs) -> None:
    drain = oidc_drain()
    for _ in range(3):
        response = drain.post({"budgetSeconds": 0}, headers=bearer(google.token()))
        assert response.status_code == 200, response.get_json()
    assert certs.hits == 1  # Cache-Control: max-age=3600


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"aud": "https://someone-else.example"}, "audience"),
        ({"iss": "accounts.google.com"}, "issuer"),
        ({"iss": "https://evil.example"}, "issuer"),
        ({"iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600}, "expired"),
        ({"email": "intruder@other-project.iam.gserviceaccount.com"}, "not an allowed"),
        ({"email_verified": False}, "verified email"),
        ({"email": None}, "verified email"),
    ],
)
def test_a_token_with_a_wrong_claim_is_401(oidc_drain, google, claims, reason) -> None:
    response = oidc_drain().post({"budgetSeconds": 0}, headers=bearer(google.token(**claims)))
    assert response.status_code == 401, response.get_json()
    assert reason in response.get_json()["message"]


def test_a_forged_signature_is_401_and_nothing_is_fetched(oidc_drain, google, stranger, node_boss, db) -> None:
    drain = oidc_drain()
    assert drain.post({"budgetSeconds": 0}, headers=bearer(google.token())).status_code == 200
    job_id = node_boss.call("send", "test-job", {"n": 1})

    forged = drain.post({"budgetSeconds": 0}, headers=bearer(stranger.token()))
    header, payload, _signature = google.token().split(".")
    tampered_payload = (
        base64.urlsafe_b64encode(
            json.dumps({**json.loads(base64.urlsafe_b64decode(payload + "==")), "email": "x@y.z"}).encode()
        )
        .rstrip(b"=")
        .decode()
    )
    tampered = drain.post({"budgetSeconds": 0}, headers=bearer(f"{header}.{tampered_payload}.{_signature}"))

    assert (forged.status_code, tampered.status_code) == (401, 401)
    assert "signature" in forged.get_json()["message"]
    assert job_row(db, "test-job", job_id)["state"] == "created"


def test_garbage_and_missing_tokens_are_401(oidc_drain) -> None:
    drain = oidc_drain()
    for headers in ({}, bearer("not-a-jwt"), bearer("a.b.c"), {"Authorization": "Bearer"}):
        assert drain.post({"budgetSeconds": 0}, headers=headers).status_code == 401, headers


def test_a_key_google_rotated_in_is_fetched_again(oidc_drain, google, certs) -> None:
    drain = oidc_drain()
    assert drain.post({"budgetSeconds": 0}, headers=bearer(google.token())).status_code == 200
    rotated = KeyPair("test-key-2")
    certs.certs = {rotated.key_id: rotated.certificate, google.key_id: google.certificate}
    assert drain.post({"budgetSeconds": 0}, headers=bearer(rotated.token())).status_code == 200
    assert certs.hits == 2


def test_unreachable_certificates_are_503_not_401(oidc_drain, google, certs) -> None:
    certs.status = 500
    response = oidc_drain().post({"budgetSeconds": 0}, headers=bearer(google.token()))
    assert response.status_code == 503
    assert response.headers["Retry-After"]


def test_cloud_runs_stripped_token_is_trusted_only_when_told(oidc_drain, google) -> None:
    header, payload, _signature = google.token().split(".")
    for stripped in (f"{header}.{payload}", f"{header}.{payload}."):
        refused = oidc_drain().post({"budgetSeconds": 0}, headers=bearer(stripped, "X-Serverless-Authorization"))
        assert refused.status_code == 401
        assert "DRAIN_OIDC_TRUST_CLOUD_RUN" in refused.get_json()["message"]
        trusted = oidc_drain(DRAIN_OIDC_TRUST_CLOUD_RUN="true")
        assert (
            trusted.post({"budgetSeconds": 0}, headers=bearer(stripped, "X-Serverless-Authorization")).status_code
            == 200
        )

    # Trusting Cloud Run's signature check is not trusting the claims.
    h, p, _ = google.token(aud="https://someone-else.example").split(".")
    response = oidc_drain(DRAIN_OIDC_TRUST_CLOUD_RUN="true").post(
        {"budgetSeconds": 0}, headers=bearer(f"{h}.{p}", "X-Serverless-Authorization")
    )
    assert response.status_code == 401
    assert "audience" in response.get_json()["message"]


def test_a_signed_token_in_x_serverless_authorization_is_verified(oidc_drain, google, stranger) -> None:
    drain = oidc_drain()
    assert (
        drain.post({"budgetSeconds": 0}, headers=bearer(google.token(), "X-Serverless-Authorization")).status_code
        == 200
    )
    assert (
        drain.post({"budgetSeconds": 0}, headers=bearer(stranger.token(), "X-Serverless-Authorization")).status_code
        == 401
    )


def test_drain_token_and_oidc_can_both_be_configured(oidc_drain, google) -> None:
    drain = oidc_drain(DRAIN_TOKEN="local-token-0123456789")
    assert drain.post({"budgetSeconds": 0}, headers=bearer("local-token-0123456789")).status_code == 200
    assert drain.post({"budgetSeconds": 0}, headers=bearer(google.token())).status_code == 200
    assert drain.post({"budgetSeconds": 0}, headers=bearer("local-token-wrong")).status_code == 401


@pytest.mark.parametrize(
    "token",
    [
        "secretheader.secretclaims.secretsignature.secretextra",
        "onesegmentthatisasecretvalue",
        "c2VjcmV0aGVhZGVy.c2VjcmV0Y2xhaW1z.c2lnbmF0dXJl",
    ],
)
def test_a_rejected_tokens_answer_and_log_never_quote_it(oidc_drain, token, capsys) -> None:
    log.configure("INFO")
    drain = oidc_drain()
    capsys.readouterr()
    response = drain.post({"budgetSeconds": 0}, headers=bearer(token))

    assert response.status_code == 401
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert any(json.loads(line).get("status") == 401 for line in lines)  # the request's own line is among them
    seen = response.get_data(as_text=True) + "\n".join(lines)
    for piece in ["secret", *token.split(".")]:
        assert piece not in seen, piece
