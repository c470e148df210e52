"""Every SQL statement this package sends to pg-boss's schema, and nothing else.

Each statement names the pg-boss behaviour it mirrors. ``{schema}`` stands for the
configured schema name, validated when settings load and substituted by ``render``;
every value is a bound ``:parameter``.

Batches travel as one JSON document read with ``json_to_recordset``: measured with
pg8000 against parallel arrays + ``unnest`` it was faster at every batch size (1000
jobs: 31 ms against 48 ms), and one document keeps rows aligned by construction.

Timestamps come from ``{schema}.job_now()`` rather than ``now()``, as in pg-boss since
schema 42, so a test clock installed by pg-boss applies to our writes too. Jobs are
addressed through the partitioned parent ``{schema}.job`` with a ``name`` predicate;
Postgres routes and prunes to the queue's own table.
"""

from __future__ import annotations

from typing import NamedTuple

from shared.config import SCHEMA_NAME


def render(statement: str, schema: str) -> str:
    """The statement with the schema identifier filled in (quoted, after validation)."""
    if not SCHEMA_NAME.match(schema):
        raise ValueError(f"invalid pg-boss schema name {schema!r}")
    return statement.replace("{schema}", f'"{schema}"')


# pg-boss 12 (all versions): is pg-boss installed in this schema? to_regclass answers
# NULL instead of raising when the version table is missing.
SCHEMA_INSTALLED = """
SELECT to_regclass(:version_table) IS NOT NULL AS installed
"""

# pg-boss 12 (all versions): the one-row version table its migrations keep current.
SCHEMA_VERSION = """
SELECT version FROM {schema}.version
"""

# pg-boss 12.38 `locked()`: its transactions set these two timeouts, then take a
# transaction-scoped advisory lock keyed by sha224 of
# current_database() || '.pgboss.' || <schema><suffix>, first 64 bits as bigint.
# The settings come from a materialized CTE so they are in force before the lock wait.
ADVISORY_LOCK = """
WITH settings AS MATERIALIZED (
  SELECT set_config('lock_timeout', '30000', true) AS lock_timeout,
         set_config('idle_in_transaction_session_timeout', '30000', true) AS idle_timeout
)
SELECT pg_advisory_xact_lock(
  ('x' || encode(sha224(CAST(current_database() || '.pgboss.' || CAST(:key AS text) AS bytea)), 'hex'))
    ::bit(64)::bigint)
FROM settings
"""

_QUEUE_COLUMNS = """
  q.name, q.policy, q.retry_limit, q.retry_delay, q.retry_backoff, q.retry_delay_max,
  q.expire_seconds, q.retention_seconds, q.deletion_seconds, q.dead_letter,
  q.heartbeat_seconds, q.notify, q.partition, q.table_name"""

# pg-boss 12.38 getQueue(): one queue's configuration row.
GET_QUEUE = f"""
SELECT {_QUEUE_COLUMNS}
FROM {{schema}}.queue q
WHERE q.name = :name
"""

# pg-boss 12.38 getQueues(), with the counts computed from the jobs now rather than read
# from the stats columns its monitor refreshes every minute. "queued" is created + retry
# (including deferred and blocked ones), "deferred" those not yet due and not blocked.
GET_QUEUES = f"""
SELECT {_QUEUE_COLUMNS},
  counts.queued AS queued_count, counts.active AS active_count,
  counts.deferred AS deferred_count, counts.total AS total_count
FROM {{schema}}.queue q
CROSS JOIN LATERAL (
  SELECT count(*) FILTER (WHERE j.state < 'active') AS queued,
         count(*) FILTER (WHERE j.state = 'active') AS active,
         count(*) FILTER (WHERE j.state < 'active' AND NOT j.blocked
                           AND j.start_after > {{schema}}.job_now()) AS deferred,
         count(*) AS total
  FROM {{schema}}.job j
  WHERE j.name = q.name
) counts
ORDER BY q.name
"""

# pg-boss 12.38 createQueue(): its own SQL function, run after ADVISORY_LOCK with the
# 'create-queue' suffix. The function inserts with ON CONFLICT DO NOTHING, so an existing
# queue is left as it is.
CREATE_QUEUE = """
SELECT {schema}.create_queue(CAST(:name AS text), CAST(:options AS jsonb))
"""

# Which of these queue names exist; used to name the missing queue after a foreign-key
# failure (pg-boss 12.38 reports "Queue <name> does not exist" the same way).
EXISTING_QUEUES = """
SELECT name FROM {schema}.queue WHERE name = ANY(CAST(:names AS text[]))
"""


# pg-boss 12.38 insertJobs() as used by send(), sendThrottled(), sendDebounced() and
# insert(), for any number of queues at once. Per row, every setting is the job's option,
# else the queue's column, else the schema default (which only a vanished queue reaches,
# so q_fkey reports it); `policy` always comes from the queue. keep_until counts from
# start_after. ON CONFLICT DO NOTHING turns a policy, throttle or id conflict into no row.
#
# Debounce (sendDebounced, singletonNextSlot): a row that found its slot taken is tried
# once more in the next slot, due about a second after that slot opens:
# start_after = now + (S - whole seconds elapsed in the slot) + (1 when S > 1).
#
# A NOTIFY on the queue's channel (:channel, pg-boss 12.38 notifyChannelSql) goes out once
# per notify-enabled queue that received a job due now, in the same transaction.
# PostgreSQL runs a data-modifying CTE whatever reads it, but a plain SELECT CTE (woken)
# only when something reads it: the final WHERE (SELECT count(*) FROM woken) >= 0 is
# always true and is there only to make the NOTIFYs happen.
#
# Ids not given are made here with gen_random_uuid(), as pg-boss does. The answer is one
# text value: every job's id in input order, empty where the job was suppressed; a
# thousand ids cost one row instead of a thousand rows to decode.
def _insert_jobs(*, debounce: bool) -> str:
    """INSERT_JOBS, with the debounce retry only where a batch asks for it (it doubles
    the rows the statement plans over)."""
    next_slot_rows = (
        "CROSS JOIN LATERAL (VALUES (false), (true)) AS a (next_try)\n"
        "  LEFT JOIN {schema}.queue q ON q.name = i.name\n"
        "  WHERE NOT a.next_try OR coalesce(i.next_slot, false)"
        if debounce
        else "CROSS JOIN (VALUES (false)) AS a (next_try)\n  LEFT JOIN {schema}.queue q ON q.name = i.name"
    )
    next_slot = (
        """next_slot AS (
  INSERT INTO {schema}.job (%(columns)s)
  SELECT %(values)s
  FROM prepared r
  WHERE r.next_try AND (r.name, r.id) NOT IN (SELECT name, id FROM first_try)
  ON CONFLICT DO NOTHING
  RETURNING name, id, start_after
),
inserted AS (
  SELECT * FROM first_try
  UNION ALL
  SELECT * FROM next_slot
),"""
        if debounce
        else """inserted AS (
  SELECT * FROM first_try
),"""
    )
    columns = """id, name, data, priority, start_after, created_on, singleton_key,
    singleton_on, group_id, group_tier, expire_seconds, deletion_seconds, keep_until,
    retry_limit, retry_delay, retry_backoff, retry_delay_max, policy, dead_letter,
    heartbeat_seconds, blocked, blocking, pending_dependencies"""
    values = """id, name, data, priority, start_after, created_on, singleton_key, singleton_on,
    group_id, group_tier, expire_seconds, deletion_seconds, keep_until, retry_limit,
    retry_delay, retry_backoff, retry_delay_max, policy, dead_letter, heartbeat_seconds,
    false, false, 0"""
    return f"""
WITH input AS MATERIALIZED (
  SELECT coalesce(x.id, gen_random_uuid()) AS id, x.name, x.data, x.priority, x.start_at,
    x.delay, x.singleton_key, x.singleton_seconds, x.next_slot, x.group_id, x.group_tier,
    x.expire_in_seconds, x.delete_after_seconds, x.retention_seconds, x.retry_limit,
    x.retry_delay, x.retry_backoff, x.retry_delay_max, x.dead_letter, x.heartbeat_seconds,
    x.ord
  FROM ROWS FROM (json_to_recordset(CAST(:jobs AS json)) AS (
    id uuid, name text, data jsonb, priority int, start_at timestamptz, delay int,
    singleton_key text, singleton_seconds int, next_slot bool, group_id text, group_tier text,
    expire_in_seconds int, delete_after_seconds int, retention_seconds int, retry_limit int,
    retry_delay int, retry_backoff bool, retry_delay_max int, dead_letter text,
    heartbeat_seconds int)) WITH ORDINALITY AS x (
    id, name, data, priority, start_at, delay, singleton_key, singleton_seconds, next_slot,
    group_id, group_tier, expire_in_seconds, delete_after_seconds, retention_seconds,
    retry_limit, retry_delay, retry_backoff, retry_delay_max, dead_letter, heartbeat_seconds, ord)
),
clock AS (
  SELECT {{schema}}.job_now() AS now, date_part('epoch', {{schema}}.job_now()) AS epoch
),
attempts AS (
  SELECT i.*, q.policy AS queue_policy, q.expire_seconds AS queue_expire,
    q.deletion_seconds AS queue_deletion, q.retention_seconds AS queue_retention,
    q.retry_limit AS queue_retry_limit, q.retry_delay AS queue_retry_delay,
    q.retry_backoff AS queue_retry_backoff, q.retry_delay_max AS queue_retry_delay_max,
    q.dead_letter AS queue_dead_letter, q.heartbeat_seconds AS queue_heartbeat,
    a.next_try, c.now,
    CASE
      WHEN a.next_try THEN c.now + make_interval(secs =>
        i.singleton_seconds - floor(c.epoch - i.singleton_seconds * floor(c.epoch / i.singleton_seconds))
        + CASE WHEN i.singleton_seconds > 1 THEN 1 ELSE 0 END)
      WHEN i.start_at IS NOT NULL THEN i.start_at
      ELSE c.now + make_interval(secs => coalesce(i.delay, 0))
    END AS start_after,
    CASE WHEN i.singleton_seconds IS NOT NULL THEN
      timestamp 'epoch' + make_interval(secs => i.singleton_seconds * floor(
        (c.epoch + CASE WHEN a.next_try THEN i.singleton_seconds ELSE 0 END) / i.singleton_seconds))
    END AS singleton_on
  FROM input i
  CROSS JOIN clock c
  {next_slot_rows}
),
prepared AS (
  SELECT next_try, id, name, data, coalesce(priority, 0) AS priority, start_after,
    now AS created_on, singleton_key, singleton_on, group_id, group_tier,
    coalesce(expire_in_seconds, queue_expire, 900) AS expire_seconds,
    coalesce(delete_after_seconds, queue_deletion, 604800) AS deletion_seconds,
    start_after + make_interval(secs => coalesce(retention_seconds, queue_retention, 1209600))
      AS keep_until,
    coalesce(retry_limit, queue_retry_limit, 2) AS retry_limit,
    coalesce(retry_delay, queue_retry_delay, 0) AS retry_delay,
    coalesce(retry_backoff, queue_retry_backoff, false) AS retry_backoff,
    coalesce(retry_delay_max, queue_retry_delay_max) AS retry_delay_max,
    queue_policy AS policy,
    coalesce(dead_letter, queue_dead_letter) AS dead_letter,
    coalesce(heartbeat_seconds, queue_heartbeat) AS heartbeat_seconds
  FROM attempts
),
first_try AS (
  INSERT INTO {{schema}}.job ({columns})
  SELECT {values}
  FROM prepared
  WHERE NOT next_try
  ON CONFLICT DO NOTHING
  RETURNING name, id, start_after
),
{next_slot % {"columns": columns, "values": values}}
woken AS (
  SELECT pg_notify(CAST(:channel AS text), q.name)
  FROM {{schema}}.queue q
  WHERE q.notify
    AND q.name IN (SELECT name FROM inserted WHERE start_after <= {{schema}}.job_now())
)
SELECT string_agg(
    CASE WHEN EXISTS (SELECT 1 FROM inserted n WHERE n.name = i.name AND n.id = i.id)
         THEN CAST(i.id AS text) ELSE '' END,
    ',' ORDER BY i.ord) AS ids
FROM input i
WHERE (SELECT count(*) FROM woken) >= 0
"""


INSERT_JOBS = _insert_jobs(debounce=False)
INSERT_JOBS_DEBOUNCED = _insert_jobs(debounce=True)


class _PolicyRules(NamedTuple):
    """What a queue policy adds to the shared fetch: CTEs, a filter, one job per key."""

    ctes: str
    filter: str
    one_per_key: bool


def _fetch(rules: _PolicyRules, returning: str, grouped: bool = False) -> str:
    """pg-boss 12.38 fetchNextJob(), with a policy's extra rules spliced in.

    Shared by every policy: eligible rows are queued (created/retry), not blocked by a
    flow and due; they are taken in ``priority DESC, created_on`` order (12.38 has no id
    tie-break), locked with SKIP LOCKED and claimed in the same statement. A claim bumps
    ``retry_count`` only when the job ran before, so the returned value names the attempt.

    ``grouped`` adds group concurrency (``:group_limit``, ``:group_tiers``): count the
    active jobs of each group live, admit a candidate only below its tier's limit and,
    within the batch, rank each group's candidates by id and keep
    ``active + rank <= limit``. Like pg-boss, the group machinery is only in the
    statement of a fetch that asks for a limit: left in with NULL limits it cost every
    plain fetch about a quarter of its speed at batch sizes up to 10 (planning time).

    ``returning`` is what comes back per claimed job: only what ``Job`` holds on the hot
    path (decoding every column of a 1000-job batch cost pg8000 about 40% more), or
    every column for ``include_metadata``.
    """
    key_rank = "row_number() OVER (PARTITION BY singleton_key)" if rules.one_per_key else "1"
    if grouped:
        group_ctes = """
active_groups AS MATERIALIZED (
  SELECT coalesce(jsonb_object_agg(group_id, active), '{}'::jsonb) AS counts
  FROM (
    SELECT group_id, count(*)::int AS active
    FROM {schema}.job
    WHERE name = :name AND state = 'active' AND group_id IS NOT NULL
    GROUP BY group_id
  ) counted
),"""
        group_columns = """,
    coalesce(((SELECT counts FROM active_groups) ->> j.group_id)::int, 0) AS group_active,
    coalesce((CAST(:group_tiers AS jsonb) ->> j.group_tier)::int, CAST(:group_limit AS int))
      AS group_limit"""
        group_filter = """
    AND (j.group_id IS NULL
         OR coalesce(((SELECT counts FROM active_groups) ->> j.group_id)::int, 0)
            < coalesce((CAST(:group_tiers AS jsonb) ->> j.group_tier)::int,
                       CAST(:group_limit AS int)))"""
        chosen = f"""chosen AS (
  SELECT id
  FROM (
    SELECT id, group_id, group_active, group_limit,
      row_number() OVER (PARTITION BY group_id ORDER BY id) AS group_rank
    FROM (SELECT *, {key_rank} AS key_rank FROM candidates) one_per_key
    WHERE key_rank = 1
  ) ranked
  WHERE group_id IS NULL OR group_active + group_rank <= group_limit
)"""
    elif rules.one_per_key:
        group_ctes = group_columns = group_filter = ""
        chosen = f"""chosen AS (
  SELECT id FROM (SELECT id, {key_rank} AS key_rank FROM candidates) one_per_key
  WHERE key_rank = 1
)"""
    else:
        group_ctes = group_columns = group_filter = ""
        chosen = "chosen AS (SELECT id FROM candidates)"
    return f"""
WITH {rules.ctes}{group_ctes}
candidates AS (
  SELECT j.id, j.singleton_key, j.group_id{group_columns}
  FROM {{schema}}.job j
  WHERE j.name = :name
    AND j.state < 'active'
    AND NOT j.blocked
    AND j.start_after <= {{schema}}.job_now()
    {rules.filter}{group_filter}
  ORDER BY j.priority DESC, j.created_on
  LIMIT :limit
  FOR UPDATE OF j SKIP LOCKED
),
{chosen}
UPDATE {{schema}}.job j
SET state = 'active',
    started_on = {{schema}}.job_now(),
    heartbeat_on = {{schema}}.job_now(),
    retry_count = CASE WHEN j.started_on IS NOT NULL THEN j.retry_count + 1 ELSE j.retry_count END
WHERE j.name = :name AND j.id = ANY(ARRAY(SELECT id FROM chosen))
RETURNING {returning}
"""


# What a fetch returns per job without include_metadata: the fields of ``Job``. Ids come
# back as text, which is what the caller keeps, and started_on as epoch seconds: the
# driver decodes uuids and timestamps in Python, and that cost more than the rest of a row.
_JOB_COLUMNS = """CAST(j.id AS text) AS id, j.name, j.data, j.retry_count, j.retry_limit, j.expire_seconds,
  j.heartbeat_seconds, CAST(extract(epoch FROM j.started_on) AS float8) AS started_on, j.group_id, j.group_tier,
  j.priority, j.singleton_key"""

# standard, short and exclusive queues: their policies only restrict inserts.
_PLAIN = _PolicyRules(ctes="", filter="", one_per_key=False)

# singleton and stately queues (:policy): a key that already has an active job of that
# policy is skipped (a live probe, as 12.38 does), and a batch takes at most one job per
# singleton_key, so the claim never trips job_i2/i3.
_SINGLETON = _PolicyRules(
    ctes="",
    filter="""AND NOT EXISTS (
      SELECT 1 FROM {schema}.job busy
      WHERE busy.name = j.name AND busy.state = 'active' AND busy.policy = :policy
        AND coalesce(busy.singleton_key, '') = coalesce(j.singleton_key, ''))""",
    one_per_key=True,
)

# key_strict_fifo queues: only each key's head may be claimed, the head being the due,
# unblocked queued job ordered retry before created, then oldest (then id); and a key is
# held back while any other job of it is active, in retry or failed (a failed job blocks
# its key until it is deleted or retried).
_KEY_STRICT_FIFO = _PolicyRules(
    ctes="""heads AS MATERIALIZED (
  SELECT DISTINCT ON (h.singleton_key) h.id
  FROM {schema}.job h
  WHERE h.name = :name AND h.state < 'active' AND NOT h.blocked
    AND h.policy = 'key_strict_fifo' AND h.start_after <= {schema}.job_now()
  ORDER BY h.singleton_key, h.state DESC, h.created_on, h.id
),""",
    filter="""AND j.id IN (SELECT id FROM heads)
    AND NOT EXISTS (
      SELECT 1 FROM {schema}.job held
      WHERE held.name = j.name AND held.singleton_key = j.singleton_key
        AND held.state IN ('active', 'retry', 'failed') AND held.policy = 'key_strict_fifo'
        AND held.id <> j.id)""",
    one_per_key=False,
)

# pg-boss 12.38 fetchNextJob(), per policy; the *_DETAILED ones return every column and
# the *_GROUPED ones apply group concurrency.
FETCH_JOBS = _fetch(_PLAIN, returning=_JOB_COLUMNS)
FETCH_JOBS_DETAILED = _fetch(_PLAIN, returning="j.*")
FETCH_JOBS_GROUPED = _fetch(_PLAIN, returning=_JOB_COLUMNS, grouped=True)
FETCH_JOBS_GROUPED_DETAILED = _fetch(_PLAIN, returning="j.*", grouped=True)
FETCH_JOBS_SINGLETON = _fetch(_SINGLETON, returning=_JOB_COLUMNS)
FETCH_JOBS_SINGLETON_DETAILED = _fetch(_SINGLETON, returning="j.*")
FETCH_JOBS_SINGLETON_GROUPED = _fetch(_SINGLETON, returning=_JOB_COLUMNS, grouped=True)
FETCH_JOBS_SINGLETON_GROUPED_DETAILED = _fetch(_SINGLETON, returning="j.*", grouped=True)
FETCH_JOBS_KEY_STRICT_FIFO = _fetch(_KEY_STRICT_FIFO, returning=_JOB_COLUMNS)
FETCH_JOBS_KEY_STRICT_FIFO_DETAILED = _fetch(_KEY_STRICT_FIFO, returning="j.*")
FETCH_JOBS_KEY_STRICT_FIFO_GROUPED = _fetch(_KEY_STRICT_FIFO, returning=_JOB_COLUMNS, grouped=True)
FETCH_JOBS_KEY_STRICT_FIFO_GROUPED_DETAILED = _fetch(_KEY_STRICT_FIFO, returning="j.*", grouped=True)

# pg-boss 12.38 complete() with job objects (the attempt fence): only an active job whose
# retry_count is still the fetched one is completed, so a late settle after expiry or a
# re-claim changes nothing. Each job carries its own output (NULL when none).
COMPLETE_JOBS = """
WITH input AS (
  SELECT * FROM json_to_recordset(CAST(:jobs AS json)) AS x (id uuid, retry_count int, output jsonb)
)
UPDATE {schema}.job j
SET completed_on = {schema}.job_now(), state = 'completed', output = i.output
FROM input i
WHERE j.name = :name AND j.id = i.id AND j.state = 'active' AND j.retry_count = i.retry_count
RETURNING CAST(j.id AS text) AS id
"""


def _fail(picked: str, removed: str, result: str) -> str:
    """pg-boss 12.38's failure path (failJobsBody) after the rows to fail are chosen.

    ``removed`` is a DELETE … RETURNING every column plus ``failure_output``. Each row is
    inserted again under its id: as ``retry`` with a new start_after while retries
    remain, else as ``failed`` (completed_on = now). A retry that conflicts with a
    policy index (stately: the key already has a job in retry) is inserted as ``failed``
    instead. Each ``failed`` row with a dead letter queue gets a new job there built from
    the dead letter queue's settings, with the source_* provenance of the failed job.

    Retry delay in seconds: fixed ``retry_delay``; with backoff
    ``max(retry_delay, 1) * 2^(min(16, retry_count + 1) - 1) * (1 + random())``, capped
    by ``retry_delay_max`` when set. When ``retry_count = retry_limit`` start_after is
    kept (the job is failing for good).
    """
    columns = """id, name, priority, data, state, retry_limit, retry_count, retry_delay,
    retry_backoff, retry_delay_max, start_after, started_on, singleton_key, singleton_on,
    group_id, group_tier, expire_seconds, deletion_seconds, created_on, completed_on,
    keep_until, policy, output, dead_letter, heartbeat_on, heartbeat_seconds, blocked,
    blocking, pending_dependencies, source_name, source_id, source_created_on,
    source_retry_count, source_output, source_root_id, trace_context"""
    kept = """started_on, singleton_key, singleton_on, group_id, group_tier, expire_seconds,
    deletion_seconds, created_on"""
    tail = """keep_until, policy, failure_output, dead_letter, NULL, heartbeat_seconds,
    blocked, blocking, pending_dependencies, source_name, source_id, source_created_on,
    source_retry_count, source_output, source_root_id, trace_context"""
    settled = """id, name, state, priority, data, retry_count, created_on, output, dead_letter,
    singleton_key, group_id, group_tier, source_root_id, trace_context"""
    return f"""
WITH {picked}
removed AS (
  {removed}
),
again AS (
  INSERT INTO {{schema}}.job ({columns})
  SELECT id, name, priority, data,
    CAST(CASE WHEN retry_count < retry_limit THEN 'retry' ELSE 'failed' END
      AS {{schema}}.job_state),
    retry_limit, retry_count, retry_delay, retry_backoff, retry_delay_max,
    CASE
      WHEN retry_count = retry_limit THEN start_after
      WHEN NOT retry_backoff THEN {{schema}}.job_now() + make_interval(secs => retry_delay)
      ELSE {{schema}}.job_now() + make_interval(secs => least(retry_delay_max,
        greatest(retry_delay, 1) * 2 ^ (least(16, retry_count + 1) - 1) * (1 + random())))
    END,
    {kept},
    CASE WHEN retry_count < retry_limit THEN NULL ELSE {{schema}}.job_now() END,
    {tail}
  FROM removed
  ON CONFLICT DO NOTHING
  RETURNING {settled}
),
conflicted AS (
  INSERT INTO {{schema}}.job ({columns})
  SELECT id, name, priority, data, CAST('failed' AS {{schema}}.job_state),
    retry_limit, retry_count, retry_delay, retry_backoff, retry_delay_max, start_after,
    {kept},
    {{schema}}.job_now(),
    {tail}
  FROM removed
  WHERE id NOT IN (SELECT id FROM again)
  RETURNING {settled}
),
settled AS (
  SELECT * FROM again
  UNION ALL
  SELECT * FROM conflicted
),
dead_lettered AS (
  INSERT INTO {{schema}}.job (name, priority, data, retry_limit, retry_backoff, retry_delay,
    start_after, created_on, keep_until, deletion_seconds, expire_seconds, singleton_key,
    group_id, group_tier, heartbeat_seconds, source_name, source_id, source_created_on,
    source_retry_count, source_output, source_root_id, trace_context)
  SELECT s.dead_letter, s.priority, s.data, dlq.retry_limit, dlq.retry_backoff,
    dlq.retry_delay, {{schema}}.job_now(), {{schema}}.job_now(),
    {{schema}}.job_now() + make_interval(secs => dlq.retention_seconds),
    dlq.deletion_seconds, dlq.expire_seconds, s.singleton_key, s.group_id, s.group_tier,
    dlq.heartbeat_seconds, s.name, s.id, s.created_on, s.retry_count, s.output,
    coalesce(s.source_root_id, s.id), s.trace_context
  FROM settled s
  JOIN {{schema}}.queue dlq ON dlq.name = s.dead_letter
  WHERE s.state = 'failed'
  RETURNING id, source_id
)
{result}
"""


_SETTLED = """
SELECT s.id, CAST(s.state AS text) AS state, d.id AS dead_letter_id
FROM settled s
LEFT JOIN dead_lettered d ON d.source_id = s.id
"""

# pg-boss 12.38 fail() with job objects and per-job outputs (failJobsByIdWithOutputs):
# fenced like COMPLETE_JOBS on the fetched attempt and state = 'active'.
FAIL_JOBS = _fail(
    """input AS (
  SELECT * FROM json_to_recordset(CAST(:jobs AS json)) AS x (id uuid, retry_count int, output jsonb)
),""",
    """DELETE FROM {schema}.job j
  USING input i
  WHERE j.name = :name AND j.id = i.id AND j.state = 'active' AND j.retry_count = i.retry_count
  RETURNING j.*, i.output AS failure_output""",
    _SETTLED,
)


def _expire(predicate: str, message: str) -> str:
    """pg-boss 12.38's monitor expiry (expireJobs): one batch of at most :limit jobs.

    The predicate is checked again by the DELETE, so a job settled after it was picked
    is left alone. ``picked`` tells the caller whether a full batch was taken.
    """
    return _fail(
        f"""picked AS (
  SELECT id FROM {{schema}}.job j WHERE j.name = :name AND {predicate} LIMIT :limit
),""",
        f"""DELETE FROM {{schema}}.job j
  WHERE j.name = :name AND {predicate} AND j.id IN (SELECT id FROM picked)
  RETURNING j.*, CAST('{{"value": {{"message": "{message}"}}}}' AS jsonb) AS failure_output""",
        """SELECT p.picked, s.id, CAST(s.state AS text) AS state, d.id AS dead_letter_id
FROM (SELECT count(*) AS picked FROM picked) p
LEFT JOIN settled s ON true
LEFT JOIN dead_lettered d ON d.source_id = s.id
""",
    )


# pg-boss 12.38 failJobsByTimeout(): active jobs past started_on + expire_seconds, run
# under the '<table>failJobsByTimeout' advisory lock.
FAIL_TIMED_OUT = _expire(
    "j.state = 'active' AND j.started_on + j.expire_seconds * interval '1 second' < {schema}.job_now()",
    "job timed out",
)

# pg-boss 12.38 failJobsByHeartbeat(): active jobs with a heartbeat whose last beat is
# older than heartbeat_seconds, under the '<table>failJobsByHeartbeat' advisory lock.
FAIL_HEARTBEAT_LOST = _expire(
    "j.state = 'active' AND j.heartbeat_seconds IS NOT NULL"
    " AND j.heartbeat_on + j.heartbeat_seconds * interval '1 second' < {schema}.job_now()",
    "job heartbeat timeout",
)

# pg-boss 12.38 touch() with job objects: refresh the heartbeat of still-held attempts.
TOUCH_JOBS = """
WITH input AS (
  SELECT * FROM json_to_recordset(CAST(:jobs AS json)) AS x (id uuid, retry_count int)
)
UPDATE {schema}.job j
SET heartbeat_on = {schema}.job_now()
FROM input i
WHERE j.name = :name AND j.id = i.id AND j.state = 'active' AND j.retry_count = i.retry_count
RETURNING CAST(j.id AS text) AS id
"""

# pg-boss 12.38 cancel() by id: any job not yet finished, active ones included; a
# cancelled job no longer holds its throttle slot.
CANCEL_JOBS = """
UPDATE {schema}.job
SET completed_on = {schema}.job_now(), state = 'cancelled'
WHERE name = :name AND id = ANY(CAST(:ids AS uuid[])) AND state < 'completed'
RETURNING id
"""

# pg-boss 12.38 resume(): cancelled jobs are queued again, due no earlier than now, and
# lose upsert_by_key. Like pg-boss it then takes the resumed jobs that the queue's
# retained_count had counted (finished by retained_on) off that count.
RESUME_JOBS = """
WITH resumable AS (
  SELECT id, completed_on
  FROM {schema}.job
  WHERE name = :name AND id = ANY(CAST(:ids AS uuid[])) AND state = 'cancelled'
),
resumed AS (
  UPDATE {schema}.job j
  SET completed_on = NULL, state = 'created', upsert_by_key = NULL,
      start_after = greatest(j.start_after, {schema}.job_now())
  FROM resumable r
  WHERE j.name = :name AND j.id = r.id AND j.state = 'cancelled'
  RETURNING r.completed_on
),
counted AS (
  SELECT count(*)::int AS changed,
    (count(*) FILTER (WHERE completed_on <= (SELECT retained_on FROM {schema}.queue
                                              WHERE name = :name)))::int AS retained
  FROM resumed
),
recounted AS (
  UPDATE {schema}.queue q
  SET retained_count = CASE WHEN q.retained_count IS NULL THEN NULL
                            ELSE greatest(q.retained_count - c.retained, 0) END
  FROM counted c
  WHERE q.name = :name AND c.retained > 0
  RETURNING 1
)
SELECT changed FROM counted
"""

# pg-boss 12.38 retry(): failed jobs go back to retry with one more allowed attempt, due
# no earlier than now.
RETRY_JOBS = """
UPDATE {schema}.job
SET state = 'retry', retry_limit = retry_limit + 1, completed_on = NULL,
    start_after = greatest(start_after, {schema}.job_now())
WHERE name = :name AND id = ANY(CAST(:ids AS uuid[])) AND state = 'failed'
RETURNING id
"""

# pg-boss 12.38 deleteJob() by id, in any state. Like pg-boss it takes the deleted jobs
# that the queue's retained_count had counted off both retained_count and total_count.
DELETE_JOBS = """
WITH deleted AS (
  DELETE FROM {schema}.job
  WHERE name = :name AND id = ANY(CAST(:ids AS uuid[]))
  RETURNING state, completed_on
),
counted AS (
  SELECT count(*)::int AS changed,
    (count(*) FILTER (WHERE state IN ('completed', 'cancelled')
      AND completed_on <= (SELECT retained_on FROM {schema}.queue WHERE name = :name)))::int
      AS retained
  FROM deleted
),
recounted AS (
  UPDATE {schema}.queue q
  SET retained_count = CASE WHEN q.retained_count IS NULL THEN NULL
                            ELSE greatest(q.retained_count - c.retained, 0) END,
      total_count = greatest(q.total_count - c.retained, 0)
  FROM counted c
  WHERE q.name = :name AND c.retained > 0
  RETURNING 1
)
SELECT changed FROM counted
"""

# pg-boss 12.38 getJobById(): one job, every column.
GET_JOB = """
SELECT * FROM {schema}.job WHERE name = :name AND id = CAST(:id AS uuid)
"""
