"""Resolve Secret Manager references in setting values, once per instance.

Any setting may hold a reference instead of a value:

* ``sm://PROJECT/SECRET`` -- the ``latest`` version,
* ``sm://PROJECT/SECRET#VERSION`` -- a pinned version (number or alias),
* ``projects/PROJECT/secrets/SECRET/versions/VERSION`` -- the full resource name.

Why it looks like this:

* Cold start cost. The Secret Manager client pulls in gRPC, protobuf and
  google-auth, which takes a noticeable share of a cold start. It is imported only
  when at least one reference is present, so a function configured with plain
  values pays nothing.
* Rotation. Each distinct secret version is fetched once per process and cached
  for the life of the instance. ``latest`` is therefore read at cold start: a
  rotated secret reaches new instances, and running ones keep the value they
  started with (so a rotation must keep the old value valid until they recycle).
* Fail fast. A cold start blocks on these calls, so they use a short deadline
  instead of the client's default of retrying UNAVAILABLE for 60 seconds.

Errors are ``ConfigError``s naming the environment variable and the reference,
never the secret value; they are raised outside ``except`` blocks so no chained
exception (which could carry the payload) is attached.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Mapping
from typing import Any

from shared.errors import ConfigError

# A dead or unreachable endpoint must fail the cold start within a few seconds, not
# after the client's default 60 s of UNAVAILABLE retries. The timeout is one budget
# for the whole call, retries included; retries still cover a brief blip.
ACCESS_TIMEOUT_SECONDS = 3.0
_RETRY_INITIAL_SECONDS = 0.2
_RETRY_MAXIMUM_SECONDS = 1.0

_SM_URL = re.compile(r"sm://(?P<project>[^/#]+)/(?P<secret>[^/#]+)(?:#(?P<version>[^/#]+))?")
_RESOURCE = re.compile(r"projects/(?P<project>[^/]+)/secrets/(?P<secret>[^/]+)/versions/(?P<version>[^/]+)")
# Anything shaped like an attempt at a resource name is a reference, so a typo in
# one is reported instead of being used verbatim as the setting's value.
_RESOURCE_LIKE = re.compile(r"projects/[^/]+/(?:locations/[^/]+/)?secrets/")
_PROJECT = re.compile(r"[a-z0-9][a-z0-9.:-]*")  # ids, numbers and domain:scoped ids
_SECRET = re.compile(r"[A-Za-z0-9_-]{1,255}")
_VERSION = re.compile(r"latest|[1-9][0-9]*|[A-Za-z][A-Za-z0-9_-]*")

_cache: dict[str, str] = {}
_lock = threading.Lock()


def is_secret_reference(value: str) -> bool:
    """Whether ``value`` is (or is an attempt at) a Secret Manager reference.

    Malformed attempts such as ``sm://onlyproject`` count as references so that
    resolving them fails loudly rather than passing the typo on as a value.
    """
    return value.startswith("sm://") or _RESOURCE_LIKE.match(value) is not None


def resolve_secret_references(values: Mapping[str, str], *, client: Any | None = None) -> dict[str, str]:
    """Return a copy of ``values`` with every secret reference replaced by its value.

    Non-references pass through unchanged. ``client`` is a
    ``SecretManagerServiceClient``; when None, one is created (with application
    default credentials) only if a reference is present.

    Payloads are decoded as UTF-8 and a single trailing newline is removed,
    because secrets created with ``echo value | gcloud secrets create ...`` end
    with one that is never part of the intended value.
    """
    # Parse every reference before fetching any, so a typo fails without a network call.
    names = {key: _resource_name(key, value) for key, value in values.items() if is_secret_reference(value)}
    resolved = dict(values)
    for key, name in names.items():
        with _lock:
            if name not in _cache:
                if client is None:
                    client = _default_client(key)
                _cache[name] = _access(client, key, values[key], name)
            resolved[key] = _cache[name]
    return resolved


def _resource_name(setting: str, reference: str) -> str:
    """Parse a reference into ``projects/P/secrets/S/versions/V``, or raise ConfigError."""
    match = _SM_URL.fullmatch(reference) or _RESOURCE.fullmatch(reference)
    if match is None:
        raise ConfigError(
            f"{setting}: malformed secret reference {reference!r}; expected "
            "sm://PROJECT/SECRET, sm://PROJECT/SECRET#VERSION or "
            "projects/PROJECT/secrets/SECRET/versions/VERSION"
        )
    project, secret = match["project"], match["secret"]
    version = match["version"] or "latest"
    for part, pattern, what in (
        (project, _PROJECT, "project id"),
        (secret, _SECRET, "secret id"),
        (version, _VERSION, "version (a number, an alias or 'latest')"),
    ):
        if not pattern.fullmatch(part):
            raise ConfigError(f"{setting}: malformed secret reference {reference!r}: invalid {what} {part!r}")
    return f"projects/{project}/secrets/{secret}/versions/{version}"


def _default_client(setting: str) -> Any:
    """Create a client on first need; the import is the cold-start cost we defer."""
    failure = None
    try:
        from google.cloud import secretmanager

        return secretmanager.SecretManagerServiceClient()
    except Exception as exc:  # e.g. google.auth DefaultCredentialsError
        failure = type(exc).__name__
    raise ConfigError(
        f"{setting}: cannot create a Secret Manager client ({failure}); "
        "are Google application default credentials available?"
    )


def _access(client: Any, setting: str, reference: str, name: str) -> str:
    """Fetch one version and return its text; every failure becomes a ConfigError."""
    from google.api_core import exceptions, retry

    problem = None
    try:
        response = client.access_secret_version(
            name=name,
            retry=retry.Retry(
                initial=_RETRY_INITIAL_SECONDS,
                maximum=_RETRY_MAXIMUM_SECONDS,
                predicate=retry.if_exception_type(exceptions.ServiceUnavailable, exceptions.ResourceExhausted),
                timeout=ACCESS_TIMEOUT_SECONDS,
            ),
            timeout=ACCESS_TIMEOUT_SECONDS,
        )
    except exceptions.NotFound:
        problem = "secret not found (gRPC NOT_FOUND; check the project, secret and version)"
    except exceptions.PermissionDenied:
        problem = (
            "permission denied (gRPC PERMISSION_DENIED; the service account needs "
            "roles/secretmanager.secretAccessor on the secret)"
        )
    except exceptions.Unauthenticated:
        problem = "not authenticated (gRPC UNAUTHENTICATED)"
    except (exceptions.RetryError, exceptions.ServiceUnavailable, exceptions.DeadlineExceeded):
        problem = f"Secret Manager unreachable (no answer within {ACCESS_TIMEOUT_SECONDS:g} s)"
    except exceptions.GoogleAPICallError as exc:
        code = getattr(exc.grpc_status_code, "name", None) or str(exc.code)
        problem = f"Secret Manager refused the request (gRPC {code})"
    if problem is not None:
        raise ConfigError(f"{setting}: cannot resolve secret reference {reference!r}: {problem}")

    text = None
    with contextlib.suppress(UnicodeDecodeError):
        text = response.payload.data.decode("utf-8")
    if text is None:
        raise ConfigError(f"{setting}: secret reference {reference!r} does not hold UTF-8 text")
    return text[:-1] if text.endswith("\n") else text
