"""The statements of pg-boss's background work: supervision, maintenance, flows and cron.

A Node instance started with ``supervise: true`` / ``schedule: true`` runs these passes
on timers; ``shared.pgboss.supervisor`` runs the same passes from a scheduled call.
Each statement names the pg-boss 12.38 (schema 46) behaviour it mirrors. Like
``shared.pgboss.sql`` they name the schema only through ``render`` (``{schema}``) and
take bound ``:parameters``; job rows are addressed through the partitioned parent
``{schema}.job`` with a ``name`` predicate.

Who runs a pass is decided as pg-boss decides it, so a Node supervisor and any number
of our instances can run side by side:

* interval claims on ``version`` (``flow_on``, ``cron_on``): one UPDATE that only
  matches when the column is at least the interval old, stamped with ``job_now()``;
* per-queue claims on ``queue`` (``monitor_claim_on``, ``maintain_on``), locking the
  due rows in name order and skipping rows another session holds;
* every write batch under the transaction advisory lock pg-boss takes for the same
  sweep of the same table (``sql.advisory_lock``).
"""

from __future__ import annotations

import math

from shared.pgboss.sql import quoted_schema


def render(statement: str, schema: str, *, job_now: bool = True) -> str:
    """The statement with the schema filled in: ``{schema}`` as the quoted identifier,
    ``{schema_name}`` as a string literal (for DO blocks, which take no parameters); both
    after ``quoted_schema`` validated the name as a plain lower-case one. Without
    ``job_now`` (schemas before 42, where pg-boss reads the clock with ``now()``) every
    ``job_now()`` becomes ``now()``."""
    if not job_now:
        statement = statement.replace("{schema}.job_now()", "now()")
    identifier = quoted_schema(schema)
    return statement.replace("{schema}", identifier).replace("{schema_name}", f"'{schema}'")


# A claim is due once its column is at least :seconds old; a column never stamped
# counts as a week old, so the first claim always goes through.
_DUE = (
    "EXTRACT(EPOCH FROM ({{schema}}.job_now() - COALESCE({column}, {{schema}}.job_now() - interval '1 week')))"
    " >= CAST(:seconds AS float8)"
)


def _claim_version(column: str) -> str:
    """pg-boss 12.38 trySetTimestamp(): the shared interval claim on ``version``."""
    due = _DUE.format(column=column)
    return f"""
UPDATE {{schema}}.version SET {column} = {{schema}}.job_now()
WHERE {due}
RETURNING true AS claimed
"""


# pg-boss 12.38 trySetFlowTime(): the flow resolver's claim (every 5 s by default).
CLAIM_FLOW = _claim_version("flow_on")

# pg-boss 12.38 trySetCronTime(): the timekeeper's claim, answering on both outcomes with
# the stamp it replaced (when a pass last ran; the gap a schedule's `missed` policy
# catches up over). The prior value comes from a CTE, which reads the statement's
# snapshot, not the row the UPDATE leaves.
CLAIM_CRON = f"""
WITH prior AS (
  SELECT cron_on FROM {{schema}}.version
), claim AS (
  UPDATE {{schema}}.version SET cron_on = {{schema}}.job_now()
  WHERE {_DUE.format(column="cron_on")}
  RETURNING true
)
SELECT prior.cron_on AS prior_cron_on, EXISTS (SELECT 1 FROM claim) AS claimed,
  {{schema}}.job_now() AS now
FROM prior
"""

# Every queue with the table its jobs live in, in name order (pg-boss's getQueues()).
QUEUE_TABLES = """
SELECT name, table_name FROM {schema}.queue ORDER BY name
"""

# pg-boss 12.38 trySetQueueMonitorTime(): claim the due queues of a chunk for the
# monitor. A queue never claimed falls back to monitor_on. refresh_stats is false while
# version.monitor_backoff_on (the vacuum back-off Node sets) is in the future.
CLAIM_MONITOR = f"""
WITH due AS (
  SELECT name FROM {{schema}}.queue
  WHERE name = ANY(CAST(:names AS text[]))
    AND {_DUE.format(column="COALESCE(monitor_claim_on, monitor_on)")}
  ORDER BY name FOR NO KEY UPDATE SKIP LOCKED
)
UPDATE {{schema}}.queue SET monitor_claim_on = {{schema}}.job_now()
FROM due
WHERE queue.name = due.name
RETURNING queue.name,
  NOT EXISTS (SELECT 1 FROM {{schema}}.version WHERE monitor_backoff_on > {{schema}}.job_now())
    AS refresh_stats
"""

# Throughput counting (pg-boss's persistQueueStats): each counted pass covers the window
# from the queue's delta_on to now minus DELTA_LAG (10 s, so a job stamped before the pass
# but committed after it still lands in a later window). A window that would start more
# than :reset_seconds before its end starts afresh instead (null start: nothing counted).
_WINDOW_END = "({schema}.job_now() - interval '10 seconds')"
_WINDOW_START = (
    "(CASE WHEN {alias}.delta_on > " + _WINDOW_END + " - CAST(:reset_seconds AS float8) * interval '1s'"
    " THEN {alias}.delta_on END)"
)

# Wait and run times go into 48 log-spaced slots: slot 0 under 10 ms, then bins growing by
# sqrt(2), the last one open-ended; a wait slot and a run slot travel packed as wait * 64 +
# run. The constants are written as pg-boss writes them (shortest float text), so a time
# on a bin edge falls in the same slot.
LATENCY_SLOTS = 48
_LATENCY_PACK = 64
_LN_MIN = repr(math.log(0.01))
_LN_STEP = repr(math.log(2) / 2)
_EMPTY_BINS = "'{" + ",".join(["NULL"] * LATENCY_SLOTS) + "}'::int[]"


def _latency_slot(seconds: str) -> str:
    raw = f"floor((ln(GREATEST(({seconds})::float8, 0.001::float8)) - {_LN_MIN}::float8) / {_LN_STEP}::float8)::int + 1"
    return f"LEAST(GREATEST({raw}, 0), {LATENCY_SLOTS - 1})"


_WAIT_SECONDS = "date_part('epoch', (j.started_on - GREATEST(j.created_on, j.start_after)))"
_RUN_SECONDS = "date_part('epoch', (j.completed_on - j.started_on))"


def _histogram(slot: str) -> str:
    """One histogram of the packed pairs in ``latency``: every slot in order, null where empty."""
    return f"""(SELECT array_agg(c.n ORDER BY s.slot)
      FROM generate_series(0, {LATENCY_SLOTS - 1}) AS s(slot)
      LEFT JOIN (SELECT {slot} AS slot, sum(n)::int AS n
                 FROM unnest(latency.ps, latency.ns) AS u(p, n) GROUP BY 1) c ON c.slot = s.slot)"""


# The windows a true-up may still revise (pg-boss's trueUpSettled/trueUpWindows): snapshots
# captured in the last two hours whose window ends after the anchor h -- the newest window
# end at least an hour old (or one that started afresh), but never before the first window
# end inside the queue's shortest retention, since the recount only sees rows that exist.
_TRUE_UP_ANCHOR = "(s.delta_on <= {schema}.job_now() - interval '1 hour' OR s.delta_seconds IS NULL)"
_TRUE_UP_FLOOR = (
    "s.delta_on >= {schema}.job_now() - (CASE WHEN {q}.deletion_seconds > 0"
    " AND {q}.deletion_seconds < {q}.retention_seconds THEN {q}.deletion_seconds"
    " ELSE {q}.retention_seconds END) * interval '1s'"
)
_TRUE_UP_REACH = "s.captured_on >= {schema}.job_now() - 2 * interval '1 hour' AND s.delta_on IS NOT NULL"


def _anchor_at(b: str, f: str) -> str:
    return f"CASE WHEN {f} IS NULL OR {f} > {b} THEN {f} ELSE {b} END"


# The end of both cached-count statements: the stats written to the claimed queues
# (locked in name order), monitor_on stamped, and the ready count prepended to
# ready_history, capped at 60. Plain text: statement() fills in {schema}.
_COUNTS_WRITE_BACK = """
  singletons_active = stats.singletons_active,
  monitor_on = {schema}.job_now(),
  ready_history = (
    SELECT COALESCE(array_agg(v ORDER BY ord), '{}'::int[])
    FROM (
      SELECT v, ord FROM (
        SELECT COALESCE(stats.ready, 0)::int AS v, 0::bigint AS ord
        UNION ALL
        SELECT h.v, h.ord FROM unnest(COALESCE(queue.ready_history, '{}'::int[])) WITH ORDINALITY AS h(v, ord)
      ) merged
      ORDER BY ord LIMIT 60
    ) capped
  )
FROM (
  SELECT name FROM {schema}.queue
  WHERE name = ANY(CAST(:names AS text[])) AND (SELECT got FROM lock)
    AND (SELECT count(*) FROM stats) >= 0
  ORDER BY name FOR NO KEY UPDATE
) q
LEFT JOIN stats ON stats.name = q.name
WHERE queue.name = q.name AND (SELECT got FROM lock)
""".strip("\n")


def _refresh_queue_counts(throughput: bool) -> str:
    """pg-boss 12.38 cacheQueueStats() for the claimed queues of a chunk.

    The cached counts getQueue()/getQueues() report, retained_count/retained_on/total_count
    carried forward from the jobs finished since retained_on (up to 10 s ago, pg-boss's
    DELTA_LAG), singletons_active, monitor_on, and the newest ready count prepended to
    ready_history (kept to 60). Like pg-boss it takes the 'queue-stats' lock with try: when
    another instance holds it, nothing is counted and the claim is handed back so the next
    pass of any instance takes the queues again.

    With ``throughput`` (persistQueueStats) it also counts each queue's window since
    delta_on: jobs created, completed and failed in it, the wait and run histograms of the
    jobs that finished in it, the age of the oldest ready job, and whether the windows
    already recorded in queue_stats now hold fewer jobs than the table does (true_up: a
    job committed after its window was counted). Without it those columns are left to a
    pass that counts, as pg-boss leaves them.
    """
    end = _WINDOW_END
    counters_select = counters_join = counters_lateral = counters_set = counters_return = ""
    if throughput:
        counters_select = f"""
    counters.created_delta, counters.completed_delta, counters.failed_delta,
    {_histogram(f"floor(p / {_LATENCY_PACK}.0)::int")} AS wait_bins,
    {_histogram(f"(p % {_LATENCY_PACK})::int")} AS run_bins,
    counters.ready_oldest_seconds,
    COALESCE(counters.recount > counters.settled, false) AS true_up,"""
        counters_join = f"""
  LEFT JOIN (
    SELECT w.name, created.n AS created_delta, done.completed AS completed_delta, done.failed AS failed_delta,
      done.packed, oldest.seconds AS ready_oldest_seconds,
      recreated.n + refinished.n AS recount, w.settled
    FROM (
      SELECT q.name, a.h, t.top, t.settled, {_WINDOW_START.replace("{alias}", "q")} AS w_start, {end} AS w_end
      FROM {{schema}}.queue q
      LEFT JOIN LATERAL (
        SELECT {_anchor_at("x.b", "x.f")} AS h
        FROM (
          SELECT COALESCE(max(s.delta_on) FILTER (WHERE {_TRUE_UP_ANCHOR}), min(s.delta_on)) AS b,
            min(s.delta_on) FILTER (WHERE {_TRUE_UP_FLOOR.replace("{q}", "q")}) AS f
          FROM {{schema}}.queue_stats s
          WHERE s.name = q.name AND {_TRUE_UP_REACH}
        ) x
      ) a ON true
      LEFT JOIN LATERAL (
        SELECT max(s.delta_on) AS top, sum(s.created_delta + s.completed_delta + s.failed_delta) AS settled
        FROM {{schema}}.queue_stats s
        WHERE s.name = q.name AND {_TRUE_UP_REACH} AND s.delta_on > a.h
      ) t ON true
      WHERE q.name = ANY(CAST(:names AS text[]))
    ) w
    LEFT JOIN LATERAL (
      SELECT count(*)::int AS n FROM {{schema}}.job j
      WHERE j.name = w.name AND j.created_on >= w.w_start AND j.created_on < w.w_end
    ) created ON true
    LEFT JOIN LATERAL (
      SELECT (count(*) FILTER (WHERE j.state = 'completed'))::int AS completed,
        (count(*) FILTER (WHERE j.state = 'failed'))::int AS failed,
        array_agg({_latency_slot(_WAIT_SECONDS)} * {_LATENCY_PACK} + {_latency_slot(_RUN_SECONDS)})
          FILTER (WHERE j.state IN ('completed', 'failed') AND j.started_on IS NOT NULL) AS packed
      FROM {{schema}}.job j
      WHERE j.name = w.name AND j.completed_on >= w.w_start AND j.completed_on < w.w_end
    ) done ON true
    LEFT JOIN LATERAL (
      SELECT round(extract(epoch from ({{schema}}.job_now() - min(GREATEST(j.created_on, j.start_after)))))::int
        AS seconds
      FROM {{schema}}.job j
      WHERE j.name = w.name AND j.state < 'active' AND NOT j.blocked AND j.start_after <= {{schema}}.job_now()
    ) oldest ON true
    LEFT JOIN LATERAL (
      SELECT count(*)::int AS n FROM {{schema}}.job j
      WHERE j.name = w.name AND j.created_on >= w.h AND j.created_on < w.top
    ) recreated ON true
    LEFT JOIN LATERAL (
      SELECT count(*)::int AS n FROM {{schema}}.job j
      WHERE j.name = w.name AND j.completed_on >= w.h AND j.completed_on < w.top
        AND j.state IN ('completed', 'failed')
    ) refinished ON true
  ) counters ON counters.name = n.name"""
        counters_lateral = """
  LEFT JOIN LATERAL (
    SELECT array_agg(g.p) AS ps, array_agg(g.n) AS ns
    FROM (SELECT p, count(*)::int AS n FROM unnest(counters.packed) AS u(p) GROUP BY p) g
  ) latency ON true"""
        seconds = f"round(extract(epoch from ({end} - {_WINDOW_START.replace('{alias}', 'queue')})))::int"
        counters_set = f"""
  created_delta = COALESCE(stats.created_delta, 0),
  completed_delta = COALESCE(stats.completed_delta, 0),
  failed_delta = COALESCE(stats.failed_delta, 0),
  delta_seconds = CASE WHEN {seconds} < 0 THEN 0 ELSE {seconds} END,
  delta_on = GREATEST(queue.delta_on, {end}),
  wait_bins = COALESCE(stats.wait_bins, {_EMPTY_BINS}),
  run_bins = COALESCE(stats.run_bins, {_EMPTY_BINS}),
  ready_oldest_seconds = COALESCE(stats.ready_oldest_seconds, 0),"""
        counters_return = ", COALESCE(stats.true_up, false) AS true_up"
    return f"""
WITH lock AS MATERIALIZED (
  SELECT pg_try_advisory_xact_lock({_LOCK_KEY}) AS got
),
released AS (
  UPDATE {{schema}}.queue SET monitor_claim_on = NULL
  FROM (
    SELECT name FROM {{schema}}.queue
    WHERE name = ANY(CAST(:names AS text[])) AND NOT (SELECT got FROM lock)
    ORDER BY name FOR NO KEY UPDATE
  ) r
  WHERE queue.name = r.name
),
stats AS (
  SELECT n.name,
    COALESCE(live.deferred, 0) AS deferred, COALESCE(live.blocked, 0) AS blocked,
    COALESCE(live.ready, 0) AS ready, COALESCE(live.queued, 0) AS queued,
    COALESCE(live.active, 0) AS active, COALESCE(live.failed, 0) AS failed,
    COALESCE(live.live, 0) AS live,
    since.retained_from, since.retained_since, since.retained_recent,{counters_select}
    singletons.keys AS singletons_active
  FROM unnest(CAST(:names AS text[])) AS n(name)
  LEFT JOIN (
    SELECT j.name,
      (count(*) FILTER (WHERE j.state < 'active' AND NOT j.blocked
                          AND j.start_after > {{schema}}.job_now()))::int AS deferred,
      (count(*) FILTER (WHERE j.state < 'active' AND j.blocked))::int AS blocked,
      (count(*) FILTER (WHERE j.state < 'active' AND NOT j.blocked
                          AND j.start_after <= {{schema}}.job_now()))::int AS ready,
      (count(*) FILTER (WHERE j.state < 'active'))::int AS queued,
      (count(*) FILTER (WHERE j.state = 'active'))::int AS active,
      (count(*) FILTER (WHERE j.state = 'failed'))::int AS failed,
      count(*)::int AS live
    FROM {{schema}}.job j
    WHERE j.name = ANY(CAST(:names AS text[])) AND j.state IN ('created', 'retry', 'active', 'failed')
    GROUP BY 1
  ) live ON live.name = n.name
  LEFT JOIN LATERAL (
    SELECT qr.retained_on AS retained_from,
      (SELECT count(*)::int FROM {{schema}}.job j
        WHERE j.name = qr.name AND j.completed_on > qr.retained_on
          AND j.completed_on <= {end}
          AND j.state IN ('completed', 'cancelled')) AS retained_since,
      (SELECT count(*)::int FROM {{schema}}.job j
        WHERE j.name = qr.name
          AND j.completed_on > GREATEST(qr.retained_on, {end})
          AND j.completed_on <= {{schema}}.job_now()
          AND j.state IN ('completed', 'cancelled')) AS retained_recent
    FROM {{schema}}.queue qr WHERE qr.name = n.name
  ) since ON true
  LEFT JOIN (
    SELECT j.name, array_agg(j.singleton_key) AS keys
    FROM {{schema}}.job j
    WHERE j.name = ANY(CAST(:names AS text[])) AND j.state = 'active'
      AND j.policy IN ('singleton', 'stately')
    GROUP BY 1
  ) singletons ON singletons.name = n.name{counters_join}{counters_lateral}
  WHERE (SELECT got FROM lock)
)
UPDATE {{schema}}.queue SET
  deferred_count = COALESCE(stats.deferred, 0),
  blocked_count = COALESCE(stats.blocked, 0),
  queued_count = COALESCE(stats.queued, 0),
  ready_count = COALESCE(stats.ready, 0),
  active_count = COALESCE(stats.active, 0),
  failed_count = COALESCE(stats.failed, 0),
  retained_count = CASE WHEN queue.retained_on IS NOT DISTINCT FROM stats.retained_from
    THEN queue.retained_count + COALESCE(stats.retained_since, 0) ELSE queue.retained_count END,
  retained_on = CASE WHEN queue.retained_on IS NOT DISTINCT FROM stats.retained_from
      AND queue.retained_on IS NOT NULL
    THEN GREATEST(queue.retained_on, {end})
    ELSE queue.retained_on END,
  total_count = CASE
    WHEN queue.retained_count IS NULL THEN GREATEST(queue.total_count, COALESCE(stats.live, 0))
    WHEN queue.retained_on IS NOT DISTINCT FROM stats.retained_from
      THEN COALESCE(stats.live, 0) + queue.retained_count + COALESCE(stats.retained_since, 0)
        + COALESCE(stats.retained_recent, 0)
    ELSE queue.total_count END,{counters_set}
{_COUNTS_WRITE_BACK}
RETURNING queue.name{counters_return}
"""


# pg-boss's advisory-lock key for :lock_key (<schema><key>), as sql.advisory_lock() takes it.
_LOCK_KEY = (
    "('x' || encode(sha224(CAST(current_database() || '.pgboss.'"
    " || CAST(:lock_key AS text) AS bytea)), 'hex'))::bit(64)::bigint"
)
REFRESH_QUEUE_COUNTS = _refresh_queue_counts(throughput=False)
REFRESH_QUEUE_COUNTS_AND_THROUGHPUT = _refresh_queue_counts(throughput=True)

# pg-boss 12.38 insertQueueStats(): one queue_stats snapshot per queue the pass counted,
# copied from the queue row. Run after sql.advisory_lock() on 'queue-stats-insert'.
INSERT_QUEUE_STATS = """
INSERT INTO {schema}.queue_stats
  (name, deferred_count, queued_count, ready_count, active_count, failed_count, total_count,
   created_delta, completed_delta, failed_delta, delta_seconds, delta_on,
   wait_bins, run_bins, ready_oldest_seconds, captured_on)
SELECT name, deferred_count, queued_count, ready_count, active_count, failed_count, total_count,
  created_delta, completed_delta, failed_delta, delta_seconds, delta_on,
  wait_bins, run_bins, ready_oldest_seconds, {schema}.job_now()
FROM {schema}.queue
WHERE name = ANY(CAST(:names AS text[]))
"""

# pg-boss 12.38 trueUpQueueStats(): for queues whose recorded windows now hold fewer jobs
# than the table does, recount each window (a job lands in the window whose end is the
# first after its stamp: width_bucket over [h, end1, end2, ...]) and raise the snapshots'
# counters to the recount -- never lower them, since retention removes rows a window
# already counted. Under the same try-lock as the count; no row when another instance
# held it.
TRUE_UP_QUEUE_STATS = f"""
WITH lock AS MATERIALIZED (
  SELECT pg_try_advisory_xact_lock({_LOCK_KEY}) AS got
),
win AS (
  SELECT w.*, row_number() OVER (PARTITION BY w.name ORDER BY w.delta_on, w.captured_on) AS i
  FROM (
    SELECT x.id, x.captured_on, x.name, x.delta_on, x.created_delta, x.completed_delta, x.failed_delta,
      {_anchor_at("x.b", "x.f")} AS h
    FROM (
      SELECT s.id, s.captured_on, s.name, s.delta_on, s.created_delta, s.completed_delta, s.failed_delta,
        COALESCE(
          max(CASE WHEN {_TRUE_UP_ANCHOR} THEN s.delta_on END) OVER (PARTITION BY s.name),
          min(s.delta_on) OVER (PARTITION BY s.name)
        ) AS b,
        min(CASE WHEN {_TRUE_UP_FLOOR.replace("{q}", "q")} THEN s.delta_on END) OVER (PARTITION BY s.name) AS f
      FROM {{schema}}.queue_stats s
      JOIN {{schema}}.queue q ON q.name = s.name
      WHERE s.name = ANY(CAST(:names AS text[])) AND {_TRUE_UP_REACH}
    ) x
  ) w
  WHERE w.delta_on > w.h AND (SELECT got FROM lock)
),
th AS (
  SELECT w.name, w.h, array_prepend(w.h, array_agg(w.delta_on ORDER BY w.i)) AS t
  FROM win w
  GROUP BY w.name, w.h
),
binned AS (
  SELECT j.name, width_bucket(j.created_on, th.t) AS cb, NULL::int AS fb, j.state
  FROM th JOIN {{schema}}.job j ON j.name = th.name AND j.created_on >= th.h
  UNION ALL
  SELECT j.name, NULL::int, width_bucket(j.completed_on, th.t), j.state
  FROM th JOIN {{schema}}.job j ON j.name = th.name AND j.completed_on >= th.h
  WHERE j.state IN ('completed', 'failed')
),
grouped AS (
  SELECT name, cb, fb, state, count(*)::int AS n
  FROM binned WHERE cb IS NOT NULL OR fb IS NOT NULL
  GROUP BY 1, 2, 3, 4
),
counted AS (
  SELECT name, cb AS i, sum(n)::int AS created, 0 AS completed, 0 AS failed
  FROM grouped WHERE cb IS NOT NULL GROUP BY 1, 2
  UNION ALL
  SELECT name, fb, 0,
    COALESCE(sum(n) FILTER (WHERE state = 'completed'), 0)::int,
    COALESCE(sum(n) FILTER (WHERE state = 'failed'), 0)::int
  FROM grouped WHERE fb IS NOT NULL GROUP BY 1, 2
),
recount AS (
  SELECT w.id, w.captured_on,
    sum(c.created)::int AS created, sum(c.completed)::int AS completed, sum(c.failed)::int AS failed
  FROM win w JOIN counted c ON c.name = w.name AND c.i = w.i
  GROUP BY w.id, w.captured_on
),
raised AS (
  UPDATE {{schema}}.queue_stats s SET
    created_delta = GREATEST(s.created_delta, r.created),
    completed_delta = GREATEST(s.completed_delta, r.completed),
    failed_delta = GREATEST(s.failed_delta, r.failed)
  FROM recount r
  WHERE s.id = r.id AND s.captured_on = r.captured_on AND (SELECT got FROM lock)
    AND (r.created > s.created_delta OR r.completed > s.completed_delta OR r.failed > s.failed_delta)
  RETURNING s.id
)
SELECT (SELECT count(*) FROM raised)::int AS raised
WHERE (SELECT got FROM lock)
"""

# Whether queue_stats is partitioned by day (pg-boss's default) or one plain table
# (noTablePartitioning), which decides how its retention works.
QUEUE_STATS_PARTITIONED = """
SELECT c.relkind = 'p' AS partitioned
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = :schema_name AND c.relname = 'queue_stats'
"""

# pg-boss 12.38 ensureQueueStatsPartitions(): today's and tomorrow's daily partitions
# (UTC dates, explicit +00 bounds), created when missing. A DO block takes no
# parameters: {schema_name} is the validated schema name as a literal.
ENSURE_QUEUE_STATS_PARTITIONS = """
DO $$
DECLARE
  d date;
  part_name text;
BEGIN
  FOR i IN 0..1 LOOP
    d := ({schema}.job_now() AT TIME ZONE 'UTC')::date + i;
    part_name := 'queue_stats_' || to_char(d, 'YYYYMMDD');
    IF NOT EXISTS (
      SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
      WHERE n.nspname = {schema_name} AND c.relname = part_name
    ) THEN
      EXECUTE format(
        'CREATE TABLE {schema}.%I PARTITION OF {schema}.queue_stats FOR VALUES FROM (%L) TO (%L)',
        part_name,
        to_char(d, 'YYYY-MM-DD') || ' 00:00:00+00',
        to_char(d + 1, 'YYYY-MM-DD') || ' 00:00:00+00');
    END IF;
  END LOOP;
END
$$
"""

# pg-boss 12.38 dropOldQueueStatsPartitions(): retention of a partitioned queue_stats drops
# the daily partitions older than {days} whole days.
DROP_OLD_QUEUE_STATS_PARTITIONS = """
DO $$
DECLARE
  r record;
  cutoff date := ({schema}.job_now() AT TIME ZONE 'UTC')::date - {days};
  suffix text;
BEGIN
  FOR r IN
    SELECT c.relname
    FROM pg_inherits i
    JOIN pg_class p ON p.oid = i.inhparent
    JOIN pg_class c ON c.oid = i.inhrelid
    JOIN pg_namespace n ON n.oid = p.relnamespace
    WHERE n.nspname = {schema_name} AND p.relname = 'queue_stats'
  LOOP
    suffix := substring(r.relname FROM 'queue_stats_(.*)$');
    IF suffix ~ '^[0-9]{8}$' AND to_date(suffix, 'YYYYMMDD') < cutoff THEN
      EXECUTE 'DROP TABLE IF EXISTS {schema}.' || quote_ident(r.relname);
    END IF;
  END LOOP;
END
$$
"""

# pg-boss 12.38 deleteOldQueueStats(): retention of an unpartitioned queue_stats, at most
# :batch_size rows past :days days a batch, oldest first; the cursor (captured_on|id of
# the last row deleted) is NULL once a batch was not full.
DELETE_OLD_QUEUE_STATS = """
WITH batch AS (
  SELECT captured_on, id FROM {schema}.queue_stats
  WHERE captured_on < {schema}.job_now() - CAST(:days AS int) * interval '1 day'
    AND (CAST(:after AS text) IS NULL
      OR (captured_on, id) > (CAST(split_part(CAST(:after AS text), '|', 1) AS timestamptz),
                              CAST(split_part(CAST(:after AS text), '|', 2) AS uuid)))
  ORDER BY captured_on, id
  LIMIT :batch_size
),
removed AS (
  DELETE FROM {schema}.queue_stats WHERE id IN (SELECT id FROM batch)
  RETURNING 1
)
SELECT
  CASE WHEN (SELECT count(*) FROM batch) = :batch_size THEN (
    SELECT to_char(captured_on AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') || '|' || id::text
    FROM batch ORDER BY captured_on DESC, id DESC LIMIT 1) END AS cursor,
  (SELECT count(*) FROM removed)::int AS deleted
"""

# pg-boss 12.35 cacheQueueStats() (schema 43, before retained_count and blocked_count):
# the cached counts of the claimed queues from one aggregate over their jobs -- deferred
# is every queued job whose start_after is ahead, ready the rest of the queued ones,
# total every row the queue still has -- with monitor_on and ready_history as above.
# The same try-lock; losing it counts nothing (12.35 keeps its claim then).
REFRESH_QUEUE_COUNTS_WITHOUT_RETAINED = f"""
WITH lock AS MATERIALIZED (
  SELECT pg_try_advisory_xact_lock({_LOCK_KEY}) AS got
),
stats AS (
  SELECT name, deferred, queued, GREATEST(queued - deferred, 0) AS ready, active, failed, total,
    singletons_active
  FROM (
    SELECT j.name,
      (count(*) FILTER (WHERE j.start_after > {{schema}}.job_now() AND j.state < 'active'))::int AS deferred,
      (count(*) FILTER (WHERE j.state < 'active'))::int AS queued,
      (count(*) FILTER (WHERE j.state = 'active'))::int AS active,
      (count(*) FILTER (WHERE j.state = 'failed'))::int AS failed,
      count(*)::int AS total,
      array_agg(j.singleton_key) FILTER (WHERE j.policy IN ('singleton', 'stately') AND j.state = 'active')
        AS singletons_active
    FROM {{schema}}.job j
    WHERE j.name = ANY(CAST(:names AS text[]))
    GROUP BY 1
  ) counted
  WHERE (SELECT got FROM lock)
)
UPDATE {{schema}}.queue SET
  deferred_count = COALESCE(stats.deferred, 0),
  queued_count = COALESCE(stats.queued, 0),
  ready_count = COALESCE(stats.ready, 0),
  active_count = COALESCE(stats.active, 0),
  failed_count = COALESCE(stats.failed, 0),
  total_count = COALESCE(stats.total, 0),
{_COUNTS_WRITE_BACK}
RETURNING queue.name
"""

# pg-boss 12.38 trySetQueueDeletionTime(): claim the due queues of a chunk for
# maintenance; claimed_on (UTC text) is what an unfinished queue's claim is given back by.
CLAIM_MAINTAIN = f"""
WITH due AS (
  SELECT name FROM {{schema}}.queue
  WHERE name = ANY(CAST(:names AS text[]))
    AND {_DUE.format(column="maintain_on")}
  ORDER BY name FOR NO KEY UPDATE SKIP LOCKED
)
UPDATE {{schema}}.queue SET maintain_on = {{schema}}.job_now()
FROM due
WHERE queue.name = due.name
RETURNING queue.name,
  to_char(queue.maintain_on AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS claimed_on
"""

# pg-boss 12.38 releaseQueueDeletionTime(): hand back the claim on queues a pass did not
# finish, unless another instance has claimed them again since.
RELEASE_MAINTAIN = """
UPDATE {schema}.queue SET maintain_on = NULL
FROM (
  SELECT name FROM {schema}.queue
  WHERE name = ANY(CAST(:names AS text[])) AND maintain_on = CAST(:claimed_on AS timestamptz)
  ORDER BY name FOR NO KEY UPDATE SKIP LOCKED
) q
WHERE queue.name = q.name
"""

# pg-boss 12.38 getTime(): the database clock (job_now(), so a test clock applies), in
# epoch milliseconds.
DATABASE_TIME = """
SELECT round(date_part('epoch', {schema}.job_now()) * 1000)::bigint AS time
"""


# pg-boss 12.38 deletion(): one batch of the retention sweep of one queue, walking the
# next :batch_size primary keys after :after (NULL = from the start). Deletes what
# retention allows --
#   (deletion_seconds > 0 AND completed_on + deletion_seconds * 1s < job_now())
#   OR (state < 'active' AND keep_until < job_now())
# -- and answers with the cursor for the next batch (NULL when the queue is done), how
# many it deleted, how many of those retained_count held (finished by retained_on), and
# how many finished jobs it left that finished by :retained_before (epoch ms), which the
# sweep totals into the queue's new retained_count.
def _deletion_batch(retained: bool) -> str:
    """One batch of the retention sweep (see above); without ``retained`` (schemas before
    46, which keep no retained_count) the two retained counts answer 0."""
    counts = (
        """(SELECT count(*) FROM removed
    WHERE state IN ('completed', 'cancelled')
      AND completed_on <= (SELECT retained_on FROM {schema}.queue WHERE name = :name))::int
    AS deleted_retained,
  ((SELECT count(*) FROM {schema}.job
     WHERE name = :name AND (CAST(:after AS uuid) IS NULL OR id > CAST(:after AS uuid))
       AND id <= COALESCE((SELECT id FROM edge), 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid)
       AND state IN ('completed', 'cancelled')
       AND completed_on <= to_timestamp(CAST(:retained_before AS float8) / 1000))
   - (SELECT count(*) FROM removed
       WHERE state IN ('completed', 'cancelled')
         AND completed_on <= to_timestamp(CAST(:retained_before AS float8) / 1000)))::int AS retained"""
        if retained
        else "0 AS deleted_retained, 0 AS retained"
    )
    return f"""
WITH edge AS (
  SELECT id FROM {{schema}}.job
  WHERE name = :name AND (CAST(:after AS uuid) IS NULL OR id > CAST(:after AS uuid))
  ORDER BY id OFFSET :batch_size - 1 LIMIT 1
),
removed AS (
  DELETE FROM {{schema}}.job
  WHERE name = :name AND (CAST(:after AS uuid) IS NULL OR id > CAST(:after AS uuid))
    AND id <= COALESCE((SELECT id FROM edge), 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid)
    AND ((deletion_seconds > 0 AND completed_on + deletion_seconds * interval '1s' < {{schema}}.job_now())
      OR (state < 'active' AND keep_until < {{schema}}.job_now()))
  RETURNING state, completed_on
)
SELECT
  CAST((SELECT id FROM edge) AS text) AS cursor,
  (SELECT count(*) FROM removed)::int AS deleted,
  {counts}
"""


DELETION_BATCH = _deletion_batch(retained=True)
DELETION_BATCH_WITHOUT_RETAINED = _deletion_batch(retained=False)

# pg-boss 12.38 setRetainedCount(): after a sweep that walked the whole queue, its total
# of kept finished jobs becomes retained_count as of :retained_before, and total_count
# is the cached live count plus that plus what finished since.
SET_RETAINED_COUNT = """
UPDATE {schema}.queue
SET retained_count = :retained,
  retained_on = to_timestamp(CAST(:retained_before AS float8) / 1000),
  total_count = queued_count + active_count + failed_count + :retained + (
    SELECT count(*)::int FROM {schema}.job j
    WHERE j.name = :name
      AND j.completed_on > to_timestamp(CAST(:retained_before AS float8) / 1000)
      AND j.completed_on <= {schema}.job_now()
      AND j.state IN ('completed', 'cancelled'))
WHERE name = :name
"""

# pg-boss 12.38 reduceRetainedCount(): a sweep cut short takes only what it deleted
# off the counts.
REDUCE_RETAINED_COUNT = """
UPDATE {schema}.queue
SET retained_count = CASE WHEN retained_count IS NULL THEN NULL
                          ELSE GREATEST(retained_count - :retained, 0) END,
  total_count = GREATEST(total_count - :deleted, 0)
WHERE name = :name
"""


def _cleanup_dependencies(side: str) -> str:
    """pg-boss 12.38 cleanupDependencies(): one batch of orphaned ``job_dependency`` rows.

    Walks the queue's rows on one side (``child`` or ``parent``) :batch_size keys at a
    time and deletes those whose job on that side no longer exists.
    """
    return f"""
WITH edge AS (
  SELECT {side}_id AS id FROM {{schema}}.job_dependency
  WHERE {side}_name = :name AND (CAST(:after AS uuid) IS NULL OR {side}_id > CAST(:after AS uuid))
  ORDER BY {side}_id OFFSET :batch_size - 1 LIMIT 1
),
removed AS (
  DELETE FROM {{schema}}.job_dependency d
  WHERE {side}_name = :name AND (CAST(:after AS uuid) IS NULL OR {side}_id > CAST(:after AS uuid))
    AND {side}_id <= COALESCE((SELECT id FROM edge), 'ffffffff-ffff-ffff-ffff-ffffffffffff'::uuid)
    AND NOT EXISTS (
      SELECT 1 FROM {{schema}}.job j WHERE j.name = :name AND j.id = d.{side}_id)
  RETURNING 1
)
SELECT CAST((SELECT id FROM edge) AS text) AS cursor, (SELECT count(*) FROM removed)::int AS deleted
"""


CLEANUP_CHILD_DEPENDENCIES = _cleanup_dependencies("child")
CLEANUP_PARENT_DEPENDENCIES = _cleanup_dependencies("parent")


def _resolve_flows(moves_start_after: bool) -> str:
    """pg-boss resolveFlowJobs(): one batch of the flow resolver (12.22 to 12.38).

    Locks up to 1000 completed parents still marked blocking (skipping rows another
    resolver holds), takes one pending dependency per parent off each child, releases
    children that reach zero, and clears blocking on the parents so they are never
    resolved again. 12.38 also moves a released child's start_after up to the release,
    so its wait counts from when it could first run; 12.22 to 12.35 leave it.
    """
    start_after = (
        """,
      start_after = CASE WHEN GREATEST(j.pending_dependencies - lc.n, 0) = 0
        THEN GREATEST(j.start_after, {schema}.job_now()) ELSE j.start_after END"""
        if moves_start_after
        else ""
    )
    return f"""
WITH locked_parents AS (
  SELECT j.name, j.id FROM {{schema}}.job j
  WHERE j.blocking AND j.state = 'completed' AND j.name = ANY(CAST(:names AS text[]))
  ORDER BY j.name, j.id
  FOR UPDATE OF j SKIP LOCKED
  LIMIT 1000
),
decremented AS (
  SELECT d.child_name, d.child_id, count(*)::int AS n
  FROM {{schema}}.job_dependency d
  JOIN locked_parents p ON d.parent_name = p.name AND d.parent_id = p.id
  GROUP BY d.child_name, d.child_id
),
locked_children AS (
  SELECT j.name, j.id, d.n FROM {{schema}}.job j
  JOIN decremented d ON d.child_name = j.name AND d.child_id = j.id
  WHERE j.blocked
  ORDER BY j.name, j.id
  FOR UPDATE OF j
),
unblocked AS (
  UPDATE {{schema}}.job j
  SET pending_dependencies = GREATEST(j.pending_dependencies - lc.n, 0),
      blocked = GREATEST(j.pending_dependencies - lc.n, 0) > 0{start_after}
  FROM locked_children lc
  WHERE j.name = lc.name AND j.id = lc.id
  RETURNING CASE WHEN NOT j.blocked THEN 1 ELSE 0 END AS released
),
cleared AS (
  UPDATE {{schema}}.job j SET blocking = false
  FROM locked_parents p
  WHERE j.name = p.name AND j.id = p.id
  RETURNING 1
)
SELECT (SELECT count(*) FROM cleared)::int AS resolved,
  (SELECT COALESCE(sum(released), 0) FROM unblocked)::int AS released
"""


RESOLVE_FLOWS = _resolve_flows(moves_start_after=True)
RESOLVE_FLOWS_KEEPING_START_AFTER = _resolve_flows(moves_start_after=False)

# pg-boss 12.38 getSchedules(): every schedule (of queue :name, unless it is NULL), with
# the zone UTC when none is stored.
GET_SCHEDULES = """
SELECT name, key, kind, cron, COALESCE(timezone, 'UTC') AS timezone,
  CAST(data AS text) AS data, CAST(options AS text) AS options,
  created_on, updated_on, CAST(last_job_id AS text) AS last_job_id
FROM {schema}.schedule
WHERE CAST(:name AS text) IS NULL OR name = :name
ORDER BY name, key
"""

# pg-boss 12.38 schedule(): create or replace a schedule; created_on is kept on update.
UPSERT_SCHEDULE = """
INSERT INTO {schema}.schedule (name, key, kind, cron, timezone, data, options, created_on, updated_on)
VALUES (:name, :key, :kind, :cron, :timezone, CAST(:data AS jsonb), CAST(:options AS jsonb),
  {schema}.job_now(), {schema}.job_now())
ON CONFLICT (name, key) DO UPDATE SET
  kind = EXCLUDED.kind, cron = EXCLUDED.cron, timezone = EXCLUDED.timezone,
  data = EXCLUDED.data, options = EXCLUDED.options, updated_on = {schema}.job_now()
"""

# pg-boss 12.38 unschedule().
DELETE_SCHEDULE = """
DELETE FROM {schema}.schedule WHERE name = :name AND COALESCE(key, '') = :key
RETURNING 1
"""

# pg-boss 12.38 setScheduleLastJobIds(): the job each schedule most recently produced.
SET_SCHEDULE_LAST_JOB_IDS = """
UPDATE {schema}.schedule s
SET last_job_id = x.job_id
FROM json_to_recordset(CAST(:fired AS json)) AS x (name text, key text, job_id uuid)
WHERE s.name = x.name AND COALESCE(s.key, '') = x.key
"""

# pg-boss 12.38 setScheduleKinds(): relabel rows whose stored kind disagrees with their
# expression, matched on the expression so a concurrent schedule() keeps its own kind.
SET_SCHEDULE_KINDS = """
UPDATE {schema}.schedule s SET kind = k.kind
FROM json_to_recordset(CAST(:kinds AS json)) AS k (name text, key text, kind text, cron text)
WHERE s.name = k.name AND COALESCE(s.key, '') = k.key AND s.cron = k.cron
"""

# pg-boss 12.38 insert() into '__pgboss__send-it' with explicit slots, as the cron pass
# files occurrences: one job per (schedule, 60 s slot). singleton_on is the slot as UTC
# wall time; the unique index job_i4 (name, singleton_on, singleton_key) with ON
# CONFLICT DO NOTHING makes it one job per slot however many instances race. Every
# other column comes from the queue's settings, as pg-boss copies them.
INSERT_OCCURRENCES = """
INSERT INTO {schema}.job (id, name, data, priority, start_after, created_on, singleton_key,
  singleton_on, expire_seconds, deletion_seconds, keep_until, retry_limit, retry_delay,
  retry_backoff, retry_delay_max, policy, dead_letter, heartbeat_seconds, blocked, blocking,
  pending_dependencies)
SELECT gen_random_uuid(), q.name, x.data, 0, {schema}.job_now(), {schema}.job_now(), x.singleton_key,
  CAST(x.slot AS timestamp), q.expire_seconds, q.deletion_seconds,
  {schema}.job_now() + q.retention_seconds * interval '1s', q.retry_limit, q.retry_delay,
  q.retry_backoff, q.retry_delay_max, q.policy, q.dead_letter, q.heartbeat_seconds, false, false, 0
FROM json_to_recordset(CAST(:occurrences AS json)) AS x (data jsonb, singleton_key text, slot text)
JOIN {schema}.queue q ON q.name = :name
ON CONFLICT DO NOTHING
RETURNING CAST(id AS text) AS id
"""

# pg-boss 12.38 fetchNextJob() for the send-it worker (a standard-policy queue): up to
# :limit due jobs, oldest first among equal priority, claimed with SKIP LOCKED.
FETCH_OCCURRENCES = """
WITH next AS (
  SELECT id FROM {schema}.job
  WHERE name = :name AND state < 'active' AND NOT blocked AND start_after <= {schema}.job_now()
  ORDER BY priority DESC, created_on
  LIMIT :limit
  FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.job j
SET state = 'active', started_on = {schema}.job_now(), heartbeat_on = {schema}.job_now(),
  retry_count = CASE WHEN j.started_on IS NOT NULL THEN j.retry_count + 1 ELSE j.retry_count END
FROM next
WHERE j.name = :name AND j.id = next.id
RETURNING CAST(j.id AS text) AS id, j.data
"""

# pg-boss 12.38 complete() of the send-it worker's jobs (the handler returns nothing).
COMPLETE_OCCURRENCES = """
UPDATE {schema}.job
SET completed_on = {schema}.job_now(), state = 'completed', output = NULL
WHERE name = :name AND id = ANY(CAST(:ids AS uuid[])) AND state = 'active'
"""

# pg-boss 12.38 trySetBamTime(): the claim of the background index builder (every 60 s).
CLAIM_BAM = _claim_version("bam_on")

# pg-boss 12.38 getNextBamCommand() (the PostgreSQL variant, which tells a live build
# from a dead one by its lock on the table): claim the next command. Pending commands
# go first (oldest first), then failed ones and in-progress ones that are over 5
# minutes old with no build holding the table; a command waits for earlier commands of
# its migration on the same table; nothing is claimed while a live build runs. With
# :pending_only (every claim after the first of a pass) only pending ones are taken.
# Run under the 'bamClaim' advisory lock, as pg-boss does.
CLAIM_BAM_COMMAND = """
WITH candidate AS (
  SELECT c.id, c.status AS prior_status, c.started_on AS prior_started_on
  FROM {schema}.bam c
  WHERE (c.status = 'pending'
      OR (NOT CAST(:pending_only AS boolean) AND (c.status = 'failed'
        OR (c.status = 'in_progress' AND c.started_on < {schema}.job_now() - interval '300 seconds'
          AND NOT EXISTS (
            SELECT 1 FROM pg_locks l
            WHERE l.locktype = 'relation' AND l.granted AND l.mode = 'ShareUpdateExclusiveLock'
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND l.relation = to_regclass(quote_ident(:schema_name) || '.' || quote_ident(c.table_name)))))))
    AND NOT EXISTS (
      SELECT 1 FROM {schema}.bam p
      WHERE p.version = c.version AND p.table_name = c.table_name
        AND p.created_on < c.created_on AND p.status <> 'completed')
    AND NOT EXISTS (
      SELECT 1 FROM {schema}.bam g
      WHERE g.status = 'in_progress'
        AND NOT (g.started_on < {schema}.job_now() - interval '300 seconds'
          AND NOT EXISTS (
            SELECT 1 FROM pg_locks l
            WHERE l.locktype = 'relation' AND l.granted AND l.mode = 'ShareUpdateExclusiveLock'
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND l.relation = to_regclass(quote_ident(:schema_name) || '.' || quote_ident(g.table_name)))))
  ORDER BY (c.status <> 'pending'), c.created_on
  LIMIT 1
  FOR UPDATE OF c SKIP LOCKED
)
UPDATE {schema}.bam b
SET status = 'in_progress', started_on = {schema}.job_now()
FROM candidate
WHERE b.id = candidate.id AND b.status = candidate.prior_status
  AND b.started_on IS NOT DISTINCT FROM candidate.prior_started_on
RETURNING CAST(b.id AS text) AS id, b.command, candidate.prior_status <> 'pending' AS reattempt
"""

# pg-boss 12.38 bamHealProbe(): whether an index a command builds exists, and is valid.
BAM_INDEX_STATE = """
SELECT NOT i.indisvalid AS invalid
FROM pg_class c
JOIN pg_index i ON i.indexrelid = c.oid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = :schema_name AND c.relname = :index_name
"""

# pg-boss 12.38 bamHealDrop(): an invalid index left by an interrupted build goes first.
# {index} is the index name read from the command, checked to be a plain identifier.
BAM_DROP_INVALID_INDEX = """
DROP INDEX CONCURRENTLY IF EXISTS {schema}."{index}"
"""

# pg-boss 12.38 bamCommandTag(): the comment a build runs under, so pg-boss (and an
# operator) can find it in pg_stat_activity. {id} and {command} come from the bam row.
BAM_TAGGED_COMMAND = """/* pgboss bam {id} */
{command}"""

# pg-boss 12.38 setBamCompleted() / setBamFailed().
SET_BAM_COMPLETED = """
UPDATE {schema}.bam SET status = 'completed', completed_on = {schema}.job_now(), error = NULL
WHERE id = CAST(:id AS uuid)
"""
SET_BAM_FAILED = """
UPDATE {schema}.bam SET status = 'failed', error = :error, completed_on = {schema}.job_now()
WHERE id = CAST(:id AS uuid)
"""

# -- pg-boss 10.x (schemas 21-24) ----------------------------------------------------
# 10.x's supervisor is one maintenance pass (expire, archive, drop) claimed through
# version.maintained_on, and its timekeeper claims version.cron_on; both claims are due
# only once the column is strictly more than the interval old, read with now().


def _claim_archive_family(column: str) -> str:
    """pg-boss 10.x trySetTimestamp(): the shared interval claim on ``version``."""
    return f"""
UPDATE {{schema}}.version SET {column} = now()
WHERE EXTRACT(EPOCH FROM (now() - COALESCE({column}, now() - interval '1 week'))) > CAST(:seconds AS float8)
RETURNING true AS claimed, now() AS now
"""


# pg-boss 10.x trySetMaintenanceTime() (every 120 s by default).
CLAIM_MAINTAIN_ARCHIVE_FAMILY = _claim_archive_family("maintained_on")
# pg-boss 10.x trySetCronTime() (every 30 s by default).
CLAIM_CRON_ARCHIVE_FAMILY = _claim_archive_family("cron_on")

# Every queue's name, in name order (10.x has no table_name: each queue is a partition).
QUEUE_NAMES = """
SELECT name FROM {schema}.queue ORDER BY name
"""

_ARCHIVE_COLUMNS = (
    "id, name, priority, data, state, retry_limit, retry_count, retry_delay, retry_backoff, start_after,"
    " started_on, singleton_key, singleton_on, expire_in, created_on, completed_on, keep_until, dead_letter,"
    " policy, output"
)

# pg-boss 10.x archive(): jobs finished longer ago than their interval (failed ones by
# archiveFailedAfterSeconds, the rest by archiveCompletedAfterSeconds) and queued jobs
# past keep_until move to `archive`. Run under the schema's own advisory lock.
ARCHIVE_FINISHED = f"""
WITH archived_rows AS (
  DELETE FROM {{schema}}.job
  WHERE (state <> 'failed' AND completed_on < now() - CAST(:completed_seconds AS float8) * interval '1 second')
    OR (state = 'failed' AND completed_on < now() - CAST(:failed_seconds AS float8) * interval '1 second')
    OR (state < 'active' AND keep_until < now())
  RETURNING *
), moved AS (
  INSERT INTO {{schema}}.archive ({_ARCHIVE_COLUMNS})
  SELECT {_ARCHIVE_COLUMNS} FROM archived_rows
  ON CONFLICT DO NOTHING
  RETURNING 1
)
SELECT (SELECT count(*) FROM archived_rows)::int AS archived, (SELECT count(*) FROM moved)::int AS moved
"""

# pg-boss 10.x drop(): archived jobs older than deleteAfter are deleted for good. Run
# under the schema's own advisory lock.
DROP_ARCHIVED = """
WITH dropped AS (
  DELETE FROM {schema}.archive
  WHERE archived_on < now() - CAST(:delete_after_seconds AS float8) * interval '1 second'
  RETURNING 1
)
SELECT count(*)::int AS dropped FROM dropped
"""

# pg-boss 10.x getSchedules(): every schedule (keyed by name), zone UTC when none is stored.
GET_SCHEDULES_ARCHIVE_FAMILY = """
SELECT name, cron, COALESCE(timezone, 'UTC') AS timezone, CAST(data AS text) AS data,
  CAST(options AS text) AS options
FROM {schema}.schedule
ORDER BY name
"""

# pg-boss 10.x fetchNextJob() for its send-it worker (a standard-policy queue).
FETCH_OCCURRENCES_ARCHIVE_FAMILY = """
WITH next AS (
  SELECT id FROM {schema}.job
  WHERE name = :name AND state < 'active' AND start_after < now()
  ORDER BY priority DESC, created_on, id
  LIMIT :limit
  FOR UPDATE SKIP LOCKED
)
UPDATE {schema}.job j
SET state = 'active', started_on = now(),
  retry_count = CASE WHEN j.started_on IS NOT NULL THEN j.retry_count + 1 ELSE j.retry_count END
FROM next
WHERE j.name = :name AND j.id = next.id
RETURNING CAST(j.id AS text) AS id, j.data
"""

# pg-boss 10.x completeJobs() of the send-it worker's jobs (the handler returns nothing).
COMPLETE_OCCURRENCES_ARCHIVE_FAMILY = """
UPDATE {schema}.job
SET completed_on = now(), state = 'completed', output = NULL
WHERE name = :name AND id = ANY(CAST(:ids AS uuid[])) AND state = 'active'
"""
