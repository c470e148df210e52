"""What the installed release lacks is refused, never dropped (the other interop tests use it
where the release has it).

Against an older release (``TEST_PGBOSS_RELEASE``) each option or policy that came later is
tried once through our client: it must raise ``OptionNotSupported`` naming the option and the
installed schema, and write no row. Where the release has the feature the case is skipped: the
feature's own tests above exercise it there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from shared.db import Database
from shared.pgboss.capabilities import Capabilities
from shared.pgboss.errors import OptionNotSupported
from tests.interop.actors import PythonActor

# (option, the feature flag that has it, the call that uses it)
SEND: list[tuple[str, Callable[[Capabilities], bool], dict[str, Any]]] = [
    ("retentionSeconds", lambda caps: caps.retention_per_job, {"retentionSeconds": 60}),
    ("group", lambda caps: caps.groups, {"group": {"id": "g"}}),
    ("deadLetter", lambda caps: caps.dead_letter_per_job, {"deadLetter": "dlq"}),
    ("heartbeatSeconds", lambda caps: caps.heartbeats, {"heartbeatSeconds": 30}),
    ("retryDelayMax", lambda caps: caps.retry_delay_max, {"retryBackoff": True, "retryDelayMax": 60}),
    ("deleteAfterSeconds", lambda caps: caps.deletion_per_job, {"deleteAfterSeconds": 60}),
]
QUEUE: list[tuple[str, Callable[[Capabilities], bool], dict[str, Any]]] = [
    ("policy", lambda caps: caps.exclusive_policy, {"policy": "exclusive"}),
    ("policy", lambda caps: caps.key_strict_fifo_policy, {"policy": "key_strict_fifo"}),
    ("heartbeatSeconds", lambda caps: caps.heartbeats, {"heartbeatSeconds": 30}),
    ("notify", lambda caps: caps.notify, {"notify": True}),
    ("retryDelayMax", lambda caps: caps.retry_delay_max, {"retryBackoff": True, "retryDelayMax": 60}),
    ("deleteAfterSeconds", lambda caps: caps.deletion_per_job, {"deleteAfterSeconds": 60}),
    ("warningQueueSize", lambda caps: not caps.archive, {"warningQueueSize": 10}),
]


def _lacks(caps: Capabilities, has: Callable[[Capabilities], bool], what: str) -> None:
    if has(caps):
        pytest.skip(f"schema {caps.schema_version} has {what}; the interop tests use it there")


def _refused(call: Callable[[], Any], named: str, caps: Capabilities) -> None:
    """``call`` raises OptionNotSupported naming ``named`` and the installed schema."""
    with pytest.raises(OptionNotSupported) as raised:
        call()
    assert raised.value.schema_version == caps.schema_version
    assert f"option {named!r}" in str(raised.value)
    assert f"schema version {caps.schema_version}" in str(raised.value)


@pytest.mark.parametrize(("option", "has", "options"), SEND, ids=[case[0] for case in SEND])
def test_send_option_the_release_lacks_is_refused(
    option: str,
    has: Callable[[Capabilities], bool],
    options: dict[str, Any],
    python_actor: PythonActor,
    caps: Capabilities,
    db: Database,
) -> None:
    _lacks(caps, has, option)
    python_actor.create_queue("dlq")
    python_actor.create_queue("q")
    _refused(lambda: python_actor.send("q", {"n": 1}, **options), option, caps)
    _refused(lambda: python_actor.insert("q", [{"data": {"n": 2}}, {"data": {"n": 3}, **options}]), option, caps)
    assert db.run("SELECT count(*) AS n FROM pgboss.job WHERE name = 'q'")[0]["n"] == 0


@pytest.mark.parametrize(("option", "has", "options"), QUEUE, ids=[case[2].get("policy", case[0]) for case in QUEUE])
def test_queue_option_the_release_lacks_is_refused(
    option: str,
    has: Callable[[Capabilities], bool],
    options: dict[str, Any],
    python_actor: PythonActor,
    caps: Capabilities,
    db: Database,
) -> None:
    named = f"policy {options['policy']}" if option == "policy" else option
    _lacks(caps, has, named)
    _refused(lambda: python_actor.create_queue("q", **options), named, caps)
    assert db.run("SELECT count(*) AS n FROM pgboss.queue WHERE name = 'q'")[0]["n"] == 0
