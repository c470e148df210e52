"""Reading the deployment as data: env files, deploy.sh's dry run, gcloud's command tree.

``deploy/deploy.sh ENV --dry-run`` prints one shell command per line (comments start
with ``#``); ``Plan`` parses those lines into argv lists and answers questions about
them, so the tests check what would really be run rather than the script's text.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "deploy.sh"
ENV_DIR = ROOT / "deploy" / "env"
ENVIRONMENTS = sorted(path.stem for path in ENV_DIR.glob("*.env"))
GCLOUD_SDK = Path("/usr/lib/google-cloud-sdk")
GCLOUD_TREE = GCLOUD_SDK / "data" / "cli" / "gcloud_completions.py"


def read_env_file(name: str) -> dict[str, str]:
    """The env file's keys, parsed the way deploy.sh parses them."""
    values: dict[str, str] = {}
    for line in (ENV_DIR / f"{name}.env").read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, _, value = line.partition("=")
        values[key] = value
    return values


def deploy_defaults() -> dict[str, str]:
    """The defaults in deploy.sh's ``conf`` table."""
    text = DEPLOY.read_text(encoding="utf-8")
    table = text[text.index("declare -A conf=(") : text.index("\n)\n", text.index("declare -A conf=("))]
    defaults = {}
    for key, value in re.findall(r"^\s+\[([A-Z0-9_]+)\]=(.*)$", table, re.M):
        defaults[key] = shlex.split(value)[0] if value.strip() not in ('""', "") else ""
    return defaults


def settings_of(name: str, **overrides: str) -> dict[str, str]:
    """What deploy.sh works with for ``name``: its defaults, the env file, the overrides."""
    return {**deploy_defaults(), **read_env_file(name), **overrides}


def run_deploy(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        ["bash", str(DEPLOY), *args],
        capture_output=True,
        text=True,
        env=env if env is not None else os.environ.copy(),
        cwd="/",  # the script must not depend on where it is started from
        timeout=300,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"deploy.sh {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


@dataclass
class Command:
    argv: list[str]
    line: str = ""

    @property
    def words(self) -> list[str]:
        """Positional words (command path and arguments), flags left out."""
        return [arg for arg in self.argv if not arg.startswith("-")]

    def is_(self, *prefix: str) -> bool:
        return self.words[: len(prefix)] == list(prefix)

    @property
    def flags(self) -> dict[str, str | None]:
        found: dict[str, str | None] = {}
        for arg in self.argv:
            if arg.startswith("--"):
                name, eq, value = arg.partition("=")
                found[name] = value if eq else None
        return found

    def flag(self, name: str) -> str | None:
        return self.flags.get(name)


@dataclass
class Plan:
    env: str
    output: str
    commands: list[Command] = field(default_factory=list)

    @classmethod
    def of(cls, env: str, *args: str) -> Plan:
        output = run_deploy(env, "--dry-run", *args).stdout
        return cls.parse(env, output)

    @classmethod
    def parse(cls, env: str, output: str) -> Plan:
        plan = cls(env, output)
        for line in output.splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            plan.commands.append(Command(shlex.split(line, comments=True), line))
        return plan

    def gcloud(self, *prefix: str) -> list[Command]:
        return [c for c in self.commands if c.argv[0] == "gcloud" and c.is_("gcloud", *prefix)]

    @property
    def deploys(self) -> dict[str, Command]:
        return {c.words[3]: c for c in self.gcloud("functions", "deploy")}

    def env_vars(self, function: str) -> dict[str, str]:
        return split_list(self.deploys[function].flag("--set-env-vars") or "")

    def bound_secrets(self, function: str) -> dict[str, str]:
        """Setting -> SECRET:VERSION bound with --set-secrets."""
        return split_list(self.deploys[function].flag("--set-secrets") or "")


def split_list(value: str) -> dict[str, str]:
    """A gcloud KEY=VALUE list, with its ^DELIM^ alternative-delimiter syntax."""
    delimiter = ","
    match = re.match(r"^\^([^^]+)\^", value)
    if match:
        delimiter, value = match.group(1), value[match.end() :]
    items = {}
    for item in filter(None, value.split(delimiter)):
        key, _, val = item.partition("=")
        items[key] = val
    return items


@functools.cache
def gcloud_tree() -> dict | None:
    """gcloud's own table of commands and flags, shipped with the SDK (no network)."""
    if not GCLOUD_TREE.exists():
        return None
    spec = importlib.util.spec_from_file_location("gcloud_completions", GCLOUD_TREE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.STATIC_COMPLETION_CLI_TREE


def registered_functions() -> dict[str, str]:
    """functions-framework's registry after loading main.py: name -> signature type."""
    code = (
        "import json, runpy, sys\n"
        "sys.path.insert(0, '.')\n"
        "import functions_framework._function_registry as registry\n"
        "module = runpy.run_path('main.py', run_name='main')\n"
        "print(json.dumps({name: kind for name, kind in registry.REGISTRY_MAP.items() if name in module}))\n"
    )
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LOG_LEVEL": "WARNING"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"loading main.py failed:\n{result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1])
