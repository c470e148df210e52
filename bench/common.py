"""What both benchmarks share: a scratch database, a backlog, and pg-boss 12.38 timed inside Node.

Imported by the benchmark scripts, which put the repository root on ``sys.path`` first.
They run on the PostgreSQL server ``BENCH_ADMIN_DATABASE_URL`` names or, without it, on a
throwaway server of their own started the way ``./test.sh`` starts the tests' (see
``on_a_server``), never on whatever happens to listen on the machine's default port.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from shared.db import Database
from shared.pgboss.client import PgBoss
from shared.pgboss.models import JobRequest
from tests.support.node_boss import NODE, PGBOSS_DIR

SCHEMA = "pgboss"
INSERT_BATCH = 1_000
WITH_TEST_POSTGRES = Path(__file__).resolve().parent.parent / "scripts" / "with_test_postgres.py"

# pg-boss's ways to drain a queue (modes of NODE_SCRIPT); the fastest is its figure.
NODE_DRAINS = {
    "fetch-ids": "fetch + complete(ids)",
    "fetch-jobs": "fetch + complete(jobs), fenced like ours",
    "work": "work() in burst mode",
}

# Timed inside Node: one pg-boss instance, background work off, like a worker process.
NODE_SCRIPT = r"""
import { pathToFileURL } from 'node:url';
import { resolve } from 'node:path';
const [mode, connectionString, schema, queue, total, batch] = JSON.parse(process.argv.at(-1));
const { PgBoss } = await import(pathToFileURL(resolve('node_modules/pg-boss/dist/index.js')).href);
const boss = new PgBoss({ connectionString, schema, supervise: false, schedule: false, migrate: false });
boss.on('error', (err) => console.error(err));
await boss.start();
await boss.getQueue(queue);  // warm the queue cache and the pool
const now = () => Number(process.hrtime.bigint()) / 1e9;
let done = 0;
let started;
if (mode === 'insert') {
  const chunks = [];
  for (let i = 0; i < total; i += batch) {
    chunks.push(Array.from({ length: Math.min(batch, total - i) }, (_, k) => ({ data: { n: i + k } })));
  }
  started = now();
  for (const chunk of chunks) {
    await boss.insert(queue, chunk);
    done += chunk.length;
  }
} else if (mode === 'fetch-ids' || mode === 'fetch-jobs') {
  started = now();
  for (;;) {
    const jobs = await boss.fetch(queue, { batchSize: batch });
    if (!jobs.length) break;
    await boss.complete(queue, mode === 'fetch-ids' ? jobs.map((j) => j.id) : jobs);
    done += jobs.length;
  }
} else if (mode === 'work') {
  let finish;
  const finished = new Promise((r) => { finish = r; });
  started = now();
  const options = {
    batchSize: batch, pollingIntervalSeconds: 0.5, burstWhenBatchFull: true, burstWhenReadyExceeds: 1
  };
  await boss.work(queue, options, async (jobs) => { done += jobs.length; if (done >= total) finish(); });
  await finished;
  // The last batch is completed after its handler returns.
  const db = boss.getDb();
  for (;;) {
    const { rows } = await db.executeSql(
      `SELECT count(*)::int AS n FROM ${schema}.job WHERE name = $1 AND state <> 'completed'`, [queue]);
    if (rows[0].n === 0) break;
    await new Promise((r) => setTimeout(r, 1));
  }
  await boss.offWork(queue);
} else {
  throw new Error(`unknown mode ${mode}`);
}
const seconds = now() - started;
await boss.stop({ graceful: false, wait: true });
process.stdout.write(JSON.stringify({ seconds, jobs: done }) + '\n');
"""


def node_rate(mode: str, url: str, total: int, batch: int, *, queue: str) -> float:
    """Jobs per second pg-boss reached in ``mode`` (``insert`` or one of NODE_DRAINS) on ``queue``,
    ``batch`` jobs at a time, timed inside Node."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGBOSS_")}
    result = subprocess.run(
        [str(NODE), "--input-type=module", "-e", NODE_SCRIPT, json.dumps([mode, url, SCHEMA, queue, total, batch])],
        cwd=PGBOSS_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"pg-boss {mode} failed:\n{result.stderr}")
    out = json.loads(result.stdout.strip().splitlines()[-1])
    if out["jobs"] != total:
        raise RuntimeError(f"pg-boss {mode} handled {out['jobs']} of {total} jobs")
    return out["jobs"] / out["seconds"]


def insert_backlog(boss: PgBoss, queue: str, jobs: int) -> None:
    """``jobs`` jobs with data ``{"n": 0}`` to ``{"n": jobs - 1}``, INSERT_BATCH per insert."""
    for start in range(0, jobs, INSERT_BATCH):
        count = min(INSERT_BATCH, jobs - start)
        boss.insert([JobRequest(queue, {"n": start + k}) for k in range(count)])


def on_a_server() -> None:
    """Make sure the benchmark has a PostgreSQL server: the one ``BENCH_ADMIN_DATABASE_URL``
    names, or else a throwaway one.

    Without that setting the script runs itself again under ``scripts/with_test_postgres.py``,
    which starts a server on a free port (fsync off, as the tests', so figures measure the
    code and not the disk), hands it over as ``TEST_ADMIN_DATABASE_URL`` and removes it
    however the run ends.
    """
    if os.environ.get("BENCH_ADMIN_DATABASE_URL") or os.environ.get("TEST_ADMIN_DATABASE_URL"):
        return
    os.execv(sys.executable, [sys.executable, str(WITH_TEST_POSTGRES), sys.executable, *sys.argv])


def admin_url() -> str:
    """The benchmark server's admin URL (``on_a_server`` has run)."""
    return os.environ.get("BENCH_ADMIN_DATABASE_URL") or os.environ["TEST_ADMIN_DATABASE_URL"]


def create_database(prefix: str) -> tuple[str, Callable[[], None]]:
    """A new, empty database named after ``prefix``: its URL, and a function that drops it."""
    server = admin_url()
    admin = Database(server)
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(3)}"
    admin.run(f'CREATE DATABASE "{name}"')
    url = server.rpartition("/")[0] + "/" + name

    def drop() -> None:
        admin.run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()

    return url, drop
