"""Settings: one validated object, with clear startup errors and secret references."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared import secrets as secret_refs
from shared.config import Settings
from shared.errors import ConfigError
from tests.conftest import MAIN, ROOT
from tests.fakes.secret_manager import FakeSecretManager

URL = "postgresql://app@127.0.0.1:5432/app"


@pytest.fixture(autouse=True)
def _fresh_secret_cache() -> None:
    secret_refs._cache.clear()


def test_defaults_and_parsing() -> None:
    settings = Settings.from_environ({"DATABASE_URL": URL, "API_KEYS": " old-key , new-key ,,", "UNRELATED": "x"})
    assert settings.pgboss_schema == "pgboss"
    assert settings.log_level == "INFO"
    assert [key.get_secret_value() for key in settings.api_keys] == ["old-key", "new-key"]
    assert settings.webhook_secrets == ()
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == URL


def test_blank_optional_secret_is_unset() -> None:
    assert Settings.from_environ({"WEBHOOK_SECRET": "  ", "DRAIN_TOKEN": ""}).webhook_secrets == ()
    assert Settings.from_environ({"DRAIN_TOKEN": " "}).drain_token is None


def test_webhook_secret_rotates_like_api_keys() -> None:
    settings = Settings.from_environ({"WEBHOOK_SECRET": "old-secret,new-secret"})
    assert [secret.get_secret_value() for secret in settings.webhook_secrets] == ["old-secret", "new-secret"]


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("PGBOSS_SCHEMA", "Bad-Name", "PGBOSS_SCHEMA: Value error, must be a plain lower-case identifier"),
        ("PGBOSS_SCHEMA", "1abc", "PGBOSS_SCHEMA"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL: Input should be"),
        ("DB_CONNECT_TIMEOUT_SECONDS", "-1", "DB_CONNECT_TIMEOUT_SECONDS: Input should be greater than 0"),
        ("DB_STATEMENT_TIMEOUT_MS", "soon", "DB_STATEMENT_TIMEOUT_MS: Input should be a valid integer"),
    ],
)
def test_invalid_setting_is_named(name: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ({"DATABASE_URL": URL, name: value})
    assert expected in str(caught.value)


def test_invalid_url_error_does_not_echo_the_value() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_environ({"DATABASE_URL": "mysql://user:hunter2@db/app"})
    assert "DATABASE_URL: Value error, must be a postgresql:// URL" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_secret_references_resolve_through_the_real_client() -> None:
    with FakeSecretManager() as fake:
        fake.add("proj", "db-url", URL + "\n")
        fake.add("proj", "keys", "k1,k2", version=3)
        settings = Settings.from_environ(
            {"DATABASE_URL": "sm://proj/db-url", "API_KEYS": "sm://proj/keys#3"},
            secret_client=fake.client(),
        )
    assert settings.database_url is not None
    assert settings.database_url.get_secret_value() == URL
    assert [key.get_secret_value() for key in settings.api_keys] == ["k1", "k2"]


def test_missing_secret_fails_naming_setting_and_reference() -> None:
    with FakeSecretManager() as fake:
        fake.add("proj", "present", "the-value")
        with pytest.raises(ConfigError) as caught:
            Settings.from_environ(
                {"DATABASE_URL": URL, "WEBHOOK_SECRET": "sm://proj/absent"}, secret_client=fake.client()
            )
    message = str(caught.value)
    assert "WEBHOOK_SECRET" in message and "sm://proj/absent" in message and "not found" in message


def test_permission_denied_is_reported() -> None:
    with FakeSecretManager() as fake:
        fake.add("proj", "locked", "the-value")
        fake.deny("proj", "locked")
        with pytest.raises(ConfigError) as caught:
            Settings.from_environ({"API_KEYS": "sm://proj/locked"}, secret_client=fake.client())
    assert "permission denied" in str(caught.value)
    assert "the-value" not in str(caught.value)


def _start_function(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", f"import functions_framework as f; f.create_app('health', {MAIN!r})"],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_bad_setting_stops_the_function_at_startup() -> None:
    result = _start_function({"DATABASE_URL": URL, "PGBOSS_SCHEMA": "No Spaces"})
    assert result.returncode != 0
    assert "invalid settings: PGBOSS_SCHEMA" in result.stderr


def test_a_webhook_without_routes_refuses_to_start_with_one_line() -> None:
    # As Cloud Run starts it: functions-framework's own command, the target in FUNCTION_TARGET.
    result = subprocess.run(
        [sys.executable, "-m", "functions_framework", "--source", MAIN, "--port", "1"],
        cwd=ROOT,
        env={"PATH": os.environ["PATH"], "DATABASE_URL": URL, "WEBHOOK_SECRET": "s", "FUNCTION_TARGET": "webhook"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "manda-processing cannot start: WEBHOOK_ROUTES or WEBHOOK_ROUTES_FILE is not set; webhook needs it"
    ]


def test_a_good_environment_starts() -> None:
    result = _start_function({"DATABASE_URL": URL})
    assert result.returncode == 0, result.stderr


def test_every_setting_is_documented() -> None:
    example = (ROOT / ".env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    for name in Settings.env_names():
        assert f"\n{name}=" in example, f"{name} is missing from .env.example"
        assert f"| `{name}` |" in readme, f"{name} is missing from the README's settings table"
