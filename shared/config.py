"""Settings: every knob of the package, read once per instance at cold start.

The environment variable names are a contract with ``deploy/`` and operators, and
each is documented in ``.env.example``. A value may be a Secret Manager reference
(``sm://PROJECT/SECRET[#VERSION]`` or ``projects/P/secrets/S/versions/V``); it is
resolved before validation, so the rest of the code only ever sees plain values.

``Settings.from_environ`` is the one way settings are built, at cold start from
``os.environ`` and in tests from a dict, so both take the same path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from shared.errors import ConfigError
from shared.secrets import resolve_secret_references
from shared.webhook_routes import WebhookRoutes

# pg-boss accepts bare names matching \w+ that do not start with a digit, and Postgres
# folds them to lower case. Accepting only lower case keeps the name we quote, the
# name pg-boss hashes (NOTIFY channel, advisory locks) and the catalog name identical.
SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,49}$")


def _split_csv(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    """Validated configuration; field aliases are the environment variable names."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore")

    # --- database -----------------------------------------------------------
    # Optional so that functions that never touch the database (health) can be
    # deployed without access to its secret; the first use without it is an error.
    database_url: SecretStr | None = Field(None, alias="DATABASE_URL")
    pgboss_schema: str = Field("pgboss", alias="PGBOSS_SCHEMA")
    db_connect_timeout_seconds: float = Field(5.0, alias="DB_CONNECT_TIMEOUT_SECONDS", gt=0, le=60)
    db_statement_timeout_ms: int = Field(30_000, alias="DB_STATEMENT_TIMEOUT_MS", ge=0)
    db_idle_check_seconds: float = Field(30.0, alias="DB_IDLE_CHECK_SECONDS", ge=0)
    ready_timeout_seconds: float = Field(2.0, alias="READY_TIMEOUT_SECONDS", gt=0, le=10)

    # --- credentials ----------------------------------------------------------
    api_keys: tuple[SecretStr, ...] = Field((), alias="API_KEYS")
    webhook_secret: SecretStr | None = Field(None, alias="WEBHOOK_SECRET")
    drain_token: SecretStr | None = Field(None, alias="DRAIN_TOKEN")

    # --- job intake (enqueue, webhook) -------------------------------------------
    enqueue_max_body_bytes: int = Field(
        1_048_576, alias="ENQUEUE_MAX_BODY_BYTES", ge=1024, le=32 * 1_048_576
    )
    enqueue_max_batch: int = Field(100, alias="ENQUEUE_MAX_BATCH", ge=1, le=1000)
    # Off: a job for an unknown queue is a 404. On: the queue is created with pg-boss's
    # defaults, as the Node app's first send would need it to be.
    create_missing_queues: bool = Field(False, alias="CREATE_MISSING_QUEUES")
    webhook_max_body_bytes: int = Field(
        1_048_576, alias="WEBHOOK_MAX_BODY_BYTES", ge=1024, le=32 * 1_048_576
    )
    webhook_routes: WebhookRoutes | None = Field(None, alias="WEBHOOK_ROUTES")
    webhook_routes_file: WebhookRoutes | None = Field(None, alias="WEBHOOK_ROUTES_FILE")
    webhook_require_signature: bool = Field(False, alias="WEBHOOK_REQUIRE_SIGNATURE")
    webhook_signature_tolerance_seconds: int = Field(
        300, alias="WEBHOOK_SIGNATURE_TOLERANCE_SECONDS", ge=1, le=3600
    )

    # --- logging ----------------------------------------------------------------
    # Names traces in log entries (projects/P/traces/T) so Cloud Logging links them.
    google_cloud_project: str | None = Field(None, alias="GOOGLE_CLOUD_PROJECT")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", alias="LOG_LEVEL"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment is read by from_environ (which resolves secret references
        # first), never behind its back.
        return (init_settings,)

    @classmethod
    def env_names(cls) -> tuple[str, ...]:
        return tuple(field.alias for field in cls.model_fields.values() if field.alias)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], *, secret_client: Any = None) -> Settings:
        """Build settings from environment-style strings, resolving secret references."""
        names = set(cls.env_names())
        raw = {key: value for key, value in environ.items() if key in names}
        resolved = resolve_secret_references(raw, client=secret_client)
        try:
            return cls(**resolved)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc)) from None

    @field_validator("api_keys", mode="before")
    @classmethod
    def _api_keys_from_csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("database_url", "webhook_secret", "drain_token", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("webhook_routes", mode="before")
    @classmethod
    def _routes_from_json(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value.strip():
                return None
            try:
                return json.loads(value)
            except ValueError as exc:
                raise ValueError(f"not valid JSON: {exc}") from None
        return value

    @field_validator("webhook_routes_file", mode="before")
    @classmethod
    def _routes_from_file(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not value.strip():
                return None
            try:
                text = Path(value).read_text(encoding="utf-8")
            except OSError as exc:
                raise ValueError(f"cannot read {value}: {exc.strerror or exc}") from None
            try:
                return json.loads(text)
            except ValueError as exc:
                raise ValueError(f"{value} is not valid JSON: {exc}") from None
        return value

    @model_validator(mode="after")
    def _one_routes_source(self) -> Settings:
        if self.webhook_routes is not None and self.webhook_routes_file is not None:
            raise ValueError("set WEBHOOK_ROUTES or WEBHOOK_ROUTES_FILE, not both")
        return self

    @property
    def webhook_routes_table(self) -> WebhookRoutes | None:
        """The webhook's routes table, from whichever of the two settings holds it."""
        return self.webhook_routes or self.webhook_routes_file

    @field_validator("pgboss_schema")
    @classmethod
    def _schema_is_a_plain_identifier(cls, value: str) -> str:
        if not SCHEMA_NAME.match(value):
            raise ValueError(
                "must be a plain lower-case identifier: a-z, 0-9 and _, not starting with a "
                "digit, at most 50 characters"
            )
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url_is_postgres(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("postgres://", "postgresql://")):
            raise ValueError("must be a postgresql:// URL")
        return value


def require(value: Any, name: str, needed_by: str) -> Any:
    """``value``, or a ConfigError saying which setting ``needed_by`` is missing."""
    if value is None or value == ():
        raise ConfigError(f"{name} is not set; {needed_by} needs it")
    return value


def describe_validation_error(exc: ValidationError) -> str:
    """One line per bad setting, naming the variable and what is expected, never its value."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        name = ".".join(str(part) for part in error["loc"]) or "settings"
        problems.append(f"{name}: {error['msg']}")
    return "invalid settings: " + "; ".join(problems)
