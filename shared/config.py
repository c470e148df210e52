"""Settings: every knob of the package, read once per instance at cold start.

The environment variable names are a contract with ``deploy/`` and operators, and
each is documented in ``.env.example``. A value may be a Secret Manager reference
(``sm://PROJECT/SECRET[#VERSION]`` or ``projects/P/secrets/S/versions/V``); it is
resolved before validation, so the rest of the code only ever sees plain values.

``Settings.from_environ`` is the one way settings are built, at cold start from
``os.environ`` and in tests from a dict, so both take the same path.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from shared.errors import ConfigError, describe, field_errors
from shared.secrets import resolve_secret_references

# pg-boss accepts bare names matching \w+ that do not start with a digit, and Postgres
# folds them to lower case. Accepting only lower case keeps the name we quote, the
# name pg-boss hashes (NOTIFY channel, advisory locks) and the catalog name identical.
SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,49}$")

# pg-boss's background passes, in the order one supervision round runs them.
SUPERVISION_PASSES = ("monitor", "maintain", "flows", "cron", "send_it", "bam")


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
    # Named prepared statements save two round trips per statement but need a session
    # of our own: auto turns them off behind Supabase's transaction pooler (port 6543).
    db_prepared_statements: Literal["auto", "on", "off"] = Field("auto", alias="DB_PREPARED_STATEMENTS")
    ready_timeout_seconds: float = Field(2.0, alias="READY_TIMEOUT_SECONDS", gt=0, le=10)

    # --- credentials ----------------------------------------------------------
    api_keys: tuple[SecretStr, ...] = Field((), alias="API_KEYS")
    # Comma-separated like API_KEYS, so the secret rotates without refusing deliveries.
    webhook_secrets: tuple[SecretStr, ...] = Field((), alias="WEBHOOK_SECRET")
    drain_token: SecretStr | None = Field(None, alias="DRAIN_TOKEN")

    # --- job intake (enqueue, webhook) -------------------------------------------
    enqueue_max_body_bytes: int = Field(1_048_576, alias="ENQUEUE_MAX_BODY_BYTES", ge=1024, le=32 * 1_048_576)
    enqueue_max_batch: int = Field(100, alias="ENQUEUE_MAX_BATCH", ge=1, le=1000)
    # Off: a job for an unknown queue is a 404. On: the queue is created with pg-boss's
    # defaults, as the Node app's first send would need it to be.
    create_missing_queues: bool = Field(False, alias="CREATE_MISSING_QUEUES")
    webhook_max_body_bytes: int = Field(1_048_576, alias="WEBHOOK_MAX_BODY_BYTES", ge=1024, le=32 * 1_048_576)
    # The routes table, as JSON or as the path of a JSON file; parsed and validated at
    # cold start by shared.webhook_routes, which knows its shape (settings do not).
    webhook_routes: str | None = Field(None, alias="WEBHOOK_ROUTES")
    webhook_routes_file: str | None = Field(None, alias="WEBHOOK_ROUTES_FILE")
    webhook_require_signature: bool = Field(False, alias="WEBHOOK_REQUIRE_SIGNATURE")
    webhook_signature_tolerance_seconds: int = Field(300, alias="WEBHOOK_SIGNATURE_TOLERANCE_SECONDS", ge=1, le=3600)

    # --- Supabase outbox (deploy/supabase/webhook_triggers.sql) ---------------------------
    # An event the webhook has not turned into jobs this long after its change becomes
    # them at the next scheduled call; long enough for pg_net's own delivery to land.
    outbox_grace_seconds: float = Field(60, alias="OUTBOX_GRACE_SECONDS", ge=0, le=86_400)
    outbox_batch_size: int = Field(500, alias="OUTBOX_BATCH_SIZE", ge=1, le=5000)
    # 0 turns reconciling off.
    outbox_max_batches: int = Field(10, alias="OUTBOX_MAX_BATCHES", ge=0, le=1000)

    # --- drain --------------------------------------------------------------------
    # drain is deployed with DRAIN_TIMEOUT_SECONDS; a call works for its budget and
    # keeps DRAIN_MARGIN_SECONDS after that to settle what is left and answer.
    drain_timeout_seconds: float = Field(60, alias="DRAIN_TIMEOUT_SECONDS", gt=0, le=3600)
    drain_margin_seconds: float = Field(5, alias="DRAIN_MARGIN_SECONDS", gt=0)
    drain_budget_seconds: float | None = Field(None, alias="DRAIN_BUDGET_SECONDS", ge=0)
    drain_stop_fetching_seconds: float = Field(2, alias="DRAIN_STOP_FETCHING_SECONDS", ge=0)
    drain_max_jobs: int = Field(1000, alias="DRAIN_MAX_JOBS", ge=1, le=100_000)
    drain_batch_size: int = Field(10, alias="DRAIN_BATCH_SIZE", ge=1, le=1000)
    drain_concurrency: int = Field(10, alias="DRAIN_CONCURRENCY", ge=1, le=1000)
    # auto: LISTEN unless the URL points at Supabase's transaction pooler (port 6543).
    drain_listen: Literal["auto", "on", "off"] = Field("auto", alias="DRAIN_LISTEN")
    drain_listen_database_url: SecretStr | None = Field(None, alias="DRAIN_LISTEN_DATABASE_URL")
    drain_poll_seconds: float = Field(0.2, alias="DRAIN_POLL_SECONDS", ge=0.01, le=10)
    drain_listen_poll_seconds: float = Field(1.0, alias="DRAIN_LISTEN_POLL_SECONDS", ge=0.05, le=60)
    drain_oidc_audiences: tuple[str, ...] = Field((), alias="DRAIN_OIDC_AUDIENCES")
    drain_oidc_service_accounts: tuple[str, ...] = Field((), alias="DRAIN_OIDC_SERVICE_ACCOUNTS")
    drain_oidc_certs_url: str = Field("https://www.googleapis.com/oauth2/v1/certs", alias="DRAIN_OIDC_CERTS_URL")
    drain_oidc_trust_cloud_run: bool = Field(False, alias="DRAIN_OIDC_TRUST_CLOUD_RUN")

    # --- supervise ----------------------------------------------------------------
    # pg-boss's background passes, run by the supervise function; each interval is the
    # claim's own (one run per interval across every Node and Python supervisor).
    supervise_passes: tuple[str, ...] = Field(SUPERVISION_PASSES, alias="SUPERVISE_PASSES")
    supervise_budget_seconds: float = Field(50, alias="SUPERVISE_BUDGET_SECONDS", ge=0, le=3600)
    supervise_round_seconds: float = Field(5, alias="SUPERVISE_ROUND_SECONDS", ge=1, le=60)
    supervise_monitor_interval_seconds: float = Field(60, alias="SUPERVISE_MONITOR_INTERVAL_SECONDS", ge=1, le=86_400)
    supervise_maintain_interval_seconds: float = Field(
        86_400, alias="SUPERVISE_MAINTAIN_INTERVAL_SECONDS", ge=1, le=86_400
    )
    supervise_flow_interval_seconds: float = Field(5, alias="SUPERVISE_FLOW_INTERVAL_SECONDS", ge=1, le=86_400)
    supervise_cron_interval_seconds: float = Field(30, alias="SUPERVISE_CRON_INTERVAL_SECONDS", ge=1, le=45)
    supervise_bam_interval_seconds: float = Field(60, alias="SUPERVISE_BAM_INTERVAL_SECONDS", ge=1, le=86_400)
    supervise_deletion_batch: int = Field(10_000, alias="SUPERVISE_DELETION_BATCH", ge=100, le=100_000)
    # pg-boss's persistQueueStats and queueStatRetentionDays (off and 7 days by default).
    supervise_queue_stats: bool = Field(False, alias="SUPERVISE_QUEUE_STATS")
    supervise_queue_stat_retention_days: int = Field(7, alias="SUPERVISE_QUEUE_STAT_RETENTION_DAYS", ge=1, le=365)
    # pg-boss 10.x (schemas 21-24) only: its maintenanceIntervalSeconds,
    # archiveCompletedAfterSeconds, archiveFailedAfterSeconds (the completed interval when
    # unset) and deleteAfterSeconds, at 10.x's defaults; set them as the Node app sets them.
    supervise_v10_maintenance_interval_seconds: float = Field(
        120, alias="SUPERVISE_V10_MAINTENANCE_INTERVAL_SECONDS", ge=1, lt=86_400
    )
    supervise_v10_archive_completed_after_seconds: float = Field(
        43_200, alias="SUPERVISE_V10_ARCHIVE_COMPLETED_AFTER_SECONDS", ge=1
    )
    supervise_v10_archive_failed_after_seconds: float | None = Field(
        None, alias="SUPERVISE_V10_ARCHIVE_FAILED_AFTER_SECONDS", ge=1
    )
    supervise_v10_delete_after_seconds: float = Field(604_800, alias="SUPERVISE_V10_DELETE_AFTER_SECONDS", ge=1)

    # --- logging ----------------------------------------------------------------
    # Names traces in log entries (projects/P/traces/T) so Cloud Logging links them.
    google_cloud_project: str | None = Field(None, alias="GOOGLE_CLOUD_PROJECT")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field("INFO", alias="LOG_LEVEL")

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
            return cls.model_validate(resolved)
        except ValidationError as exc:
            raise ConfigError(describe_validation_error(exc)) from None

    @field_validator("api_keys", "webhook_secrets", mode="before")
    @classmethod
    def _secrets_from_csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator(
        "database_url",
        "drain_token",
        "webhook_routes",
        "webhook_routes_file",
        "drain_budget_seconds",
        "drain_listen_database_url",
        "supervise_v10_archive_failed_after_seconds",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _one_routes_source(self) -> Settings:
        if self.webhook_routes is not None and self.webhook_routes_file is not None:
            raise ValueError("set WEBHOOK_ROUTES or WEBHOOK_ROUTES_FILE, not both")
        return self

    @field_validator("pgboss_schema")
    @classmethod
    def _schema_is_a_plain_identifier(cls, value: str) -> str:
        if not SCHEMA_NAME.match(value):
            raise ValueError(
                "must be a plain lower-case identifier: a-z, 0-9 and _, not starting with a "
                "digit, at most 50 characters"
            )
        return value

    @field_validator("database_url", "drain_listen_database_url")
    @classmethod
    def _database_url_is_postgres(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().startswith(("postgres://", "postgresql://")):
            raise ValueError("must be a postgresql:// URL")
        return value

    @field_validator("supervise_passes", mode="before")
    @classmethod
    def _passes_from_csv(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() == "none":
            return ()
        return _split_csv(value)

    @field_validator("supervise_passes")
    @classmethod
    def _known_passes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [name for name in value if name not in SUPERVISION_PASSES]
        if unknown:
            raise ValueError(f"unknown pass {unknown[0]!r}; known: {', '.join(SUPERVISION_PASSES)} (or none)")
        return value

    @field_validator("drain_oidc_audiences", mode="before")
    @classmethod
    def _drain_audiences_from_csv(cls, value: Any) -> Any:
        return _split_csv(value)

    @field_validator("drain_oidc_service_accounts", mode="before")
    @classmethod
    def _drain_accounts_from_csv(cls, value: Any) -> Any:
        value = _split_csv(value)
        return tuple(email.lower() for email in value) if isinstance(value, list | tuple) else value

    @field_validator("drain_oidc_certs_url")
    @classmethod
    def _drain_certs_url_is_https(cls, value: str) -> str:
        # Plain http only to this machine, where tests serve their own keys.
        if not value.startswith(("https://", "http://127.0.0.1:", "http://localhost:")):
            raise ValueError("must be an https:// URL")
        return value

    @model_validator(mode="after")
    def _drain_fits_its_timeout(self) -> Settings:
        if self.drain_margin_seconds >= self.drain_timeout_seconds:
            raise ValueError("DRAIN_MARGIN_SECONDS must be less than DRAIN_TIMEOUT_SECONDS")
        if self.drain_budget_seconds is not None and self.drain_budget_seconds > self.drain_ceiling_seconds:
            raise ValueError(
                "DRAIN_BUDGET_SECONDS must leave DRAIN_MARGIN_SECONDS of DRAIN_TIMEOUT_SECONDS "
                f"(at most {self.drain_ceiling_seconds:g})"
            )
        if bool(self.drain_oidc_audiences) != bool(self.drain_oidc_service_accounts):
            raise ValueError("set DRAIN_OIDC_AUDIENCES and DRAIN_OIDC_SERVICE_ACCOUNTS together")
        return self

    @property
    def drain_ceiling_seconds(self) -> float:
        """The longest a drain call may work: its timeout less the margin to answer."""
        return self.drain_timeout_seconds - self.drain_margin_seconds

    @property
    def drain_default_budget_seconds(self) -> float:
        return self.drain_ceiling_seconds if self.drain_budget_seconds is None else self.drain_budget_seconds


def require(value: Any, name: str, needed_by: str) -> Any:
    """``value``, or a ConfigError saying which setting ``needed_by`` is missing."""
    if value is None or value == ():
        raise ConfigError(f"{name} is not set; {needed_by} needs it")
    return value


def describe_validation_error(exc: ValidationError) -> str:
    """One line per bad setting, naming the variable and what is expected, never its value."""
    return "invalid settings: " + describe(field_errors(exc), whole="settings")
