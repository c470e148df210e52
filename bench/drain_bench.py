"""drain against pg-boss 12.38's own workers, and its handler models against each other, in one run.

    .venv/bin/python bench/drain_bench.py [--jobs N] [--rounds R] [--pickups K] [--only SECTIONS]

``--only`` picks sections (comma-separated): throughput, async, cpu, stuck, pickup (default all).

Creates a scratch database (pg-boss's schema installed by pg-boss's CLI) and drops it at
the end. ``drain`` runs as deployed code: ``main.py`` served by functions-framework in a
subprocess, called over HTTP with ``DRAIN_TOKEN``; its handler is the shipped
``test-job``, whose real outputs (``{"echo": data}``) are stored.

* **Throughput**, jobs/s, a backlog of ``--jobs`` in one queue: one drain call
  (``budgetSeconds: 0``) timed end to end over HTTP, against pg-boss's fastest Node path
  on the same backlog — its ``fetch`` + ``complete`` loop (with ids, and with the fetched
  jobs, which fences like ours) and ``work()`` in burst mode, at batch sizes 10, 100 and
  500, each timed inside Node by a script run with the pinned Node, so nothing of a test
  harness sits between pg-boss and the database. The same backlog also goes through the
  batch twin (``test-job-batch``), whose no-op batch handler takes its jobs a batch at a
  time. pg-boss's fastest path is found first (each way, each batch size, once); then
  ``--rounds`` rounds in which the thread handler, the batch handler and that path take
  turns, so load from other processes falls on all three alike. Each round's figures,
  ratios and load average are printed, then the best of each and the median ratios.
* **Async**: ``--async-jobs`` jobs (default 1,000) of ``test-job-async`` awaiting 1 s of
  simulated I/O each, one call with ``DRAIN_CONCURRENCY`` 1000: wall time and the most
  threads the server process had, beside the same jobs on ``test-job`` (a thread each).
* **CPU**: ``--cpu-jobs`` jobs burning 0.2 s of CPU each in a pure-Python loop, through
  ``test-job`` (threads, taking turns on the GIL) and ``test-job-process`` (a worker
  process per CPU), taking turns: wall time of one call each, per round and best of
  ``--rounds``, and the ratio; the worker processes' ids show the pool kept across calls.
* **Stuck**: a ``test-job-process`` job that never returns (``"hang": true``), with
  ``expireInSeconds`` 2 and one retry: one call watches it be killed at its expiry,
  retried, killed again and failed; the worker processes before and after are listed.
* **Pickup latency**, ms from a job's insert to its claim (``started_on - created_on``,
  both the database's clock), p50/p95/p99 of ``--pickups`` jobs, each sent alone 20-120
  ms after the previous one was claimed, to a worker that waits: a drain call watching
  (LISTEN, the default; and polling, as through a transaction pooler) against a pg-boss
  worker with default settings (polls every 2 s) and with ``useListenNotify``.

Ratios: throughput ours/pg-boss (above 1 means drain is faster), latency pg-boss/ours
(above 1 means drain picks up sooner). Figures are only comparable at a similar load
average (printed beside them): on a busy machine every process of the run shares the
CPU time the kernel gives the run's session.

Runs on the server ``BENCH_ADMIN_DATABASE_URL`` names, or a throwaway one (``bench.common``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import NODE_DRAINS, SCHEMA, create_database, insert_backlog, node_rate, on_a_server  # noqa: E402
from shared.db import Database  # noqa: E402
from shared.handlers import load  # noqa: E402
from shared.pgboss.client import PgBoss  # noqa: E402
from shared.pgboss.models import JobRequest, SendOptions  # noqa: E402
from tests.support.node_boss import NodeBoss, migrate  # noqa: E402

QUEUE = "test-job"
BATCH_QUEUE = "test-job-batch"
ASYNC_QUEUE = "test-job-async"
PROCESS_QUEUE = "test-job-process"
TOKEN = "bench-drain-token"
NODE_BATCHES = (10, 100, 500)

# -- drain as deployed: functions-framework serving main.py -------------------------------------


class DrainServer:
    def __init__(self, url: str, **settings: str) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DRAIN_", "PGBOSS_"))},
            "DATABASE_URL": url,
            "PGBOSS_SCHEMA": SCHEMA,
            "DRAIN_TOKEN": TOKEN,
            "DRAIN_TIMEOUT_SECONDS": "600",
            "DRAIN_MAX_JOBS": "100000",
            "LOG_LEVEL": "WARNING",
            **settings,
        }
        self.process = subprocess.Popen(
            [
                str(ROOT / ".venv/bin/functions-framework"),
                "--source",
                "main.py",
                "--target",
                "drain",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                self.call({"budgetSeconds": 0, "maxJobs": 1})  # creates the queue, opens the connection
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"drain did not start:\n{self.process.stderr.read() if self.process.stderr else ''}"
                    ) from None
                time.sleep(0.2)

    def call(self, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=900) as response:
            return json.loads(response.read())

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# -- the bench ------------------------------------------------------------------------------------


class Bench:
    def __init__(self, url: str, jobs: int) -> None:
        self.url = url
        self.jobs = jobs
        self.db = Database(url, statement_timeout_ms=600_000)
        self.boss = PgBoss(self.db, SCHEMA)

    def reset(self, queue: str = QUEUE) -> None:
        self.db.run(f"DELETE FROM {SCHEMA}.job WHERE name = :q", {"q": queue})
        self.db.run(f"VACUUM (ANALYZE) {SCHEMA}.job_common")

    def fill(self, queue: str = QUEUE) -> None:
        self.reset(queue)
        insert_backlog(self.boss, queue, self.jobs)
        self.db.run(f"VACUUM (ANALYZE) {SCHEMA}.job_common")
        # pg-boss's work() bursts past its polling interval only while its cached queue stats
        # say jobs are ready (its monitor, off here, would fill them in): say so up front.
        self.db.run(f"UPDATE {SCHEMA}.queue SET ready_count = :n WHERE name = :q", {"n": self.jobs, "q": queue})

    def drain_rate(self, server: DrainServer, queue: str = QUEUE) -> float:
        started = time.perf_counter()
        answer = server.call({"budgetSeconds": 0, "maxJobs": self.jobs, "queues": [queue]})
        seconds = time.perf_counter() - started
        stored = self.completed_with_output(queue)
        if answer["completed"] != self.jobs or stored != self.jobs:
            raise RuntimeError(f"drain completed {answer['completed']} ({stored} stored) of {self.jobs}: {answer}")
        return self.jobs / seconds

    def completed_with_output(self, queue: str) -> int:
        return int(
            self.db.run(
                f"SELECT count(*) AS n FROM {SCHEMA}.job WHERE name = :q AND state = 'completed' "
                "AND output->'echo'->>'n' IS NOT NULL",
                {"q": queue},
            )[0]["n"]
        )

    # -- handler models -------------------------------------------------------------------

    def one_call(self, server: DrainServer, queue: str, data: list[Any]) -> tuple[float, int, dict[str, Any]]:
        """Send ``data`` to ``queue``, then time one drain call of it: seconds, most threads, answer."""
        self.reset(queue)
        self.boss.insert([JobRequest(queue, item) for item in data])
        with ThreadCount(server.process.pid) as threads:
            started = time.perf_counter()
            answer = server.call({"budgetSeconds": 0, "maxJobs": len(data), "queues": [queue]})
            seconds = time.perf_counter() - started
        if answer["completed"] != len(data) or self.completed_with_output(queue) != len(data):
            raise RuntimeError(f"drain completed {answer['completed']} of {len(data)} on {queue}: {answer}")
        return seconds, threads.most, answer

    def node_fastest(self) -> tuple[str, int]:
        """pg-boss's fastest way to drain the backlog and its batch size, each tried once."""
        rates = {}
        for batch in NODE_BATCHES:
            for mode in NODE_DRAINS:
                self.fill()
                rates[(mode, batch)] = node_rate(mode, self.url, self.jobs, batch, queue=QUEUE)
        return max(rates, key=rates.__getitem__)

    # -- pickup ---------------------------------------------------------------------------

    def pickups(self, count: int, waiting: Callable[[], Any], *, phase: float = 0.0) -> list[float]:
        """Latencies of ``count`` jobs sent one at a time to an idle ``waiting`` worker.

        Each job is sent alone, 20-120 ms after the previous one was claimed, so every
        figure is a pickup by a waiting worker, never a job queued behind another. A
        worker that polls on a fixed period gets ``phase`` more seconds of random pause,
        so sends do not line up with its polls (which would flatter or wrong it).
        """
        self.reset()
        latencies = []
        with waiting():
            time.sleep(1.0)  # let the worker settle into waiting
            for n in range(count):
                (job_id,) = self.boss.insert([JobRequest(QUEUE, {"pickup": n})])
                latencies.append(self._claimed_after(job_id))
                time.sleep(random.uniform(0.02, 0.12) + random.uniform(0, phase))
        return sorted(latencies)

    def _claimed_after(self, job_id: str | None, timeout: float = 30.0) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.db.run(
                f"SELECT extract(epoch FROM started_on - created_on) * 1000 AS ms FROM {SCHEMA}.job "
                "WHERE name = :q AND id = :id::uuid AND started_on IS NOT NULL",
                {"q": QUEUE, "id": job_id},
            )
            if rows:
                return float(rows[0]["ms"])
            time.sleep(0.002)
        raise RuntimeError(f"job {job_id} was not picked up within {timeout:.0f} s")

    @contextmanager
    def drain_watching(self, server: DrainServer, seconds: float) -> Iterator[None]:
        answer: dict[str, Any] = {}
        call = threading.Thread(target=lambda: answer.update(server.call({"budgetSeconds": seconds})))
        call.start()
        yield
        call.join()
        if "completed" not in answer:
            raise RuntimeError("the watching drain call failed")

    @contextmanager
    def node_worker(self, **options: Any) -> Iterator[None]:
        with NodeBoss(self.url, SCHEMA, supervise=False, schedule=False, migrate=False, **options) as node:
            node.work(QUEUE, {"behavior": "complete"})  # pg-boss's defaults: batch 1, polls every 2 s
            yield
            node.off_work(QUEUE)


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return sorted(found)


def worker_pids(server: DrainServer) -> list[int]:
    """The drain process's own children, its worker processes (the server is gunicorn's arbiter)."""
    return sorted(pid for gunicorn_worker in children(server.process.pid) for pid in children(gunicorn_worker))


class ThreadCount:
    """The most threads the server's drain process had while the block ran (sampled every 10 ms)."""

    def __init__(self, server_pid: int) -> None:
        self._pids = children(server_pid)  # gunicorn's worker: the process that runs drain
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self.most = 0

    def _sample(self) -> None:
        while True:
            for pid in self._pids:
                self.most = max(self.most, len(list(Path(f"/proc/{pid}/task").iterdir())))
            if self._stop.wait(0.01):
                return

    def __enter__(self) -> ThreadCount:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def percentiles(values: list[float]) -> tuple[float, float, float]:
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[94], cuts[98]


SECTIONS = ("throughput", "async", "cpu", "stuck", "pickup")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5_000, help="backlog per throughput run (default 5,000)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the throughput and cpu figures (default 2)")
    parser.add_argument("--pickups", type=int, default=100, help="jobs sent one at a time per latency figure")
    parser.add_argument(
        "--node-default-pickups",
        type=int,
        default=40,
        help="pickups for pg-boss's default worker, which waits up to 2 s for each (default 40)",
    )
    parser.add_argument("--concurrency", default="250", help="DRAIN_CONCURRENCY for the throughput run")
    parser.add_argument("--batch", default="250", help="DRAIN_BATCH_SIZE for the throughput run")
    parser.add_argument("--async-jobs", type=int, default=1_000, help="jobs awaiting 1 s each (default 1,000)")
    parser.add_argument("--cpu-jobs", type=int, default=20, help="jobs burning 0.2 s of CPU each (default 20)")
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"sections to run, of {', '.join(SECTIONS)}")
    args = parser.parse_args()
    only = set(args.only.split(","))
    if only - set(SECTIONS):
        parser.error(f"unknown sections: {', '.join(sorted(only - set(SECTIONS)))}")
    on_a_server()
    random.seed(7)

    url, drop = create_database("drain_bench")
    servers: list[DrainServer] = []

    def server(**settings: str) -> DrainServer:
        servers.append(DrainServer(url, **settings))
        return servers[-1]

    try:
        migrate(url, SCHEMA)
        bench = Bench(url, args.jobs)
        print("drain (main.py under functions-framework, over HTTP) vs pg-boss 12.38 (Node), one database\n")
        if "throughput" in only:
            threads = server(DRAIN_CONCURRENCY=args.concurrency, DRAIN_BATCH_SIZE=args.batch)
            throughput(bench, threads, server(DRAIN_CONCURRENCY="1000"), args)
        if "async" in only:
            waiting(bench, server(DRAIN_CONCURRENCY="1000", DRAIN_BATCH_SIZE="1000"), args.async_jobs)
        if "cpu" in only:
            cpu_bound(bench, server(DRAIN_CONCURRENCY="10"), args.cpu_jobs, args.rounds)
        if "stuck" in only:
            stuck(bench, server(DRAIN_LISTEN_POLL_SECONDS="0.2"))
        if "pickup" in only:
            pickup(bench, server(), server(DRAIN_LISTEN="off"), args)
    finally:
        for running in servers:
            running.close()
        drop()


def throughput(bench: Bench, fast: DrainServer, batching: DrainServer, args: argparse.Namespace) -> None:
    mode, batch = bench.node_fastest()
    contenders: dict[str, tuple[str, Callable[[], float]]] = {
        "thread": (QUEUE, lambda: bench.drain_rate(fast)),
        "batch": (BATCH_QUEUE, lambda: bench.drain_rate(batching, BATCH_QUEUE)),
        "pg-boss": (QUEUE, lambda: node_rate(mode, bench.url, bench.jobs, batch, queue=QUEUE)),
    }
    print(f"throughput, {args.jobs:,}-job backlog (jobs/s), outputs stored; rounds take turns")
    print(
        f"  thread: drain, thread handler {QUEUE} (concurrency {args.concurrency}, batch {args.batch})\n"
        f"  batch: drain, batch handler {BATCH_QUEUE} (batches of {load().get(BATCH_QUEUE).batch_size}, "
        "concurrency 1000)\n"
        f"  pg-boss: its fastest path, {mode} at batch {batch} ({NODE_DRAINS[mode]})"
    )
    print(f"  {'':<10}{'thread':>9}{'batch':>9}{'pg-boss':>9}{'thread/pg':>11}{'batch/pg':>10}{'load':>7}")
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for round_ in range(1, args.rounds + 1):
        for name, (queue, run) in contenders.items():
            bench.fill(queue)
            rates[name].append(run())
        thread, batched, theirs = (rates[name][-1] for name in contenders)
        print(
            f"  {f'round {round_}':<10}{thread:>9,.0f}{batched:>9,.0f}{theirs:>9,.0f}"
            f"{thread / theirs:>10.2f}x{batched / theirs:>9.2f}x{os.getloadavg()[0]:>7.1f}"
        )
    thread, batched, theirs = (max(rates[name]) for name in contenders)
    print(
        f"  {'best':<10}{thread:>9,.0f}{batched:>9,.0f}{theirs:>9,.0f}{thread / theirs:>10.2f}x{batched / theirs:>9.2f}x"
    )
    medians = [
        statistics.median(ours / pg for ours, pg in zip(rates[name], rates["pg-boss"], strict=True))
        for name in ("thread", "batch")
    ]
    print(f"  {'median of the rounds':<37}{medians[0]:>10.2f}x{medians[1]:>9.2f}x\n")


def waiting(bench: Bench, wide: DrainServer, count: int) -> None:
    data = [{"n": n, "sleep": 1} for n in range(count)]
    print(f"async: {count:,} jobs awaiting 1 s of I/O each, one call, DRAIN_CONCURRENCY 1000")
    for queue, label in ((ASYNC_QUEUE, "async handler"), (QUEUE, "thread handler")):
        seconds, threads, _ = bench.one_call(wide, queue, data)
        print(f"  {f'{label} {queue}':<40}{seconds:>8.2f} s   most threads in the server: {threads:,}")
    print()


def cpu_bound(bench: Bench, server: DrainServer, count: int, rounds: int) -> None:
    data = [{"n": n, "burn": 0.2} for n in range(count)]
    timings: dict[str, list[float]] = {QUEUE: [], PROCESS_QUEUE: []}
    workers = worker_pids(server)
    print(f"cpu: {count} jobs of 0.2 s pure-Python CPU each, one call, rounds take turns (s), {os.cpu_count()} CPUs")
    print(f"  {'':<10}{'threads':>9}{'processes':>11}{'ratio':>8}{'load':>7}")
    for round_ in range(1, rounds + 1):  # taking turns, so load from elsewhere falls on both alike
        for queue in timings:
            timings[queue].append(bench.one_call(server, queue, data)[0])
        threads, processes = timings[QUEUE][-1], timings[PROCESS_QUEUE][-1]
        print(
            f"  {f'round {round_}':<10}{threads:>9.2f}{processes:>11.2f}{threads / processes:>7.2f}x"
            f"{os.getloadavg()[0]:>7.1f}"
        )
    threads, processes = min(timings[QUEUE]), min(timings[PROCESS_QUEUE])
    print(f"  {'best':<10}{threads:>9.2f}{processes:>11.2f}{threads / processes:>7.2f}x")
    print(f"  worker processes: {workers} before, {worker_pids(server)} after\n")


def stuck(bench: Bench, server: DrainServer) -> None:
    bench.reset(PROCESS_QUEUE)
    before = worker_pids(server)
    options = SendOptions(expire_in_seconds=2, retry_limit=1, retry_delay=1, retry_backoff=False)
    (job_id,) = bench.boss.insert([JobRequest(PROCESS_QUEUE, {"hang": True}, options)])
    started = time.perf_counter()
    answer = server.call({"budgetSeconds": 8, "queues": [PROCESS_QUEUE]})
    seconds = time.perf_counter() - started
    after = worker_pids(server)
    row = bench.db.run(
        f"SELECT state::text AS state, retry_count, output->>'name' AS error FROM {SCHEMA}.job WHERE id = :id::uuid",
        {"id": job_id},
    )[0]
    gone = [pid for pid in before if pid not in after and not Path(f"/proc/{pid}").exists()]
    stats = answer["queues"][PROCESS_QUEUE]
    print("stuck: a process handler in an endless loop, expireInSeconds 2, retryLimit 1, one call of 8 s")
    print(f"  timed out {stats['timed_out']}, retried {stats['retried']}, failed {stats['failed']} ({seconds:.1f} s)")
    print(f"  job: {row['state']} after {row['retry_count'] + 1} attempts, error {row['error']}")
    print(f"  worker pids before {before}, after {after}; killed and gone: {gone}\n")


def pickup(bench: Bench, default: DrainServer, polling: DrainServer, args: argparse.Namespace) -> None:
    # A watching call must outlast the sends: each pickup plus the pause after it.
    listening, polled = min(args.pickups * 0.2 + 6, 590), min(args.pickups * 0.5 + 6, 590)
    slow = min(args.pickups, args.node_default_pickups)
    rows = {
        "drain (LISTEN, default)": bench.pickups(args.pickups, lambda: bench.drain_watching(default, listening)),
        "drain (polling, DRAIN_POLL_SECONDS=0.2)": bench.pickups(
            args.pickups, lambda: bench.drain_watching(polling, polled), phase=0.2
        ),
        f"pg-boss work(), defaults (n={slow})": bench.pickups(slow, bench.node_worker, phase=2.0),
        "pg-boss work(), useListenNotify": bench.pickups(args.pickups, lambda: bench.node_worker(useListenNotify=True)),
    }
    print(f"pickup latency, jobs sent one at a time to a waiting worker (ms from insert to claim, n={args.pickups})")
    print(f"  {'':<42}{'p50':>9}{'p95':>9}{'p99':>9}")
    figures = {name: percentiles(values) for name, values in rows.items()}
    for name, (p50, p95, p99) in figures.items():
        print(f"  {name:<42}{p50:>9.1f}{p95:>9.1f}{p99:>9.1f}")
    ours50, _, ours99 = figures["drain (LISTEN, default)"]
    for name in (f"pg-boss work(), defaults (n={slow})", "pg-boss work(), useListenNotify"):
        p50, _, p99 = figures[name]
        print(f"  ratio {name} / drain (LISTEN): p50 {p50 / ours50:,.1f}x, p99 {p99 / ours99:,.1f}x")
    print(
        f"  targets for drain: p50 <= 50 ms ({'met' if ours50 <= 50 else 'MISSED'}), "
        f"p99 <= 250 ms ({'met' if ours99 <= 250 else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
