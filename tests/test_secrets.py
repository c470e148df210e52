"""Secret references, resolved through the real client against a local gRPC fake."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared import secrets
from shared.errors import ConfigError
from shared.secrets import is_secret_reference, resolve_secret_references
from tests.fakes.secret_manager import FakeSecretManager, client_for, unreachable_address

ROOT = Path(__file__).resolve().parents[1]
SECRET_VALUES = ("hunter2-v1", "hunter2-v2", "s3cr3t-password")


@pytest.fixture(autouse=True)
def _empty_cache() -> Iterator[None]:
    secrets._cache.clear()
    yield
    secrets._cache.clear()


@pytest.fixture
def fake() -> Iterator[FakeSecretManager]:
    with FakeSecretManager() as server:
        server.add("proj", "api-key", SECRET_VALUES[0])
        server.add("proj", "api-key", SECRET_VALUES[1])
        server.add("proj", "db-password", SECRET_VALUES[2] + "\n")
        yield server


def assert_leaks_nothing(error: ConfigError) -> None:
    text = str(error)
    assert not any(value in text for value in SECRET_VALUES)
    # Raised outside any except block: no chained exception can carry a payload.
    assert error.__cause__ is None and error.__context__ is None


# --- found --------------------------------------------------------------------------


def test_all_reference_forms_resolve_latest_or_pinned(fake: FakeSecretManager) -> None:
    resolved = resolve_secret_references(
        {
            "LATEST": "sm://proj/api-key",
            "PINNED": "sm://proj/api-key#1",
            "FULL_PINNED": "projects/proj/secrets/api-key/versions/2",
            "FULL_LATEST": "projects/proj/secrets/db-password/versions/latest",
        },
        client=fake.client(),
    )
    assert resolved == {
        "LATEST": "hunter2-v2",
        "PINNED": "hunter2-v1",
        "FULL_PINNED": "hunter2-v2",
        "FULL_LATEST": "s3cr3t-password",
    }


def test_latest_follows_the_newest_version_on_a_fresh_process(fake: FakeSecretManager) -> None:
    fake.add("proj", "api-key", "hunter2-v3")
    assert resolve_secret_references({"K": "sm://proj/api-key"}, client=fake.client()) == {"K": "hunter2-v3"}


def test_only_a_single_trailing_newline_is_stripped(fake: FakeSecretManager) -> None:
    fake.add("proj", "two-newlines", "line\n\n")
    fake.add("proj", "crlf", "text\r\n")
    fake.add("proj", "inner", "a\nb")
    resolved = resolve_secret_references(
        {"A": "sm://proj/two-newlines", "B": "sm://proj/crlf", "C": "sm://proj/inner"},
        client=fake.client(),
    )
    assert resolved == {"A": "line\n", "B": "text\r", "C": "a\nb"}


def test_calls_carry_a_short_deadline_not_the_60s_default(fake: FakeSecretManager) -> None:
    resolve_secret_references({"K": "sm://proj/api-key"}, client=fake.client())
    (call,) = fake.calls
    assert call.deadline_seconds is not None
    # The wire format rounds the deadline up a little; what matters is that it is not 60 s.
    assert call.deadline_seconds <= secrets.ACCESS_TIMEOUT_SECONDS + 0.5


# --- plain values -------------------------------------------------------------------


def test_plain_values_pass_through_untouched_without_a_client() -> None:
    values = {
        "EMPTY": "",
        "URL": "postgresql://u:p@host/db",
        "TOPIC": "projects/proj/topics/jobs",
        "ALMOST": "sm:/proj/secret",
        "SPACED": " sm://proj/secret",
    }
    # client=None and no credentials: nothing may try to build a client.
    resolved = resolve_secret_references(values)
    assert resolved == values
    assert resolved is not values


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("sm://proj/secret", True),
        ("sm://onlyproject", True),
        ("projects/p/secrets/s/versions/1", True),
        ("projects/p/secrets/s", True),
        ("projects/p/locations/eu/secrets/s/versions/1", True),
        ("projects/p/topics/t", False),
        ("plain", False),
        ("", False),
        ("SM://proj/secret", False),
    ],
)
def test_is_secret_reference(value: str, expected: bool) -> None:
    assert is_secret_reference(value) is expected


# --- errors -------------------------------------------------------------------------


def test_missing_secret_names_setting_and_reference(fake: FakeSecretManager) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_secret_references({"OK": "sm://proj/api-key", "WEBHOOK_SECRET": "sm://proj/nope"}, client=fake.client())
    message = str(caught.value)
    assert "WEBHOOK_SECRET" in message and "sm://proj/nope" in message
    assert "secret not found" in message
    assert_leaks_nothing(caught.value)


def test_missing_version_is_not_found(fake: FakeSecretManager) -> None:
    with pytest.raises(ConfigError, match=r"API_KEYS.*sm://proj/api-key#9.*secret not found"):
        resolve_secret_references({"API_KEYS": "sm://proj/api-key#9"}, client=fake.client())


def test_permission_denied(fake: FakeSecretManager) -> None:
    fake.deny("proj", "db-password")
    with pytest.raises(ConfigError) as caught:
        resolve_secret_references({"DATABASE_URL": "sm://proj/db-password"}, client=fake.client())
    message = str(caught.value)
    assert "DATABASE_URL" in message and "sm://proj/db-password" in message
    assert "permission denied" in message
    assert_leaks_nothing(caught.value)


def test_unreachable_server_fails_fast() -> None:
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        resolve_secret_references({"DRAIN_TOKEN": "sm://proj/token"}, client=client_for(unreachable_address()))
    elapsed = time.monotonic() - started
    message = str(caught.value)
    assert "DRAIN_TOKEN" in message and "sm://proj/token" in message
    assert "Secret Manager unreachable" in message
    assert caught.value.__context__ is None
    # Bounded by our budget, not the library's 60 s of UNAVAILABLE retries.
    assert elapsed < secrets.ACCESS_TIMEOUT_SECONDS + 2


def test_silent_server_fails_at_the_deadline() -> None:
    # Accepts TCP connections but never speaks HTTP/2: only the deadline ends the wait.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(ConfigError, match=r"KEY: .*Secret Manager unreachable"):
            resolve_secret_references({"KEY": "sm://proj/token"}, client=client_for(address))
    assert time.monotonic() - started < secrets.ACCESS_TIMEOUT_SECONDS + 2


@pytest.mark.parametrize(
    "reference",
    [
        "sm://onlyproject",
        "sm://proj/",
        "sm:///secret",
        "sm://proj/secret#",
        "sm://proj/secret/extra",
        "sm://proj/secret#1#2",
        "sm://Proj/secret",
        "sm://proj/bad.secret",
        "sm://proj/secret#0",
        "projects/proj/secrets/secret",
        "projects/proj/secrets/secret/versions/",
        "projects/proj/locations/eu/secrets/secret/versions/1",
    ],
)
def test_malformed_reference_fails_before_any_call(fake: FakeSecretManager, reference: str) -> None:
    with pytest.raises(ConfigError) as caught:
        resolve_secret_references({"OK": "sm://proj/api-key", "BROKEN": reference}, client=fake.client())
    message = str(caught.value)
    assert "BROKEN" in message and repr(reference) in message
    assert "malformed secret reference" in message
    assert fake.calls == []


def test_non_utf8_payload(fake: FakeSecretManager) -> None:
    fake.add("proj", "binary", b"\xff\xfehunter2-v1")
    with pytest.raises(ConfigError) as caught:
        resolve_secret_references({"KEY": "sm://proj/binary"}, client=fake.client())
    message = str(caught.value)
    assert "KEY" in message and "sm://proj/binary" in message and "UTF-8" in message
    assert_leaks_nothing(caught.value)


def test_no_credentials_for_the_default_client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _without_google_credentials(monkeypatch, tmp_path)
    with pytest.raises(ConfigError, match="LOG_LEVEL: cannot create a Secret Manager client"):
        resolve_secret_references({"LOG_LEVEL": "sm://proj/level"})


# --- caching ------------------------------------------------------------------------


def test_each_distinct_reference_is_fetched_once(fake: FakeSecretManager) -> None:
    client = fake.client()
    values = {
        "A": "sm://proj/api-key",
        "B": "projects/proj/secrets/api-key/versions/latest",  # same resource as A
        "C": "sm://proj/api-key#1",
        "D": "sm://proj/db-password",
    }
    first = resolve_secret_references(values, client=client)
    second = resolve_secret_references(values, client=client)
    assert first == second
    assert sorted(fake.names_fetched()) == [
        "projects/proj/secrets/api-key/versions/1",
        "projects/proj/secrets/api-key/versions/latest",
        "projects/proj/secrets/db-password/versions/latest",
    ]


def test_cached_values_survive_until_the_process_ends(fake: FakeSecretManager) -> None:
    client = fake.client()
    assert resolve_secret_references({"K": "sm://proj/api-key"}, client=client)["K"] == "hunter2-v2"
    fake.add("proj", "api-key", "hunter2-v3")
    assert resolve_secret_references({"K": "sm://proj/api-key"}, client=client)["K"] == "hunter2-v2"
    assert len(fake.calls) == 1


def test_failures_are_not_cached(fake: FakeSecretManager) -> None:
    client = fake.client()
    with pytest.raises(ConfigError):
        resolve_secret_references({"K": "sm://proj/later"}, client=client)
    fake.add("proj", "later", "now-here")
    assert resolve_secret_references({"K": "sm://proj/later"}, client=client) == {"K": "now-here"}


# --- cold start cost ----------------------------------------------------------------

_LAZY_IMPORT_PROBE = textwrap.dedent(
    """
    import sys
    from shared.errors import ConfigError
    from shared.secrets import resolve_secret_references

    heavy = ("google.cloud.secretmanager", "google.cloud.secretmanager_v1", "grpc")
    values = {"A": "plain", "B": "projects/p/topics/t", "C": ""}
    assert resolve_secret_references(values) == values
    loaded = [name for name in heavy if name in sys.modules]
    assert not loaded, loaded

    # Control: a reference does import the client (and fails here: no credentials).
    try:
        resolve_secret_references({"D": "sm://p/s"})
    except ConfigError:
        pass
    assert "google.cloud.secretmanager" in sys.modules
    print("ok")
    """
)


def test_plain_values_never_import_the_client_library(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # A fresh interpreter: this test process has long since imported the library.
    _without_google_credentials(monkeypatch, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", _LAZY_IMPORT_PROBE],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def _without_google_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Make application default credentials unavailable, without probing the network."""
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path))  # no gcloud ADC file
    monkeypatch.setenv("NO_GCE_CHECK", "True")  # no metadata-server probe
