"""One small adapter per client, so every interop scenario is written once and run both ways.

``PythonActor`` drives our client (``shared.pgboss.client.PgBoss``); ``NodeActor`` drives real
pg-boss (12.38, or the release under test) through the Node harness. Both take options under
pg-boss's own camelCase names and hand back the same plain shapes, so a scenario cannot tell which
side it is talking to:

* ``send``/``insert`` return job ids (``None`` where pg-boss would have deduplicated);
* ``fetch`` returns ``Claim``s, which carry the attempt (``retry_count``) settling is fenced on;
* ``complete``/``fail``/``touch`` take claims and are fenced, as ``work()`` is in Node (releases
  before 12.35 take plain ids and settle unfenced);
* ``cancel``/``resume``/``retry``/``delete`` take plain ids, as both APIs do;
* ``expire`` runs the expiry and heartbeat-loss pass for one queue: ``fail_expired`` here,
  ``supervise(name)`` in Node (its monitor claim is released first, since Node only runs that
  pass once a minute per queue).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from typing import Any, Protocol

import pytest

from shared.db import Database
from shared.pgboss.client import PgBoss
from shared.pgboss.models import Job, JobRequest, QueueOptions, SendOptions
from tests.support.node_boss import NodeBoss
from tests.support.releases import version_key

SCHEMA = "pgboss"


@dataclass(frozen=True)
class Claim:
    """A fetched job as either client handed it out; ``handle`` is that client's own object."""

    id: str
    retry_count: int
    data: Any
    group_id: str | None
    handle: Any


class Actor(Protocol):
    name: str

    def create_queue(self, queue: str, **options: Any) -> None: ...

    def send(self, queue: str, data: Any = None, **options: Any) -> str | None: ...

    def insert(self, queue: str, jobs: list[dict[str, Any]]) -> list[str]: ...

    def fetch(self, queue: str, batch_size: int = 1, **options: Any) -> list[Claim]: ...

    def complete(self, queue: str, claims: list[Claim], output: Any = None) -> int: ...

    def fail(self, queue: str, claims: list[Claim], error: Any = None) -> int: ...

    def touch(self, queue: str, claims: list[Claim]) -> int: ...

    def cancel(self, queue: str, ids: list[str]) -> int: ...

    def resume(self, queue: str, ids: list[str]) -> int: ...

    def retry(self, queue: str, ids: list[str]) -> int: ...

    def delete(self, queue: str, ids: list[str]) -> int: ...

    def expire(self, queue: str) -> None: ...


def _count(result: Any) -> int:
    """How many jobs a verb changed, whatever shape the client reports it in."""
    if isinstance(result, int):
        return result
    if result is None:
        return 0
    if hasattr(result, "retried"):
        return len(result.retried) + len(result.failed)
    return len(result)


class PythonActor:
    name = "python"

    def __init__(self, boss: PgBoss) -> None:
        self.boss = boss

    def create_queue(self, queue: str, **options: Any) -> None:
        self.boss.create_queue(queue, QueueOptions(**options))

    def send(self, queue: str, data: Any = None, **options: Any) -> str | None:
        return self.boss.send(queue, data, SendOptions(**options))

    def insert(self, queue: str, jobs: list[dict[str, Any]]) -> list[str]:
        requests = []
        for job in jobs:
            options = dict(job)
            data = options.pop("data", None)
            requests.append(JobRequest(queue, data, SendOptions(**options)))
        return [job_id for job_id in self.boss.insert(requests) if job_id is not None]

    def fetch(self, queue: str, batch_size: int = 1, **options: Any) -> list[Claim]:
        group = options.pop("groupConcurrency", None)
        assert not options, f"our fetch has no option {sorted(options)}"
        kwargs = {} if group is None else {"group_concurrency": group}
        return [
            Claim(job.id, job.retry_count, job.data, job.group_id, job)
            for job in self.boss.fetch(queue, batch_size, **kwargs)
        ]

    def _job(self, queue: str, claim: Claim) -> Job:
        """Our ``Job`` for a claim, also one the other client made (same id and attempt)."""
        if isinstance(claim.handle, Job):
            return claim.handle
        job = self.boss.get_job(queue, claim.id)
        assert job is not None, f"job {claim.id} is gone from {queue}"
        return replace(job, retry_count=claim.retry_count)

    def complete(self, queue: str, claims: list[Claim], output: Any = None) -> int:
        return _count(self.boss.complete(queue, [(self._job(queue, claim), output) for claim in claims]))

    def fail(self, queue: str, claims: list[Claim], error: Any = None) -> int:
        return _count(self.boss.fail(queue, [(self._job(queue, claim), error) for claim in claims]))

    def touch(self, queue: str, claims: list[Claim]) -> int:
        return _count(self.boss.touch(queue, [self._job(queue, claim) for claim in claims]))

    def cancel(self, queue: str, ids: list[str]) -> int:
        return _count(self.boss.cancel(queue, ids))

    def resume(self, queue: str, ids: list[str]) -> int:
        return _count(self.boss.resume(queue, ids))

    def retry(self, queue: str, ids: list[str]) -> int:
        return _count(self.boss.retry(queue, ids))

    def delete(self, queue: str, ids: list[str]) -> int:
        return _count(self.boss.delete_jobs(queue, ids))

    def expire(self, queue: str) -> None:
        self.boss.fail_expired(queue)


class NodeActor:
    name = "node"

    def __init__(self, node: NodeBoss, db: Database, schema_version: int = 46) -> None:
        self.node = node
        self.db = db
        self.schema_version = schema_version
        self.release: str = node.info["pgboss"]

    def create_queue(self, queue: str, **options: Any) -> None:
        if self.schema_version < 25 and "retentionSeconds" in options:
            # 10.x's createQueue takes retentionMinutes (it ignores retentionSeconds); ours
            # takes whole minutes in seconds and stores them as those minutes.
            options = {**options, "retentionMinutes": options["retentionSeconds"] // 60}
            del options["retentionSeconds"]
        self.node.call("createQueue", queue, options)

    def send(self, queue: str, data: Any = None, **options: Any) -> str | None:
        return self.node.call("send", queue, data, options)

    def insert(self, queue: str, jobs: list[dict[str, Any]]) -> list[str]:
        return node_insert(self.node, self.db, queue, jobs)

    def fetch(self, queue: str, batch_size: int = 1, **options: Any) -> list[Claim]:
        jobs = self.node.call("fetch", queue, {"batchSize": batch_size, **options})
        return [Claim(job["id"], self._retry_count(queue, job), job["data"], job.get("groupId"), job) for job in jobs]

    def _retry_count(self, queue: str, job: dict[str, Any]) -> int:
        """The fetched attempt: older releases leave it out of a fetch's answer."""
        if "retryCount" in job:
            return int(job["retryCount"])
        rows = self.db.run(
            f"SELECT retry_count FROM {SCHEMA}.job WHERE name = :name AND id = CAST(:id AS uuid)",
            {"name": queue, "id": job["id"]},
        )
        return int(rows[0]["retry_count"])

    def _fence(self, claims: list[Claim]) -> list[Any]:
        if self.schema_version < 43:  # before 12.35 pg-boss settles by id only
            return [claim.id for claim in claims]
        return [{"id": claim.id, "retryCount": claim.retry_count} for claim in claims]

    def complete(self, queue: str, claims: list[Claim], output: Any = None) -> int:
        return self.node.call("complete", queue, self._fence(claims), output)["affected"]

    def fail(self, queue: str, claims: list[Claim], error: Any = None) -> int:
        return self.node.call("fail", queue, self._fence(claims), error)["affected"]

    def touch(self, queue: str, claims: list[Claim]) -> int:
        return self.node.call("touch", queue, self._fence(claims))["affected"]

    def cancel(self, queue: str, ids: list[str]) -> int:
        return self.node.call("cancel", queue, ids)["affected"]

    def resume(self, queue: str, ids: list[str]) -> int:
        return self.node.call("resume", queue, ids)["affected"]

    def retry(self, queue: str, ids: list[str]) -> int:
        if version_key(self.release) < (10, 3):
            pytest.skip(f"pg-boss {self.release} has no retry() (from 10.3)")
        return self.node.call("retry", queue, ids)["affected"]

    def delete(self, queue: str, ids: list[str]) -> int:
        return self.node.call("deleteJob", queue, ids)["affected"]

    def expire(self, queue: str) -> None:
        node_expire(self.node, self.db, queue, self.schema_version)


def fenced_by_attempt(actor: Actor) -> bool:
    """Whether the client refuses a late settle of an older attempt of a job: ours always;
    pg-boss from 12.35 (schema 43), before which it settles by id alone."""
    return not isinstance(actor, NodeActor) or actor.schema_version >= 43


def unfenced(actor: Actor) -> str:
    """Why a test stops where only a fenced settle could pass."""
    release = actor.release if isinstance(actor, NodeActor) else "?"
    return f"pg-boss {release} settles by id alone (by attempt from 12.35), so its late settle of a stale claim lands"


def node_insert(node: NodeBoss, db: Database, queue: str, jobs: list[dict[str, Any]]) -> list[str]:
    """pg-boss ``insert()``, answering the ids of the jobs it inserted. 10.x and 11.0 answer
    none, so there each job is given its id first (pg-boss keeps a given id) and the ids
    answered are those that made a row. 10.x takes one list with each job's queue ``name``."""
    release = version_key(node.info["pgboss"])
    if release >= (11, 1):
        return node.call("insert", queue, jobs, {"returnId": True}) or []
    jobs = [{"id": str(uuid.uuid4()), **job} for job in jobs]
    if release >= (11,):
        node.call("insert", queue, jobs)
    else:
        node.call("insert", [{"name": queue, **job} for job in jobs])
    rows = db.run(
        f"SELECT CAST(id AS text) AS id FROM {SCHEMA}.job WHERE name = :name AND id = ANY(CAST(:ids AS uuid[]))",
        {"name": queue, "ids": [job["id"] for job in jobs]},
    )
    inserted = {row["id"] for row in rows}
    return [job["id"] for job in jobs if job["id"] in inserted]


def node_expire(node: NodeBoss, db: Database, queue: str, schema_version: int) -> None:
    """pg-boss's expiry pass over ``queue`` now: ``supervise(name)`` once its monitor claim is
    released; 10.x (schemas 21-24) has no per-queue pass, its ``expire()`` sweeps every queue."""
    if schema_version < 25:
        node.call("expire")
        return
    release_monitor_claim(db, queue)
    node.call("supervise", queue)


def release_monitor_claim(db: Database, queue: str) -> None:
    """Let Node's next ``supervise`` run its expiry pass for ``queue`` now (test harness only).
    ``monitor_claim_on`` exists from schema 40 (12.30); before, ``monitor_on`` is the claim."""
    claim = db.run(
        "SELECT count(*) AS n FROM information_schema.columns"
        " WHERE table_schema = :schema AND table_name = 'queue' AND column_name = 'monitor_claim_on'",
        {"schema": SCHEMA},
    )[0]["n"]
    columns = "monitor_claim_on = NULL, monitor_on = NULL" if claim else "monitor_on = NULL"
    db.run(f"UPDATE {SCHEMA}.queue SET {columns} WHERE name = :name", {"name": queue})


def release_maintenance_claim(db: Database, queue: str) -> None:
    """Let Node's next ``supervise`` run its retention pass for ``queue`` now (test harness only)."""
    db.run(f"UPDATE {SCHEMA}.queue SET maintain_on = NULL WHERE name = :name", {"name": queue})
