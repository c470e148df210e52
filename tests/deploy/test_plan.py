"""What deploy.sh would do in each environment, read from its dry run.

Every check is on the commands themselves, so it holds for the build too: cloudbuild.yaml
deploys by running the same script (see test_cloudbuild.py).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from shared.config import Settings
from shared.secrets import is_secret_reference
from shared.webhook_routes import routes_table
from tests.conftest import require_tool
from tests.deploy.plan import (
    ENVIRONMENTS,
    ROOT,
    Command,
    Plan,
    gcloud_tree,
    read_env_file,
    registered_functions,
    run_deploy,
    settings_of,
)

# What each function's code needs from Secret Manager (the table). drain also
# needs a way to authenticate its caller: OIDC settings, or DRAIN_TOKEN.
NEEDED_SECRETS = {
    "health": set(),
    "ready": {"DATABASE_URL"},
    "enqueue": {"DATABASE_URL", "API_KEYS"},
    # jobs reads what enqueue wrote, for the same callers.
    "jobs": {"DATABASE_URL", "API_KEYS"},
    # schedules takes enqueue's callers.
    "schedules": {"DATABASE_URL", "API_KEYS"},
    "webhook": {"DATABASE_URL", "WEBHOOK_SECRET"},
    "drain": {"DATABASE_URL"},
    "supervise": {"DATABASE_URL"},
}
# Private functions, each called every minute by its own Scheduler job.
SCHEDULED = ("drain", "supervise")
CREDENTIAL_SETTINGS = {"DATABASE_URL", "API_KEYS", "WEBHOOK_SECRET", "DRAIN_TOKEN", "DRAIN_LISTEN_DATABASE_URL"}
# Variables that are not package settings but are read by the runtime around it.
RUNTIME_VARIABLES = {"THREADS"}


@pytest.fixture(scope="module", params=ENVIRONMENTS)
def plan(request: pytest.FixtureRequest) -> Plan:
    return Plan.of(request.param)


def test_there_are_three_environments() -> None:
    assert set(ENVIRONMENTS) == {"dev", "staging", "prod"}
    projects = {read_env_file(env)["PROJECT_ID"] for env in ENVIRONMENTS}
    assert len(projects) == 3, "each environment is its own project"


def test_every_line_is_one_command(plan: Plan) -> None:
    assert plan.commands
    for command in plan.commands:
        assert command.argv[0] in {"gcloud", "deploy/pgboss/pgboss", "psql"} or "=" in command.argv[0], command.line


def test_deployed_functions_are_exactly_mains_http_functions(plan: Plan) -> None:
    registered = registered_functions()
    deployed = set(plan.deploys)
    assert deployed <= set(registered), f"deployed but not in main.py: {deployed - set(registered)}"
    assert set(registered) <= deployed, f"in main.py but never deployed: {set(registered) - deployed}"
    for name in deployed:
        assert registered[name] == "http", f"{name} is a {registered[name]} function"


def test_each_function_is_a_gen2_http_function_of_the_repository_root(plan: Plan) -> None:
    settings = settings_of(plan.env)
    for name, command in plan.deploys.items():
        flags = command.flags
        assert "--gen2" in flags and "--trigger-http" in flags
        assert flags["--entry-point"] == name
        assert flags["--source"] == "."
        assert flags["--runtime"] == settings["RUNTIME"] == "python312"
        assert flags["--project"] == settings["PROJECT_ID"]
        assert flags["--region"] == settings["REGION"]
        assert "--serve-all-traffic-latest-revision" in flags


def test_runtime_and_region_agree_everywhere(plan: Plan) -> None:
    settings = settings_of(plan.env)
    for command in plan.gcloud():
        for name in ("--region", "--location"):
            if name in command.flags:
                assert command.flags[name] == settings["REGION"], command.line
        if "--project" in command.flags:
            assert command.flags["--project"] == settings["PROJECT_ID"], command.line
    runtimes = {c.flag("--runtime") for c in plan.deploys.values()}
    assert runtimes == {"python312"}
    for url in re.findall(r"https://[a-z0-9.-]+\.run\.app", plan.output):
        assert url.endswith(f".{settings['REGION']}.run.app")


def test_sizes_come_from_the_env_file(plan: Plan) -> None:
    settings = settings_of(plan.env)
    for name, command in plan.deploys.items():
        for key, flag in [
            ("MEMORY", "--memory"),
            ("CPU", "--cpu"),
            ("TIMEOUT", "--timeout"),
            ("MIN_INSTANCES", "--min-instances"),
            ("MAX_INSTANCES", "--max-instances"),
            ("CONCURRENCY", "--concurrency"),
        ]:
            expected = settings.get(f"{name.upper()}_{key}") or settings[key]
            assert command.flag(flag) == expected, f"{name} {flag}"


def test_concurrency_matches_threads_and_cpu(plan: Plan) -> None:
    for name, command in plan.deploys.items():
        concurrency = int(command.flag("--concurrency") or 0)
        assert concurrency >= 1
        assert plan.env_vars(name)["THREADS"] == str(concurrency), "gunicorn threads == requests Cloud Run sends"
        if concurrency > 1:
            assert float(command.flag("--cpu") or 0) >= 1, "Cloud Run needs a whole CPU for concurrency > 1"


def test_every_needed_secret_is_bound_and_no_other(plan: Plan) -> None:
    settings = settings_of(plan.env)
    for name in plan.deploys:
        bound = plan.bound_secrets(name)
        assert set(bound) == NEEDED_SECRETS[name], name
        for setting, reference in bound.items():
            secret, _, version = reference.rpartition(":")
            assert secret == settings[f"SECRET_{setting}"]
            assert version == settings["SECRET_VERSION"]
        if not bound:
            assert "--clear-secrets" in plan.deploys[name].flags, f"{name} keeps no secret from before"
        assert not set(plan.env_vars(name)) & CREDENTIAL_SETTINGS, f"{name} gets a credential as plain text"


def test_secret_access_is_granted_per_function_and_secret(plan: Plan) -> None:
    accounts = {name: command.flag("--run-service-account") for name, command in plan.deploys.items()}
    assert len(set(accounts.values())) == len(accounts), "one runtime account per function"
    granted: set[tuple[str, str]] = set()
    for binding in plan.gcloud("secrets", "add-iam-policy-binding"):
        assert binding.flag("--role") == "roles/secretmanager.secretAccessor"
        granted.add((binding.words[3], binding.flag("--member") or ""))
    needed = {
        (reference.rpartition(":")[0], f"serviceAccount:{accounts[name]}")
        for name in plan.deploys
        for reference in plan.bound_secrets(name).values()
    }
    assert granted == needed
    for account in [*accounts.values()]:
        assert account and not account.endswith("-compute@developer.gserviceaccount.com")


def test_service_accounts_are_created_with_valid_ids(plan: Plan) -> None:
    created = [c.words[4] for c in plan.gcloud("iam", "service-accounts", "create")]
    # one per function, the Scheduler's, the image builder's and the deployer's
    assert len(created) == len(plan.deploys) + 3
    for account_id in created:
        assert re.fullmatch(r"[a-z][a-z0-9-]{4,28}[a-z0-9]", account_id), account_id
    for account in (c.flag("--run-service-account") for c in plan.deploys.values()):
        assert account and account.split("@")[0] in created


def test_only_the_scheduled_functions_are_private(plan: Plan) -> None:
    """Public the way Cloud Run supports under Domain Restricted Sharing: no allUsers binding,
    the invoker IAM check switched off on the service right after each deploy."""
    for name, command in plan.deploys.items():
        assert "--no-allow-unauthenticated" in command.flags, name
        assert "--allow-unauthenticated" not in command.flags, name
        following = plan.commands[plan.commands.index(command) + 1]
        assert following.is_("gcloud", "run", "services", "update", name), following.line
        assert following.flag("--region") == command.flag("--region")
        if name in SCHEDULED:
            assert "--invoker-iam-check" in following.flags and "--no-invoker-iam-check" not in following.flags
        else:
            assert "--no-invoker-iam-check" in following.flags and "--invoker-iam-check" not in following.flags
    assert "allUsers" not in plan.output and "allAuthenticatedUsers" not in plan.output
    updates = plan.gcloud("run", "services", "update")
    assert len(updates) == len(plan.deploys), "nothing else changes the services behind deploy's back"


# Which API each gcloud command group calls (Google's service names).
API_OF = {
    "services": "serviceusage.googleapis.com",
    "projects": "cloudresourcemanager.googleapis.com",
    "iam": "iam.googleapis.com",
    "secrets": "secretmanager.googleapis.com",
    "functions": "cloudfunctions.googleapis.com",
    "run": "run.googleapis.com",
    "scheduler": "cloudscheduler.googleapis.com",
}
# What a function deploy uses besides: Cloud Build builds it as a user-named account,
# whose logs go to Cloud Logging only, from source in Cloud Storage, into Artifact Registry.
BUILD_APIS = {
    "cloudbuild.googleapis.com",
    "logging.googleapis.com",
    "storage.googleapis.com",
    "artifactregistry.googleapis.com",
}


def test_every_api_is_enabled_before_its_first_use(plan: Plan) -> None:
    first = plan.gcloud()[0]
    assert first.is_("gcloud", "services", "enable"), "nothing is called before the APIs are on"
    enabled = set(first.words[3:])
    used = {API_OF[command.words[1]] for command in plan.gcloud()}
    assert used | BUILD_APIS <= enabled, sorted(used | BUILD_APIS - enabled)
    assert len(plan.gcloud("services", "enable")) == 1


BUILDER_ROLES = {"roles/cloudbuild.builds.builder", "roles/run.builder"}


def test_functions_are_built_by_a_dedicated_account_with_a_builder_role(plan: Plan) -> None:
    """New projects give function builds no account with build rights unless one is named."""
    settings = settings_of(plan.env)
    created = {c.words[4] for c in plan.gcloud("iam", "service-accounts", "create")}
    accounts = {c.flag("--build-service-account") for c in plan.deploys.values()}
    (account,) = accounts
    assert account is not None
    prefix = f"projects/{settings['PROJECT_ID']}/serviceAccounts/"
    assert account.startswith(prefix)
    email = account.removeprefix(prefix)
    assert email.split("@")[0] in created and not email.endswith("developer.gserviceaccount.com")
    assert email not in {c.flag("--run-service-account") for c in plan.deploys.values()}, "builds are not run as"
    roles = {
        b.flag("--role")
        for b in plan.gcloud("projects", "add-iam-policy-binding")
        if b.flag("--member") == f"serviceAccount:{email}"
    }
    assert roles and roles <= BUILDER_ROLES, roles
    first_deploy = min(plan.commands.index(c) for c in plan.deploys.values())
    for binding in plan.gcloud("projects", "add-iam-policy-binding"):
        assert plan.commands.index(binding) < first_deploy
        assert binding.words[3] == settings["PROJECT_ID"] and binding.flag("--condition") == "None"


def test_the_deployer_account_holds_what_the_script_uses(plan: Plan) -> None:
    """cloudbuild.yaml reruns this script as processing-deployer@: it may do each step."""
    settings = settings_of(plan.env)
    deployer = f"processing-deployer@{settings['PROJECT_ID']}.iam.gserviceaccount.com"
    roles = {
        b.flag("--role")
        for b in plan.gcloud("projects", "add-iam-policy-binding")
        if b.flag("--member") == f"serviceAccount:{deployer}"
    }
    needed_by_group = {
        "services": "roles/serviceusage.serviceUsageAdmin",
        "iam": "roles/iam.serviceAccountAdmin",
        "projects": "roles/resourcemanager.projectIamAdmin",
        "secrets": "roles/secretmanager.admin",
        "functions": "roles/cloudfunctions.admin",
        "run": "roles/run.admin",
        "scheduler": "roles/cloudscheduler.admin",
    }
    for command in plan.gcloud():
        assert needed_by_group[command.words[1]] in roles, command.line
    # It deploys as the runtime and build accounts, and runs as a user-named build account.
    assert {"roles/iam.serviceAccountUser", "roles/cloudbuild.builds.builder"} <= roles
    assert not roles & {"roles/owner", "roles/editor"}


def test_uses_of_new_accounts_wait_for_iam(plan: Plan) -> None:
    """Each created account is described before anything grants to or deploys with it (the
    retries themselves are exercised in test_deploy_run.py)."""
    for create in plan.gcloud("iam", "service-accounts", "create"):
        following = plan.commands[plan.commands.index(create) + 1]
        assert following.is_("gcloud", "iam", "service-accounts", "describe")
        assert following.words[4].split("@")[0] == create.words[4]


def _job(plan: Plan, function: str = "drain") -> Command:
    """The Scheduler job that calls ``function``."""
    settings = settings_of(plan.env)
    url = f"https://{function}-{settings['PROJECT_NUMBER']}.{settings['REGION']}.run.app"
    jobs = plan.gcloud("scheduler", "jobs", "create", "http")
    assert len(jobs) == len(SCHEDULED)
    (job,) = [job for job in jobs if job.flag("--uri") == url]
    return job


def _scheduler_account(plan: Plan) -> str:
    return _job(plan).flag("--oidc-service-account-email") or ""


def test_only_the_schedulers_account_may_invoke_the_scheduled_functions(plan: Plan) -> None:
    bindings = plan.gcloud("run", "services", "add-iam-policy-binding")
    bindings += plan.gcloud("functions", "add-invoker-policy-binding")
    assert [(b.words[-1], b.flag("--member"), b.flag("--role")) for b in bindings] == [
        (name, f"serviceAccount:{_scheduler_account(plan)}", "roles/run.invoker") for name in SCHEDULED
    ]
    runtime_accounts = {c.flag("--run-service-account") for c in plan.deploys.values()}
    assert _scheduler_account(plan) not in runtime_accounts


@pytest.mark.parametrize("function", SCHEDULED)
def test_scheduler_calls_each_scheduled_function_every_minute_with_oidc(plan: Plan, function: str) -> None:
    settings = settings_of(plan.env)
    url = f"https://{function}-{settings['PROJECT_NUMBER']}.{settings['REGION']}.run.app"
    job = _job(plan, function)
    flags = job.flags
    assert flags["--schedule"] == "* * * * *"
    assert flags["--uri"] == url
    assert flags["--oidc-token-audience"] == url
    assert flags["--http-method"] == "POST"
    assert flags["--location"] == settings["REGION"]
    # The URL is checked against what Cloud Run reports before the job points at it.
    describe = plan.gcloud("run", "services", "describe", function)
    assert describe and plan.commands.index(describe[0]) < plan.commands.index(job)
    assert plan.commands.index(plan.deploys[function]) < plan.commands.index(job)
    env = plan.env_vars(function)
    assert env["DRAIN_OIDC_AUDIENCES"] == url
    assert env["DRAIN_OIDC_SERVICE_ACCOUNTS"] == job.flag("--oidc-service-account-email")


def test_supervise_ends_before_its_timeout_and_the_next_call(plan: Plan) -> None:
    timeout = _seconds(plan.deploys["supervise"].flag("--timeout"))
    budget = float(plan.env_vars("supervise")["SUPERVISE_BUDGET_SECONDS"])
    assert 0 < budget < min(timeout, 60)
    assert _seconds(_job(plan, "supervise").flag("--attempt-deadline")) > timeout


def _seconds(duration: str | None) -> int:
    assert duration and re.fullmatch(r"\d+s", duration), duration
    return int(duration[:-1])


def test_drain_budget_fits_its_timeout_and_the_schedulers_deadline(plan: Plan) -> None:
    job = _job(plan)
    timeout = _seconds(plan.deploys["drain"].flag("--timeout"))
    drain_env = plan.env_vars("drain")
    budget = float(drain_env["DRAIN_BUDGET_SECONDS"])
    margin = float(drain_env.get("DRAIN_MARGIN_SECONDS", Settings.model_fields["drain_margin_seconds"].default))
    assert int(drain_env["DRAIN_TIMEOUT_SECONDS"]) == timeout
    assert budget > 0 and budget + margin <= timeout
    assert _seconds(job.flag("--attempt-deadline")) > timeout, "the Scheduler must outwait a whole drain"
    attempts = int(job.flag("--max-retry-attempts") or 0)
    assert 1 <= attempts <= 5
    assert _seconds(job.flag("--min-backoff")) <= _seconds(job.flag("--max-backoff")) < 60


def test_consecutive_drain_calls_overlap_into_continuous_coverage(plan: Plan) -> None:
    job = _job(plan)
    assert job.flag("--schedule") == "* * * * *"
    budget = float(plan.env_vars("drain")["DRAIN_BUDGET_SECONDS"])
    # A call watches for new jobs until its budget ends; if that came before the next
    # minute's call, jobs sent in between would wait for it.
    assert budget > 60, "drain's budget must outlast the one-minute schedule"
    overlapping = math.ceil(budget / 60)  # calls running at once
    assert int(plan.deploys["drain"].flag("--max-instances")) >= overlapping, "overlapping calls need an instance each"


def test_drain_accepts_exactly_the_schedulers_oidc_tokens(plan: Plan) -> None:
    job = _job(plan)
    drain_env = plan.env_vars("drain")
    assert drain_env["DRAIN_OIDC_AUDIENCES"] == job.flag("--oidc-token-audience")
    assert drain_env["DRAIN_OIDC_SERVICE_ACCOUNTS"] == job.flag("--oidc-service-account-email")


def _cold_start_environ(plan: Plan, name: str) -> dict[str, str]:
    """The environment a function starts with, credentials replaced by dummies."""
    environ = dict(plan.env_vars(name))
    for setting in plan.bound_secrets(name):
        environ[setting] = "postgresql://u@db.invalid/postgres" if setting.endswith("DATABASE_URL") else "x" * 24
    return environ


def test_each_function_starts_with_valid_settings(plan: Plan, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every variable set is a setting (or read by the runtime), and they validate."""
    monkeypatch.chdir(ROOT)  # the deployed source's root is the function's working directory
    known = set(Settings.env_names()) | RUNTIME_VARIABLES
    for name in plan.deploys:
        environ = _cold_start_environ(plan, name)
        assert set(environ) <= known, f"{name}: unknown variables {set(environ) - known}"
        settings = Settings.from_environ(environ)
        assert settings.google_cloud_project == settings_of(plan.env)["PROJECT_ID"]
        if name == "drain":
            assert settings.drain_oidc_audiences and settings.drain_oidc_service_accounts
        if name in ("webhook", "drain"):
            assert routes_table(settings) is not None, f"{name} needs the routes (drain: for the outbox)"


def test_drain_reconciles_with_the_webhooks_own_routes(plan: Plan) -> None:
    webhook, drain = plan.env_vars("webhook"), plan.env_vars("drain")
    routes = {key: value for key, value in webhook.items() if key.startswith("WEBHOOK_ROUTES")}
    assert routes and all(drain.get(key) == value for key, value in routes.items())
    assert not {key for key in drain if key.startswith("WEBHOOK_")} - set(routes), "and no other webhook setting"


def test_routes_file_is_in_the_repository(plan: Plan) -> None:
    routes = plan.env_vars("webhook").get("WEBHOOK_ROUTES_FILE")
    if routes:
        assert not Path(routes).is_absolute() and (ROOT / routes).is_file()


def test_migration_follows_the_flag(plan: Plan) -> None:
    settings = settings_of(plan.env)
    migrations = [c for c in plan.commands if "deploy/pgboss/pgboss" in c.argv]
    if settings["PGBOSS_MIGRATE"] == "true":
        (migrate,) = migrations
        assert migrate.argv[0].startswith("PGBOSS_DATABASE_URL=<value of secret ")
        assert migrate.argv[1:] == ["deploy/pgboss/pgboss", "migrate", "--schema", settings["APP_PGBOSS_SCHEMA"]]
        assert plan.commands.index(migrate) < min(plan.commands.index(c) for c in plan.deploys.values())
    else:
        assert migrations == []
        assert "pg-boss migration skipped" in plan.output


def test_migration_can_be_switched_either_way() -> None:
    on = Plan.of("prod", "--set", "PGBOSS_MIGRATE=true")
    off = Plan.of("dev", "--set", "PGBOSS_MIGRATE=false")
    assert any("deploy/pgboss/pgboss" in c.argv for c in on.commands)
    assert not any("deploy/pgboss/pgboss" in c.argv for c in off.commands)


# Shapes of credentials: URLs with a password, bearer tokens, keys, long random strings.
SECRET_SHAPES = [
    re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:[^/\s@'\"<>$]+@", re.I),
    re.compile(r"Bearer\s+[A-Za-z0-9._~+/-]{12,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    # a credential's value (not a secret binding NAME=SECRET:VERSION, nor an sm:// reference)
    re.compile(r"\b(?:API_KEYS|WEBHOOK_SECRET|DRAIN_TOKEN|PASSWORD)=(?![\w-]+:(?:latest|\d+)\b)[\w+/-]{8,}", re.I),
    re.compile(r"\b(?:AIza[0-9A-Za-z_-]{35}|sk_live_[0-9A-Za-z]{16,}|ghp_[0-9A-Za-z]{36})\b"),
]
DEPLOY_FILES = [
    ROOT / "cloudbuild.yaml",
    ROOT / ".gcloudignore",
    ROOT / "deploy" / "deploy.sh",
    ROOT / "deploy" / "README.md",
    ROOT / "deploy" / "supabase" / "webhook_triggers.sql",
    *sorted((ROOT / "deploy" / "env").glob("*.env")),
]


@pytest.mark.parametrize("path", DEPLOY_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_credential_is_written_in_a_deploy_file(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for shape in SECRET_SHAPES:
        assert not shape.search(text), f"{path.name}: {shape.search(text)}"


def test_no_credential_is_printed(plan: Plan) -> None:
    for shape in SECRET_SHAPES:
        assert not shape.search(plan.output), shape.search(plan.output)


def test_the_secret_shapes_would_be_caught() -> None:
    leaks = [
        "postgresql://postgres.abcd:Sup3rS3cret@aws-0-eu-central-1.pooler.supabase.com:6543/postgres",
        "Authorization: Bearer 4f9c2a7d1e8b6c3a5f0d",
        "API_KEYS=k1-abcdefgh,k2",
    ]
    bindings = ["--set-secrets=API_KEYS=processing-api-keys:latest", "API_KEYS=sm://p/processing-api-keys#2"]
    for binding in bindings:
        assert not any(shape.search(binding) for shape in SECRET_SHAPES), binding
    for leak in leaks:
        assert any(shape.search(leak) for shape in SECRET_SHAPES), leak


def test_secret_references_mode_uses_the_packages_reference_format() -> None:
    plan = Plan.of("staging", "--set", "SECRET_MODE=sm-refs", "--set", "SECRET_VERSION=3")
    settings = settings_of("staging")
    for name, command in plan.deploys.items():
        assert "--set-secrets" not in command.flags and "--clear-secrets" in command.flags
        environ = plan.env_vars(name)
        refs = {k: v for k, v in environ.items() if k in CREDENTIAL_SETTINGS}
        assert set(refs) == NEEDED_SECRETS[name]
        for setting, value in refs.items():
            assert is_secret_reference(value)
            assert value == f"sm://{settings['PROJECT_ID']}/{settings[f'SECRET_{setting}']}#3"
    # The accounts still need (exactly) the same access: the package reads the secrets.
    members = {(b.words[3], b.flag("--member")) for b in plan.gcloud("secrets", "add-iam-policy-binding")}
    assert members == {
        (b.words[3], b.flag("--member")) for b in Plan.of("staging").gcloud("secrets", "add-iam-policy-binding")
    }


def test_optional_drain_credentials_are_bound_when_named() -> None:
    plan = Plan.of(
        "dev",
        "--set",
        "SECRET_DRAIN_TOKEN=processing-drain-token",
        "--set",
        "SECRET_DRAIN_LISTEN_DATABASE_URL=processing-session-url",
    )
    assert set(plan.bound_secrets("drain")) == {"DATABASE_URL", "DRAIN_TOKEN", "DRAIN_LISTEN_DATABASE_URL"}
    drain_account = plan.deploys["drain"].flag("--run-service-account")
    granted = {
        b.words[3]
        for b in plan.gcloud("secrets", "add-iam-policy-binding")
        if b.flag("--member") == f"serviceAccount:{drain_account}"
    }
    assert granted == {"processing-database-url", "processing-drain-token", "processing-session-url"}


# supervise authenticates its caller with drain's check, so it reads drain's OIDC settings.
CALLER_CHECK = {"DRAIN_OIDC_AUDIENCES", "DRAIN_OIDC_SERVICE_ACCOUNTS", "DRAIN_OIDC_TRUST_CLOUD_RUN"}


def test_settings_named_after_a_function_go_to_that_function_only(plan: Plan) -> None:
    for name in plan.deploys:
        for variable in plan.env_vars(name):
            owner = variable.split("_")[0].lower()
            if owner in plan.deploys and not (name in SCHEDULED and variable in CALLER_CHECK):
                if name == "drain" and variable.startswith("WEBHOOK_ROUTES"):
                    continue  # the outbox: drain makes the jobs the webhook missed
                assert owner == name, f"{variable} given to {name}"


def test_overrides() -> None:
    plan = Plan.of("dev", "--set", "REGION=us-central1", "--set", "MEMORY=", "--set=MAX_INSTANCES=7")
    assert {c.flag("--region") for c in plan.deploys.values()} == {"us-central1"}
    assert {c.flag("--memory") for c in plan.deploys.values()} == {settings_of("dev")["MEMORY"]}
    assert plan.deploys["enqueue"].flag("--max-instances") == "7"
    assert plan.deploys["drain"].flag("--max-instances") == settings_of("dev")["DRAIN_MAX_INSTANCES"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dev", "--set", "REGOIN=x"], "unknown key REGOIN"),
        (["dev", "--set", "APP_DATABASE_URL=postgresql://x"], "credential"),
        (["dev", "--set", "APP_API_KEYS=abc"], "credential"),
        (["dev", "--set", "DRAIN_TIMEOUT=1m"], "whole seconds"),
        (["dev", "--set", "SECRET_MODE=plain"], "SECRET_MODE"),
        (["dev", "--set", "PROJECT_NUMBER=my-project"], "PROJECT_NUMBER"),
        (["qa"], "no environment 'qa'"),
        (["../env/dev"], "no environment"),
        ([], "usage"),
    ],
)
def test_bad_invocations_are_refused(args: list[str], message: str) -> None:
    result = run_deploy(*args, "--dry-run", check=False)
    assert result.returncode != 0
    assert message in result.stderr


def gcloud_problems(command: Command, tree: dict) -> list[str]:
    """What gcloud would refuse in ``command``: an unknown command or flag."""
    node, path = tree, []
    for word in command.words[1:]:
        if word not in node["commands"]:
            break
        node, path = node["commands"][word], [*path, word]
    if node["commands"]:
        return [f"incomplete command: gcloud {' '.join(path)}"]
    known = {**tree["flags"], **node["flags"]}
    problems = []
    for flag in command.flags:
        # Boolean flags are listed once and also take a --no- form.
        negated = "--" + flag.removeprefix("--no-")
        if not (flag in known or (flag.startswith("--no-") and known.get(negated) == "bool")):
            problems.append(f"gcloud {' '.join(path)} has no {flag}")
    return problems


@pytest.fixture(scope="module")
def tree() -> dict:
    found = gcloud_tree()
    require_tool(found is not None, "the Google Cloud SDK (its command tree)")
    assert found is not None
    return found


def test_gcloud_commands_and_flags_exist(plan: Plan, tree: dict) -> None:
    """Each gcloud command and flag is in gcloud's own command tree (shipped with the SDK)."""
    for command in plan.gcloud():
        assert gcloud_problems(command, tree) == [], command.line


def test_the_gcloud_check_catches_mistakes(tree: dict) -> None:
    assert gcloud_problems(Command(["gcloud", "functions", "deploy", "x", "--gen2", "--no-retry"]), tree) == []
    assert gcloud_problems(Command(["gcloud", "functions", "deploy", "x", "--allow-unauthenticated=1"]), tree) == []
    assert gcloud_problems(Command(["gcloud", "functions", "deploy", "x", "--memmory=1Gi"]), tree)
    assert gcloud_problems(Command(["gcloud", "functions", "deploy", "x", "--no-memory"]), tree)
    assert gcloud_problems(Command(["gcloud", "scheduler", "jobs", "create", "x"]), tree)
    assert gcloud_problems(Command(["gcloud", "scheduler", "jobs", "update", "http", "j", "--headers=a=b"]), tree)


# Where a reader copies a database URL from.
URL_EXAMPLE_FILES = [ROOT / "README.md", ROOT / "deploy" / "README.md", ROOT / ".env.example"]
SUPAVISOR_HOST = re.compile(r"aws-\d+-<region>\.pooler\.supabase\.com")
# Supavisor: session mode (a whole session: LISTEN, migrations) and transaction mode.
POOLER_PORTS = {"5432": "session", "6543": "transaction"}


def test_every_database_url_example_is_supabases_pooler() -> None:
    """Cloud Run's egress is IPv4; Supabase's direct host db.<ref>.supabase.co is IPv6-only."""
    seen = set()
    for path in URL_EXAMPLE_FILES:
        text = path.read_text(encoding="utf-8")
        for url in re.findall(r"postgres(?:ql)?://[^\s`'\")]+", text):
            host_port = url.split("@", 1)[-1].split("/", 1)[0]
            host, _, port = host_port.rpartition(":")
            if host in {"127.0.0.1", "localhost"}:
                continue
            assert SUPAVISOR_HOST.fullmatch(host), f"{path.name}: {url}"
            assert port in POOLER_PORTS, f"{path.name}: {url}"
            assert url.split("://", 1)[1].startswith("postgres.<ref>:"), "Supavisor's user is postgres.<ref>"
            assert "sslmode=require" in url, url
            seen.add(POOLER_PORTS[port])
        assert not re.search(r"db\.[\w<>.-]*supabase\.co:\d", text), f"{path.name} shows the direct host as a URL"
    assert seen == {"session", "transaction"}
