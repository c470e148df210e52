"""A stand-in for ``gcloud`` that records every call and answers the few questions
deploy.sh asks, so a real (non dry) run of the script can be tested with no Google.

Environment:
  FAKE_GCLOUD_LOG       file that gets one JSON argv list per call
  FAKE_GCLOUD_EXISTING  space-separated names that "exist" (service-account emails,
                        Scheduler job names); besides the accounts the run creates,
                        everything else is NOT_FOUND
  FAKE_GCLOUD_SECRETS   JSON object: secret name -> value
  FAKE_PROJECT_NUMBER   the project's number, as in the URLs Cloud Run reports
  FAKE_RUN_HASH_URL_ONLY  if set, services report only their older, hashed URL
  FAKE_IAM_DELAY        N: a call naming a service account created earlier in the run
                        fails its first N times, as while IAM is still propagating it
"""

from __future__ import annotations

import json
import os
import sys


def flag(args: list[str], name: str) -> str | None:
    for arg in args:
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def not_yet_propagated(args: list[str], calls: list[list[str]]) -> str | None:
    """A service account this run created that ``args`` names while IAM does not know it yet."""
    delay = int(os.environ.get("FAKE_IAM_DELAY", "0"))
    created = [c[3] for c in calls if c[:3] == ["iam", "service-accounts", "create"]]
    tries = sum(1 for c in calls if c == args)  # this one included
    for account in created:
        if any(f"{account}@" in arg for arg in args) and tries <= delay:
            return account
    return None


def main(args: list[str]) -> int:
    with open(os.environ["FAKE_GCLOUD_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps(args) + "\n")
    with open(os.environ["FAKE_GCLOUD_LOG"], encoding="utf-8") as log:
        calls = [json.loads(line) for line in log]
    existing = os.environ.get("FAKE_GCLOUD_EXISTING", "").split()
    words = [arg for arg in args if not arg.startswith("-")]

    unknown = not_yet_propagated(args, calls)
    if unknown is not None:
        print(f"ERROR: (gcloud) NOT_FOUND: service account {unknown} does not exist", file=sys.stderr)
        return 1

    created = [f"{c[3]}@" for c in calls if c[:3] == ["iam", "service-accounts", "create"]]
    if words[:3] in (["iam", "service-accounts", "describe"], ["scheduler", "jobs", "describe"]):
        if words[3] in existing or any(words[3].startswith(prefix) for prefix in created):
            print(json.dumps({"name": words[3]}))
            return 0
        print(f"ERROR: (gcloud) NOT_FOUND: {words[3]}", file=sys.stderr)
        return 1
    if words[:3] == ["secrets", "versions", "access"]:
        secrets = json.loads(os.environ.get("FAKE_GCLOUD_SECRETS", "{}"))
        name = flag(args, "--secret")
        if name not in secrets:
            print(f"ERROR: (gcloud) NOT_FOUND: secret {name}", file=sys.stderr)
            return 1
        sys.stdout.write(secrets[name])
        return 0
    if words[:2] == ["projects", "describe"]:
        print(os.environ["FAKE_PROJECT_NUMBER"])
        return 0
    if words[:3] == ["run", "services", "describe"]:
        service, region = words[3], flag(args, "--region")
        number = os.environ["FAKE_PROJECT_NUMBER"]
        urls = [f"https://{service}-{number}.{region}.run.app", f"https://{service}-abc123xyz-ew.a.run.app"]
        if os.environ.get("FAKE_RUN_HASH_URL_ONLY"):
            urls = urls[1:]
        print(
            json.dumps(
                {
                    "metadata": {"name": service, "annotations": {"run.googleapis.com/urls": json.dumps(urls)}},
                    "status": {"url": urls[-1]},
                },
                indent=2,
            )
        )
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
