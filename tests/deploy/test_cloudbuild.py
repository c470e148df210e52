"""cloudbuild.yaml: tests first, against a PostgreSQL of its own, then deploy/deploy.sh.

Cloud Build itself is not available here, so the build is checked the way Cloud Build
would read it: substitutions resolved, then the deploy step's own command run as a dry
run, and the upload that `gcloud functions deploy --source=.` makes computed with the
SDK's own .gcloudignore code.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require_tool
from tests.deploy.plan import ENVIRONMENTS, GCLOUD_SDK, ROOT, Plan, run_deploy, settings_of

BUILD = yaml.safe_load((ROOT / "cloudbuild.yaml").read_text(encoding="utf-8"))
SUBSTITUTION = re.compile(r"\$(\$|\{(_[A-Z0-9_]+)\}|[A-Za-z_][A-Za-z0-9_]*|\{[^}]*\})")


def steps() -> dict[str, dict[str, Any]]:
    return {step["id"]: step for step in BUILD["steps"]}


def substitute(text: str, values: dict[str, str]) -> str:
    """Cloud Build's substitution: ${_NAME} from values, $$ for a literal $."""

    def replace(match: re.Match[str]) -> str:
        if match.group(1) == "$":
            return "$"
        if match.group(2) is None:
            raise AssertionError(f"Cloud Build would read {match.group(0)!r} as a substitution")
        return values[match.group(2)]

    return SUBSTITUTION.sub(replace, text)


def step_strings(step: dict[str, Any]) -> list[str]:
    return [step["name"], *step.get("args", []), *step.get("env", []), step.get("entrypoint", "")]


def test_every_substitution_is_declared_and_used() -> None:
    declared = set(BUILD["substitutions"])
    used = set()
    for step in BUILD["steps"]:
        for text in step_strings(step):
            for match in SUBSTITUTION.finditer(text):
                assert match.group(2) or match.group(1) == "$", f"{match.group(0)!r} in step {step['id']}"
                if match.group(2):
                    used.add(match.group(2))
    assert used == declared  # Cloud Build refuses unknown ones and, by default, unused ones
    assert all(name.startswith("_") for name in declared)


def test_tests_run_before_the_deploy() -> None:
    ids = [step["id"] for step in BUILD["steps"]]
    assert ids.index("pgboss-tooling") < ids.index("test") < ids.index("deploy")
    # No waitFor: each step starts when the one before it has succeeded.
    assert all("waitFor" not in step for step in BUILD["steps"])


def test_the_test_step_runs_the_suite_against_its_own_postgresql() -> None:
    step = steps()["test"]
    assert step["entrypoint"] == "bash" and step["args"][0] == "-c"
    script = step["args"][1]
    assert script.strip().splitlines()[-1].strip() == "./test.sh"
    assert "set -euo pipefail" in script
    assert "postgresql-15" in script and "pg_ctlcluster 15 main start" in script
    assert "host all all 127.0.0.1/32 trust" in script  # test.sh connects as postgres, no password
    check = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_tests_run_on_the_deployed_python() -> None:
    image = BUILD["substitutions"]["_PYTHON_IMAGE"]
    match = re.fullmatch(r"python:(\d+)\.(\d+)(?:[.-].*)?", image)
    assert match, image
    for env in ENVIRONMENTS:
        runtime = BUILD["substitutions"]["_RUNTIME"] or settings_of(env)["RUNTIME"]
        assert runtime == f"python{match.group(1)}{match.group(2)}"


def test_pgboss_tooling_is_installed_with_npm_before_it_is_used() -> None:
    step = steps()["pgboss-tooling"]
    assert step["name"] == "${_NODE_IMAGE}" and BUILD["substitutions"]["_NODE_IMAGE"].startswith("node:")
    assert step["args"] == ["deploy/pgboss/install.sh"]


def deploy_argv(values: dict[str, str]) -> list[str]:
    step = steps()["deploy"]
    assert step["entrypoint"] == "bash"
    return [substitute(arg, values) for arg in step["args"]]


def test_the_deploy_step_runs_deploy_sh_with_the_gcloud_image() -> None:
    step = steps()["deploy"]
    assert "google-cloud-cli" in BUILD["substitutions"]["_GCLOUD_IMAGE"] and step["name"] == "${_GCLOUD_IMAGE}"
    argv = deploy_argv(BUILD["substitutions"])
    assert argv[:2] == ["deploy/deploy.sh", BUILD["substitutions"]["_DEPLOY_ENV"]]
    assert BUILD["substitutions"]["_DEPLOY_ENV"] in ENVIRONMENTS


@pytest.mark.parametrize("env", ENVIRONMENTS)
def test_the_deploy_step_deploys_what_the_script_does(env: str) -> None:
    """With every override empty, the build deploys exactly what deploy.sh ENV does."""
    argv = deploy_argv({**BUILD["substitutions"], "_DEPLOY_ENV": env})
    from_build = Plan.parse(env, run_deploy(*argv[1:], "--dry-run").stdout)
    by_hand = Plan.of(env)
    assert [c.argv for c in from_build.commands] == [c.argv for c in by_hand.commands]


def test_substitutions_override_the_env_file() -> None:
    values = {**BUILD["substitutions"], "_REGION": "us-central1", "_MEMORY": "1Gi", "_MAX_INSTANCES": "9"}
    plan = Plan.parse("dev", run_deploy(*deploy_argv(values)[1:], "--dry-run").stdout)
    assert {c.flag("--region") for c in plan.deploys.values()} == {"us-central1"}
    assert {c.flag("--memory") for c in plan.deploys.values()} == {"1Gi"}
    assert plan.deploys["ready"].flag("--max-instances") == "9"
    jobs = plan.gcloud("scheduler", "jobs", "create", "http")
    assert len(jobs) == 2 and {job.flag("--location") for job in jobs} == {"us-central1"}


def test_build_options() -> None:
    assert BUILD["options"]["logging"] == "CLOUD_LOGGING_ONLY"
    assert int(BUILD["timeout"].rstrip("s")) >= 1800


# --- what `gcloud functions deploy --source=.` uploads --------------------------------

NEEDED_AT_RUNTIME = ["main.py", "requirements.txt", "functions/health.py", "shared/config.py"]


def uploaded_files(config_dir: Path) -> list[str]:
    """The files gcloud would upload from the repository, by the SDK's own rules."""
    code = (
        "import json, sys\n"
        f"sys.path[:0] = [{str(GCLOUD_SDK / 'lib')!r}, {str(GCLOUD_SDK / 'lib' / 'third_party')!r}]\n"
        "from googlecloudsdk.command_lib.util import gcloudignore\n"
        "chooser = gcloudignore.GetFileChooserForDir('.', write_on_disk=False)\n"
        "print(json.dumps(sorted(chooser.GetIncludedFiles('.', include_dirs=False))))\n"
    )
    environ = {"PATH": os.environ.get("PATH", ""), "CLOUDSDK_CONFIG": str(config_dir)}
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def uploaded(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    require_tool((GCLOUD_SDK / "lib" / "googlecloudsdk").is_dir(), "the Google Cloud SDK")
    return uploaded_files(tmp_path_factory.mktemp("gcloud-config"))


def test_upload_holds_the_functions(uploaded: list[str]) -> None:
    for path in NEEDED_AT_RUNTIME:
        assert path in uploaded, path
    for env in ENVIRONMENTS:
        routes = settings_of(env).get("APP_WEBHOOK_ROUTES_FILE")
        if routes:
            assert routes in uploaded, routes
    for path in (ROOT / "shared").rglob("*.py"):
        if "__pycache__" not in path.parts:
            assert str(path.relative_to(ROOT)) in uploaded


def test_upload_leaves_out_tooling_tests_and_local_state(uploaded: list[str]) -> None:
    for path in uploaded:
        top = Path(path).parts[0]
        assert top not in {".git", ".venv", "tests", "deploy", "scripts", ".ci", "node_modules"}, path
        assert "__pycache__" not in path and not path.startswith(".env"), path
        assert path not in {"cloudbuild.yaml", "requirements-dev.txt", "pyproject.toml"}, path
