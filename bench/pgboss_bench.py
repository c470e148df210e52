"""Our pg-boss client against pg-boss 12.38 itself, and against the database's own ceiling.

    .venv/bin/python bench/pgboss_bench.py [--jobs N] [--rounds R] [--batches 1,10,100]

Creates a scratch database (pg-boss's schema installed by pg-boss's CLI), runs every
measurement on one standard queue in ``job_common`` with a small JSON payload, and drops the
database at the end. Printed side by side, jobs per second, best of ``--rounds``:

* insert: batches of 1,000 — ours ``PgBoss.insert`` / pg-boss ``insert()``.
* drain at batch sizes 1, 10 and 100: fetch, a no-op handler, complete.
  Ours: a ``fetch``/``complete`` loop. pg-boss: the fastest of its ``fetch`` + ``complete``
  loop (with ids, and with the fetched jobs, which fences like ours) and ``work()`` in burst
  mode, each timed inside Node by a small script run with the pinned Node, so nothing of
  the test harness sits between pg-boss and the database.
* ceiling: our rendered statements driven as fast as possible over the same kind of
  connection (pg8000, TCP_NODELAY, named prepared statements as the database layer uses
  on a direct connection), with no per-job Python beyond building the documents: what
  the database and the driver's wire protocol allow. (Behind Supabase's transaction
  pooler the database layer falls back to unnamed statements, three round trips each.)

Ratios: ours/pg-boss (target ≥ 1.0 at every size) and ours/ceiling (target ≥ 0.8 at 100).
Every queue is refilled, and the table vacuumed, before each timed run, so no run inherits
another's dead rows; the contenders of a row take turns, round by round, so load from
other processes falls on all of them alike.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pg8000.native

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


from bench.common import (  # noqa: E402
    INSERT_BATCH,
    NODE_DRAINS,
    SCHEMA,
    create_database,
    insert_backlog,
    node_rate,
    on_a_server,
)
from shared.db import ConnectionParams, Database  # noqa: E402
from shared.pgboss import sql  # noqa: E402
from shared.pgboss.client import PgBoss  # noqa: E402
from tests.support.node_boss import migrate  # noqa: E402

QUEUE = "bench"


@dataclass
class Bench:
    url: str
    jobs: int
    rounds: int
    db: Database = field(init=False)
    boss: PgBoss = field(init=False)
    raw: pg8000.native.Connection = field(init=False)

    def __post_init__(self) -> None:
        self.db = Database(self.url, statement_timeout_ms=600_000)
        self.boss = PgBoss(self.db, SCHEMA)
        self.boss.create_queue(QUEUE)
        self.raw = _driver_connection(self.url)

    # -- preparing ------------------------------------------------------------------

    def reset(self) -> None:
        self.db.run(f"DELETE FROM {SCHEMA}.job WHERE name = :q", {"q": QUEUE})
        self.db.run(f"VACUUM (ANALYZE) {SCHEMA}.job_common")
        # pg-boss's work() bursts past its polling interval only while its cached queue stats
        # say jobs are ready; its monitor (off here) would fill them in. Say so up front, so
        # work() gets its fastest path at every batch size.
        self.db.run(f"UPDATE {SCHEMA}.queue SET ready_count = :n WHERE name = :q", {"n": self.jobs, "q": QUEUE})

    def fill(self) -> None:
        self.reset()
        insert_backlog(self.boss, QUEUE, self.jobs)
        self.db.run(f"VACUUM (ANALYZE) {SCHEMA}.job_common")

    def race(self, contenders: dict[str, tuple[Callable[[], None], Callable[[], float]]]) -> dict[str, float]:
        """Best jobs/s of each contender over the rounds, run interleaved: every round runs
        each contender once, so load that comes and goes (a shared 2-core box) hits all alike."""
        rates: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(self.rounds):
            for name, (prepare, run) in contenders.items():
                prepare()
                rates[name].append(run())
        return {name: max(values) for name, values in rates.items()}

    # -- ours -----------------------------------------------------------------------

    def ours_insert(self) -> float:
        started = time.perf_counter()
        insert_backlog(self.boss, QUEUE, self.jobs)
        return self.jobs / (time.perf_counter() - started)

    def ours_drain(self, batch: int) -> float:
        boss = self.boss
        done = 0
        started = time.perf_counter()
        while True:
            jobs = boss.fetch(QUEUE, batch)
            if not jobs:
                break
            boss.complete(QUEUE, [(job, None) for job in jobs])
            done += len(jobs)
        elapsed = time.perf_counter() - started
        assert done == self.jobs, f"drained {done} of {self.jobs}"
        return done / elapsed

    # -- the ceiling: the same statements, no client around them ----------------------

    def raw_insert(self, insert: Callable[..., list[list[object]]]) -> float:
        documents = [
            json.dumps([{"name": QUEUE, "data": {"n": start + k}} for k in range(min(INSERT_BATCH, self.jobs - start))])
            for start in range(0, self.jobs, INSERT_BATCH)
        ]
        channel = self.boss.notify_channel
        connection = self.raw
        started = time.perf_counter()
        for document in documents:
            insert(connection, jobs=document, channel=channel)
        return self.jobs / (time.perf_counter() - started)

    @staticmethod
    def _named(connection: object, statement: str) -> Callable[..., list[list[object]]]:
        """``statement`` as a named prepared statement: one round trip per execution."""
        prepared = connection.prepare(statement)  # type: ignore[attr-defined]

        def run(_connection: object, **params: object) -> list[list[object]]:
            return prepared.run(**params) or []

        return run

    def raw_insert_ceiling(self) -> float:
        return self.raw_insert(self._named(self.raw, sql.insert_jobs(self.boss.capabilities, SCHEMA, debounce=False)))

    def raw_drain_ceiling(self, batch: int) -> float:
        caps = self.boss.capabilities
        return self.raw_drain(
            batch,
            self._named(self.raw, sql.fetch_jobs(caps, SCHEMA, policy="standard", grouped=False, detailed=False)),
            self._named(self.raw, sql.complete_jobs(caps, SCHEMA)),
        )

    def raw_drain(
        self,
        batch: int,
        fetch: Callable[..., list[list[object]]],
        complete: Callable[..., list[list[object]]],
    ) -> float:
        done = 0
        connection = self.raw
        started = time.perf_counter()
        while True:
            rows = fetch(connection, name=QUEUE, limit=batch, group_limit=None, group_tiers=None)
            if not rows:
                break
            # id and retry_count are the first and fourth columns the fetch returns.
            settle = ",".join(f'{{"id":"{row[0]}","retry_count":{row[3]}}}' for row in rows)
            complete(connection, name=QUEUE, jobs=f"[{settle}]")
            done += len(rows)
        elapsed = time.perf_counter() - started
        assert done == self.jobs, f"drained {done} of {self.jobs}"
        return done / elapsed

    # -- pg-boss ----------------------------------------------------------------------

    def theirs_insert(self) -> float:
        return node_rate("insert", self.url, self.jobs, INSERT_BATCH, queue=QUEUE)

    def theirs_drain(self, mode: str, batch: int) -> float:
        return node_rate(mode, self.url, self.jobs, batch, queue=QUEUE)


def _driver_connection(url: str) -> pg8000.native.Connection:
    """The driver alone, for the ceiling: connected as ``Database`` connects (Nagle off)."""
    params = ConnectionParams.from_url(url)
    sock = socket.create_connection((params.host, params.port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return pg8000.native.Connection(
        user=params.user,
        password=params.password,
        host=params.host,
        database=params.database,
        sock=sock,
        ssl_context=params.ssl_context,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000, help="jobs per timed run (default 10,000)")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs per figure; the best counts")
    parser.add_argument("--batches", default="1,10,100", help="drain batch sizes (default 1,10,100)")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    on_a_server()

    url, drop = create_database("pgboss_bench")
    try:
        migrate(url, SCHEMA)
        bench = Bench(url, args.jobs, args.rounds)
        print(f"pg-boss 12.38 vs ours: {args.jobs:,} jobs per run, best of {args.rounds}, one standard queue\n")
        header = f"{'':<18}{'ours':>10}{'pg-boss':>10}{'ceiling':>10}{'ours/pg-boss':>14}{'ours/ceiling':>14}"
        print(header)
        print("-" * len(header))
        notes = []

        rates = bench.race(
            {
                "ours": (bench.reset, bench.ours_insert),
                "pg-boss": (bench.reset, bench.theirs_insert),
                "ceiling": (bench.reset, bench.raw_insert_ceiling),
            }
        )
        print(_line(f"insert x{INSERT_BATCH:,}", rates["ours"], rates["pg-boss"], rates["ceiling"]))
        for batch in batches:
            contenders = {"ours": (bench.fill, lambda batch=batch: bench.ours_drain(batch))}
            for mode in NODE_DRAINS:
                contenders[mode] = (
                    bench.fill,
                    lambda mode=mode, batch=batch: bench.theirs_drain(mode, batch),
                )
            contenders["ceiling"] = (bench.fill, lambda batch=batch: bench.raw_drain_ceiling(batch))
            rates = bench.race(contenders)
            fastest = max(NODE_DRAINS, key=rates.__getitem__)
            print(_line(f"drain batch {batch}", rates["ours"], rates[fastest], rates["ceiling"]))
            notes.append(
                f"pg-boss at batch {batch}: fastest was {NODE_DRAINS[fastest]} ("
                + ", ".join(f"{mode} {rates[mode]:,.0f}" for mode in NODE_DRAINS)
                + ")"
            )
        print("\njobs/s, best of the rounds.")
        print("\n".join(notes))
        bench.db.close()
    finally:
        drop()


def _line(label: str, ours: float, theirs: float, ceiling: float) -> str:
    return f"{label:<18}{ours:>10,.0f}{theirs:>10,.0f}{ceiling:>10,.0f}{ours / theirs:>13.2f}x{ours / ceiling:>13.2f}x"


if __name__ == "__main__":
    main()
