"""Every SQL statement this package sends to pg-boss's schema, and nothing else.

One builder per statement family renders the statement for the installed schema (a
``Capabilities``) and the configured schema name. Builders are cached, so each distinct
statement is built once per process. One templating style throughout: f-strings over
``_Names`` (the quoted schema and the clock expression); every value is a bound
``:parameter``. The schema name is validated before it is quoted into any statement.

Each statement names the pg-boss behaviour it mirrors and, where older schemas differ,
what they do instead. Columns a schema lacks are left out of writes and read as NULL
(or pg-boss's default) so callers see one row shape for every schema.

Batches travel as one JSON document read with ``json_to_recordset``: measured with
pg8000 against parallel arrays + ``unnest`` it was faster at every batch size (1000
jobs: 31 ms against 48 ms), and one document keeps rows aligned by construction.

Schemas 21-24 (pg-boss 10.x, ``caps.archive``) get the same statements over their
columns: ``expire_in`` (an interval) where later schemas have ``expire_seconds``,
``retention_minutes`` and ``partition_name`` on the queue, no ``retry_delay_max`` or
``deletion_seconds`` (read as NULL), and an ``archive`` table that ``get_job`` and
``delete_jobs`` also look in, because 10.x's supervisor moves finished jobs there.

Timestamps come from ``job_now()`` where the schema has it (42+, so a test clock
installed by pg-boss applies to our writes too), else from ``now()``. Jobs are
addressed through the partitioned parent ``job`` with a ``name`` predicate; Postgres
routes and prunes to the queue's own table.
"""

from __future__ import annotations

from functools import cache
from typing import NamedTuple

from shared.config import SCHEMA_NAME
from shared.pgboss.capabilities import Capabilities


class _Names(NamedTuple):
    """What builders splice into statement text: never a value, only these names."""

    s: str  # the quoted schema
    now: str  # pg-boss's clock in this schema


def quoted_schema(schema: str) -> str:
    """The schema identifier, quoted, after checking it is a plain lower-case name."""
    if not SCHEMA_NAME.match(schema):
        raise ValueError(f"invalid pg-boss schema name {schema!r}")
    return f'"{schema}"'


def _names(caps: Capabilities | None, schema: str) -> _Names:
    s = quoted_schema(schema)
    return _Names(s=s, now=f"{s}.job_now()" if caps is not None and caps.has_job_now else "now()")


def _csv(items: list[str]) -> str:
    return ",\n    ".join(items)


# -- schema ---------------------------------------------------------------------------


@cache
def schema_installed() -> str:
    """Is pg-boss installed in this schema? to_regclass answers NULL instead of raising
    when the version table is missing (every pg-boss version has one)."""
    return """
SELECT to_regclass(:version_table) IS NOT NULL AS installed
"""


@cache
def capabilities(schema: str) -> str:
    """The version row and the columns and functions that tell features apart."""
    n = _names(None, schema)
    literal = n.s.replace("'", "''")

    def columns(table: str) -> str:
        return f"""(SELECT array_agg(CAST(attname AS text)) FROM pg_attribute
   WHERE attrelid = to_regclass('{literal}.{table}') AND attnum > 0 AND NOT attisdropped)"""

    return f"""
SELECT v.version,
  {columns("job")} AS job_columns,
  {columns("queue")} AS queue_columns,
  {columns("version")} AS version_columns,
  to_regprocedure('{literal}.job_now()') IS NOT NULL AS has_job_now
FROM {n.s}.version v
"""


@cache
def advisory_lock() -> str:
    """pg-boss's ``locked()`` (11.0 to 12.38): its transactions set these two timeouts,
    then take a transaction-scoped advisory lock keyed by sha224 of
    current_database() || '.pgboss.' || <schema><suffix>, first 64 bits as bigint.
    The settings come from a materialized CTE so they are in force before the lock wait."""
    return """
WITH settings AS MATERIALIZED (
  SELECT set_config('lock_timeout', '30000', true) AS lock_timeout,
         set_config('idle_in_transaction_session_timeout', '30000', true) AS idle_timeout
)
SELECT pg_advisory_xact_lock(
  ('x' || encode(sha224(CAST(current_database() || '.pgboss.' || CAST(:key AS text) AS bytea)), 'hex'))
    ::bit(64)::bigint)
FROM settings
"""


# -- queues ---------------------------------------------------------------------------


def _queue_columns(caps: Capabilities) -> str:
    """A queue's configuration; heartbeat_seconds (30+) and notify (32+) default when absent.

    10.x rows may hold NULL settings (its ``create_queue`` stores only what was given):
    they read as the defaults its insert applies, retention from whole minutes, and the
    queue's own partition as its table."""
    heartbeat = "q.heartbeat_seconds" if caps.heartbeats else "CAST(NULL AS int) AS heartbeat_seconds"
    notify = "q.notify" if caps.notify else "false AS notify"
    if caps.archive:
        return f"""
  q.name, coalesce(q.policy, 'standard') AS policy, coalesce(q.retry_limit, 2) AS retry_limit,
  coalesce(q.retry_delay, 0) AS retry_delay, coalesce(q.retry_backoff, false) AS retry_backoff,
  CAST(NULL AS int) AS retry_delay_max, coalesce(q.expire_seconds, 900) AS expire_seconds,
  coalesce(q.retention_minutes * 60, 1209600) AS retention_seconds,
  CAST(NULL AS int) AS deletion_seconds, q.dead_letter, {heartbeat}, {notify},
  true AS partition, q.partition_name AS table_name"""
    return f"""
  q.name, q.policy, q.retry_limit, q.retry_delay, q.retry_backoff, q.retry_delay_max,
  q.expire_seconds, q.retention_seconds, q.deletion_seconds, q.dead_letter,
  {heartbeat}, {notify}, q.partition, q.table_name"""


@cache
def get_queue(caps: Capabilities, schema: str) -> str:
    """pg-boss getQueue(): one queue's configuration row."""
    n = _names(caps, schema)
    return f"""
SELECT {_queue_columns(caps)}
FROM {n.s}.queue q
WHERE q.name = :name
"""


@cache
def get_queues(caps: Capabilities, schema: str) -> str:
    """pg-boss getQueues(), with the counts computed from the jobs now rather than read
    from the stats columns its monitor refreshes. "queued" is created + retry (including
    deferred and blocked ones), "deferred" those not yet due and (31+) not blocked."""
    n = _names(caps, schema)
    unblocked = "AND NOT j.blocked " if caps.flows else ""
    return f"""
SELECT {_queue_columns(caps)},
  counts.queued AS queued_count, counts.active AS active_count,
  counts.deferred AS deferred_count, counts.total AS total_count
FROM {n.s}.queue q
CROSS JOIN LATERAL (
  SELECT count(*) FILTER (WHERE j.state < 'active') AS queued,
         count(*) FILTER (WHERE j.state = 'active') AS active,
         count(*) FILTER (WHERE j.state < 'active' {unblocked}AND j.start_after > {n.now}) AS deferred,
         count(*) AS total
  FROM {n.s}.job j
  WHERE j.name = q.name
) counts
ORDER BY q.name
"""


@cache
def create_queue(caps: Capabilities, schema: str) -> str:
    """pg-boss createQueue(): its own SQL function (``create_queue(name, options jsonb)``
    from 11.0 on), run after the advisory lock with the 'create-queue' suffix. The
    function inserts with ON CONFLICT DO NOTHING, so an existing queue is left as it is.

    10.x's takes ``json`` with its own option names (``retentionMinutes``) and, before
    24 (10.1.5), raises for an existing queue: it is only called for a missing one."""
    n = _names(caps, schema)
    if not caps.archive:
        return f"""
SELECT {n.s}.create_queue(CAST(:name AS text), CAST(:options AS jsonb))
"""
    return f"""
SELECT {n.s}.create_queue(CAST(:name AS text), CAST(:options AS json))
WHERE NOT EXISTS (SELECT 1 FROM {n.s}.queue WHERE name = :name)
"""


@cache
def existing_queues(schema: str) -> str:
    """Which of these queue names exist; names the missing queue after a foreign-key
    failure (pg-boss reports "Queue <name> does not exist" the same way)."""
    n = _names(None, schema)
    return f"""
SELECT name FROM {n.s}.queue WHERE name = ANY(CAST(:names AS text[]))
"""


# -- sending --------------------------------------------------------------------------


@cache
def insert_jobs(caps: Capabilities, schema: str, *, debounce: bool) -> str:
    """pg-boss insertJobs() as used by send(), sendThrottled(), sendDebounced() and
    insert(), for any number of queues at once.

    Per row, every setting is the job's option, else the queue's column, else the
    schema default (which only a vanished queue reaches, so q_fkey reports it, or a
    10.x queue created without that setting);
    ``policy`` always comes from the queue. keep_until counts from start_after. ON
    CONFLICT DO NOTHING turns a policy, throttle or id conflict into no row. Columns the
    schema lacks (groups 27+, heartbeats 30+, flows 31+) are not written; the caller has
    refused options that need them.

    Debounce (sendDebounced, singletonNextSlot), only where a batch asks for it (it
    doubles the rows the statement plans over): a row that found its slot taken is tried
    once more in the next slot, due about a second after that slot opens:
    start_after = now + (S - whole seconds elapsed in the slot) + (1 when S > 1).

    A NOTIFY on the queue's channel (:channel, pg-boss notifyChannelSql, 32+) goes out
    once per notify-enabled queue that received a job due now, in the same transaction.

    Ids not given are made here with gen_random_uuid(), as pg-boss does. The answer is
    one text value: every job's id in input order, empty where the job was suppressed;
    a thousand ids cost one row instead of a thousand rows to decode.
    """
    n = _names(caps, schema)
    pairs = [
        ("id", "id"),
        ("name", "name"),
        ("data", "data"),
        ("priority", "priority"),
        ("start_after", "start_after"),
        ("created_on", "created_on"),
        ("singleton_key", "singleton_key"),
        ("singleton_on", "singleton_on"),
    ]
    if caps.groups:
        pairs += [("group_id", "group_id"), ("group_tier", "group_tier")]
    if caps.archive:
        pairs.append(("expire_in", "make_interval(secs => expire_seconds)"))
    else:
        pairs += [("expire_seconds", "expire_seconds"), ("deletion_seconds", "deletion_seconds")]
    pairs += [
        ("keep_until", "keep_until"),
        ("retry_limit", "retry_limit"),
        ("retry_delay", "retry_delay"),
        ("retry_backoff", "retry_backoff"),
    ]
    if caps.retry_delay_max:
        pairs.append(("retry_delay_max", "retry_delay_max"))
    pairs += [
        ("policy", "policy"),
        ("dead_letter", "dead_letter"),
    ]
    if caps.heartbeats:
        pairs.append(("heartbeat_seconds", "heartbeat_seconds"))
    if caps.flows:
        pairs += [("blocked", "false"), ("blocking", "false"), ("pending_dependencies", "0")]
    columns = _csv([column for column, _ in pairs])
    values = _csv([value for _, value in pairs])
    queue_heartbeat = "q.heartbeat_seconds" if caps.heartbeats else "CAST(NULL AS int)"
    if caps.archive:
        # 10.x: retention in whole minutes, no per-queue deletion or delay cap; a backed
        # off retry waits at least a second.
        queue_deletion, queue_retention = "CAST(NULL AS int)", "q.retention_minutes * 60"
        queue_delay_max = "CAST(NULL AS int)"
        retry_delay = """CASE WHEN coalesce(retry_backoff, queue_retry_backoff, false)
      THEN greatest(coalesce(retry_delay, queue_retry_delay, 0), 1)
      ELSE coalesce(retry_delay, queue_retry_delay, 0) END"""
    else:
        queue_deletion, queue_retention, queue_delay_max = (
            "q.deletion_seconds",
            "q.retention_seconds",
            "q.retry_delay_max",
        )
        retry_delay = "coalesce(retry_delay, queue_retry_delay, 0)"
    if debounce:
        rows = f"""CROSS JOIN LATERAL (VALUES (false), (true)) AS a (next_try)
  LEFT JOIN {n.s}.queue q ON q.name = i.name
  WHERE NOT a.next_try OR coalesce(i.next_slot, false)"""
        inserted = f"""next_slot AS (
  INSERT INTO {n.s}.job ({columns})
  SELECT {values}
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
    else:
        rows = f"""CROSS JOIN (VALUES (false)) AS a (next_try)
  LEFT JOIN {n.s}.queue q ON q.name = i.name"""
        inserted = """inserted AS (
  SELECT * FROM first_try
),"""
    if caps.notify:
        woken = f"""woken AS (
  SELECT pg_notify(CAST(:channel AS text), q.name)
  FROM {n.s}.queue q
  WHERE q.notify
    AND q.name IN (SELECT name FROM inserted WHERE start_after <= {n.now})
)"""
        # PostgreSQL runs a data-modifying CTE whatever reads it, but a plain SELECT CTE
        # (woken) only when something reads it: this always-true filter is there only to
        # make the NOTIFYs happen.
        answer_filter = "WHERE (SELECT count(*) FROM woken) >= 0"
    else:
        woken = "woken AS (SELECT 1)"
        answer_filter = ""
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
  SELECT {n.now} AS now, date_part('epoch', {n.now}) AS epoch
),
attempts AS (
  SELECT i.*, q.policy AS queue_policy, q.expire_seconds AS queue_expire,
    {queue_deletion} AS queue_deletion, {queue_retention} AS queue_retention,
    q.retry_limit AS queue_retry_limit, q.retry_delay AS queue_retry_delay,
    q.retry_backoff AS queue_retry_backoff, {queue_delay_max} AS queue_retry_delay_max,
    q.dead_letter AS queue_dead_letter, {queue_heartbeat} AS queue_heartbeat,
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
  {rows}
),
prepared AS (
  SELECT next_try, id, name, data, coalesce(priority, 0) AS priority, start_after,
    now AS created_on, singleton_key, singleton_on, group_id, group_tier,
    coalesce(expire_in_seconds, queue_expire, 900) AS expire_seconds,
    coalesce(delete_after_seconds, queue_deletion, 604800) AS deletion_seconds,
    start_after + make_interval(secs => coalesce(retention_seconds, queue_retention, 1209600))
      AS keep_until,
    coalesce(retry_limit, queue_retry_limit, 2) AS retry_limit,
    {retry_delay} AS retry_delay,
    coalesce(retry_backoff, queue_retry_backoff, false) AS retry_backoff,
    coalesce(retry_delay_max, queue_retry_delay_max) AS retry_delay_max,
    queue_policy AS policy,
    coalesce(dead_letter, queue_dead_letter) AS dead_letter,
    coalesce(heartbeat_seconds, queue_heartbeat) AS heartbeat_seconds
  FROM attempts
),
first_try AS (
  INSERT INTO {n.s}.job ({columns})
  SELECT {values}
  FROM prepared
  WHERE NOT next_try
  ON CONFLICT DO NOTHING
  RETURNING name, id, start_after
),
{inserted}
{woken}
SELECT string_agg(
    CASE WHEN EXISTS (SELECT 1 FROM inserted n WHERE n.name = i.name AND n.id = i.id)
         THEN CAST(i.id AS text) ELSE '' END,
    ',' ORDER BY i.ord) AS ids
FROM input i
{answer_filter}
"""


# -- fetching -------------------------------------------------------------------------

# What a fetch returns per job without include_metadata: the fields of ``Job``. Ids come
# back as text, which is what the caller keeps, and started_on as epoch seconds: the
# driver decodes uuids and timestamps in Python, and that cost more than the rest of a row.
_JOB_FIELDS = (
    "CAST(j.id AS text) AS id",
    "j.name",
    "j.data",
    "j.retry_count",
    "j.retry_limit",
    "j.expire_seconds",
    "j.heartbeat_seconds",
    "CAST(extract(epoch FROM j.started_on) AS float8) AS started_on",
    "j.group_id",
    "j.group_tier",
    "j.priority",
    "j.singleton_key",
)

# Columns not every schema has, with what a job of a schema without them reads as: the
# later schemas' additions, and 11.0's settings that 10.x lacks or keeps as an interval.
_ADDED_COLUMNS = {
    "expire_seconds": "CAST(extract(epoch FROM j.expire_in) AS int)",
    "deletion_seconds": "CAST(NULL AS int)",
    "retry_delay_max": "CAST(NULL AS int)",
    "group_id": "CAST(NULL AS text)",
    "group_tier": "CAST(NULL AS text)",
    "heartbeat_on": "CAST(NULL AS timestamptz)",
    "heartbeat_seconds": "CAST(NULL AS int)",
    "blocked": "false",
    "blocking": "false",
    "pending_dependencies": "0",
    "source_name": "CAST(NULL AS text)",
    "source_id": "CAST(NULL AS uuid)",
    "source_created_on": "CAST(NULL AS timestamptz)",
    "source_retry_count": "CAST(NULL AS int)",
    "source_output": "CAST(NULL AS jsonb)",
    "source_root_id": "CAST(NULL AS uuid)",
    "trace_context": "CAST(NULL AS jsonb)",
    "upsert_by_key": "CAST(NULL AS bool)",
}


def _job_fields(caps: Capabilities) -> str:
    """``Job``'s fields, an absent column read as its default."""
    fields = []
    for field in _JOB_FIELDS:
        column = field.removeprefix("j.")
        absent = column in _ADDED_COLUMNS and column not in caps.job_columns
        fields.append(f"{_ADDED_COLUMNS[column]} AS {column}" if absent else field)
    return ", ".join(fields)


def _job_details(caps: Capabilities) -> str:
    """Every column of the row, plus the later schemas' columns read as their defaults."""
    absent = [f"{default} AS {column}" for column, default in _ADDED_COLUMNS.items() if column not in caps.job_columns]
    return ", ".join(["j.*", *absent])


class FetchRules(NamedTuple):
    """What a queue policy adds to the shared fetch: CTEs, a filter, one job per key."""

    ctes: str
    filter: str
    one_per_key: bool


def _policy_rules(caps: Capabilities, policy: str, n: _Names) -> FetchRules:
    unblocked = "AND NOT h.blocked " if caps.flows else ""
    if policy in ("singleton", "stately"):
        # A key that already has an active job of that policy is skipped (a live probe,
        # as 12.38 does), and a batch takes at most one job per singleton_key, so the
        # claim never trips job_i2/i3.
        return FetchRules(
            ctes="",
            filter=f"""AND NOT EXISTS (
      SELECT 1 FROM {n.s}.job busy
      WHERE busy.name = j.name AND busy.state = 'active' AND busy.policy = :policy
        AND coalesce(busy.singleton_key, '') = coalesce(j.singleton_key, ''))""",
            one_per_key=True,
        )
    if policy == "key_strict_fifo":
        # Only each key's head may be claimed, the head being the due, unblocked queued
        # job ordered retry before created, then oldest (then id); and a key is held back
        # while any other job of it is active, in retry or failed (a failed job blocks
        # its key until it is deleted or retried).
        return FetchRules(
            ctes=f"""heads AS MATERIALIZED (
  SELECT DISTINCT ON (h.singleton_key) h.id
  FROM {n.s}.job h
  WHERE h.name = :name AND h.state < 'active' {unblocked}
    AND h.policy = 'key_strict_fifo' AND h.start_after <= {n.now}
  ORDER BY h.singleton_key, h.state DESC, h.created_on, h.id
),""",
            filter=f"""AND j.id IN (SELECT id FROM heads)
    AND NOT EXISTS (
      SELECT 1 FROM {n.s}.job held
      WHERE held.name = j.name AND held.singleton_key = j.singleton_key
        AND held.state IN ('active', 'retry', 'failed') AND held.policy = 'key_strict_fifo'
        AND held.id <> j.id)""",
            one_per_key=False,
        )
    # standard, short and exclusive queues: their policies only restrict inserts.
    return FetchRules(ctes="", filter="", one_per_key=False)


@cache
def fetch_jobs(caps: Capabilities, schema: str, *, policy: str, grouped: bool, detailed: bool) -> str:
    """pg-boss fetchNextJob(), with a policy's extra rules spliced in.

    Shared by every policy: eligible rows are queued (created/retry), (31+) not blocked
    by a flow, and due; they are taken in ``priority DESC, created_on`` order, locked
    with SKIP LOCKED and claimed in the same statement, which (30+) also starts the
    heartbeat. A claim bumps ``retry_count`` only when the job ran before, so the
    returned value names the attempt. Singleton and stately fetches bind ``:policy``.

    ``grouped`` (27+) adds group concurrency (``:group_limit``, ``:group_tiers``): count
    the active jobs of each group live, admit a candidate only below its tier's limit
    and, within the batch, rank each group's candidates by id and keep
    ``active + rank <= limit``. Like pg-boss, the group machinery is only in the
    statement of a fetch that asks for a limit: left in with NULL limits it cost every
    plain fetch about a quarter of its speed at batch sizes up to 10 (planning time).

    ``detailed`` returns every column (``include_metadata``); otherwise only what
    ``Job`` holds (decoding every column of a 1000-job batch cost pg8000 about 40% more).
    """
    n = _names(caps, schema)
    rules = _policy_rules(caps, policy, n)
    key_rank = "row_number() OVER (PARTITION BY singleton_key)" if rules.one_per_key else "1"
    if grouped:
        group_ctes = f"""
active_groups AS MATERIALIZED (
  SELECT coalesce(jsonb_object_agg(group_id, active), '{{}}'::jsonb) AS counts
  FROM (
    SELECT group_id, count(*)::int AS active
    FROM {n.s}.job
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
    candidate_group = ", j.group_id" if grouped else ""
    unblocked = "\n    AND NOT j.blocked" if caps.flows else ""
    heartbeat = f"\n    heartbeat_on = {n.now}," if caps.heartbeats else ""
    returning = _job_details(caps) if detailed else _job_fields(caps)
    return f"""
WITH {rules.ctes}{group_ctes}
candidates AS (
  SELECT j.id, j.singleton_key{candidate_group}{group_columns}
  FROM {n.s}.job j
  WHERE j.name = :name
    AND j.state < 'active'{unblocked}
    AND j.start_after <= {n.now}
    {rules.filter}{group_filter}
  ORDER BY j.priority DESC, j.created_on
  LIMIT :limit
  FOR UPDATE OF j SKIP LOCKED
),
{chosen}
UPDATE {n.s}.job j
SET state = 'active',
    started_on = {n.now},{heartbeat}
    retry_count = CASE WHEN j.started_on IS NOT NULL THEN j.retry_count + 1 ELSE j.retry_count END
WHERE j.name = :name AND j.id = ANY(ARRAY(SELECT id FROM chosen))
RETURNING {returning}
"""


# -- settling -------------------------------------------------------------------------


@cache
def complete_jobs(caps: Capabilities, schema: str) -> str:
    """pg-boss complete() with job objects (the attempt fence): only an active job whose
    retry_count is still the fetched one is completed, so a late settle after expiry or
    a re-claim changes nothing. Each job carries its own output (NULL when none).

    Schemas 31-32 release the completed parents' children in the same statement (one
    fewer pending dependency each, unblocked at zero), as those releases do; from 33 a
    background resolver does it and complete is a plain update again.
    """
    n = _names(caps, schema)
    head = """
WITH input AS (
  SELECT * FROM json_to_recordset(CAST(:jobs AS json)) AS x (id uuid, retry_count int, output jsonb)
)"""
    update = f"""UPDATE {n.s}.job j
SET completed_on = {n.now}, state = 'completed', output = i.output
FROM input i
WHERE j.name = :name AND j.id = i.id AND j.state = 'active' AND j.retry_count = i.retry_count"""
    if not caps.complete_releases_children:
        return f"""{head}
{update}
RETURNING CAST(j.id AS text) AS id
"""
    return f"""{head},
completed AS (
  {update}
  RETURNING j.name, j.id, j.blocking
),
decremented AS (
  SELECT d.child_name, d.child_id, count(*)::int AS n
  FROM {n.s}.job_dependency d
  JOIN completed c ON c.blocking AND d.parent_name = c.name AND d.parent_id = c.id
  GROUP BY d.child_name, d.child_id
),
locked_children AS (
  SELECT j.name, j.id, d.n
  FROM {n.s}.job j
  JOIN decremented d ON d.child_name = j.name AND d.child_id = j.id
  WHERE j.blocked
  ORDER BY j.name, j.id
  FOR UPDATE OF j
),
unblocked AS (
  UPDATE {n.s}.job j
  SET pending_dependencies = greatest(j.pending_dependencies - lc.n, 0),
      blocked = greatest(j.pending_dependencies - lc.n, 0) > 0
  FROM locked_children lc
  WHERE j.name = lc.name AND j.id = lc.id
  RETURNING 1
)
SELECT CAST(id AS text) AS id FROM completed WHERE (SELECT count(*) FROM unblocked) >= 0
"""


def _retry_delay(caps: Capabilities) -> str:
    """Seconds until a backed-off retry, as the schema's releases compute it.

    21-24 (10.x) and 27-36: ``retry_delay * 2^(k-1) * (1 + random())``; 25-26:
    ``retry_delay + 2^(k-1) * (1 + random())``; 37+: ``max(retry_delay, 1) * 2^(k-1) *
    (1 + random())``, with k = min(16, retry_count + 1); from 25 capped by
    retry_delay_max when set.
    """
    growth = "2 ^ (least(16, retry_count + 1) - 1) * (1 + random())"
    if caps.archive:
        return f"retry_delay * {growth}"
    if caps.schema_version <= 26:
        return f"retry_delay + {growth}"
    if caps.schema_version <= 36:
        return f"retry_delay * {growth}"
    return f"greatest(retry_delay, 1) * {growth}"


def _reinsert(caps: Capabilities, *, state: str, start_after: str, completed_on: str) -> tuple[str, str]:
    """The columns and values of a failed job inserted again under its id.

    Every column is copied except the attempt's outcome; the heartbeat (30+) restarts.
    The source_* provenance (34+) is carried through a retry only from 43, and
    trace_context from 44, as those releases do. 10.x rows carry expire_in instead of
    expire_seconds, deletion_seconds and retry_delay_max.
    """
    pairs = [
        ("id", "id"),
        ("name", "name"),
        ("priority", "priority"),
        ("data", "data"),
        ("state", state),
        ("retry_limit", "retry_limit"),
        ("retry_count", "retry_count"),
        ("retry_delay", "retry_delay"),
        ("retry_backoff", "retry_backoff"),
        ("start_after", start_after),
        ("started_on", "started_on"),
        ("singleton_key", "singleton_key"),
        ("singleton_on", "singleton_on"),
    ]
    if caps.groups:
        pairs += [("group_id", "group_id"), ("group_tier", "group_tier")]
    if caps.archive:
        pairs.append(("expire_in", "expire_in"))
    else:
        pairs += [
            ("retry_delay_max", "retry_delay_max"),
            ("expire_seconds", "expire_seconds"),
            ("deletion_seconds", "deletion_seconds"),
        ]
    pairs += [
        ("created_on", "created_on"),
        ("completed_on", completed_on),
        ("keep_until", "keep_until"),
        ("policy", "policy"),
        ("output", "failure_output"),
        ("dead_letter", "dead_letter"),
    ]
    if caps.heartbeats:
        pairs += [("heartbeat_on", "NULL"), ("heartbeat_seconds", "heartbeat_seconds")]
    if caps.flows:
        pairs += [("blocked", "blocked"), ("blocking", "blocking"), ("pending_dependencies", "pending_dependencies")]
    if caps.provenance_survives_retry:
        pairs += [
            (column, column)
            for column in (
                "source_name",
                "source_id",
                "source_created_on",
                "source_retry_count",
                "source_output",
                "source_root_id",
            )
        ]
    if caps.trace_context:
        pairs.append(("trace_context", "trace_context"))
    return _csv([column for column, _ in pairs]), _csv([value for _, value in pairs])


def _dead_letter_copy(caps: Capabilities, n: _Names) -> tuple[str, str]:
    """The columns and values of the new job a failed job leaves in its dead letter queue.

    Settings come from the dead letter queue's row. What is copied grew by release:
    the failed job's output as the copy's output (25-42, from 43 as source_output),
    source_* provenance (34+), expire_seconds, singleton_key and the queue's heartbeat
    (37+), priority and group (38+), the root of a chain (43+), trace_context (44+).

    10.x takes nothing from the dead letter queue's row: the copy has the failed job's
    data, output and retry_limit, is kept as long again past its keep_until as the job
    was kept, and every other column is the table's default.
    """
    if caps.archive:
        pairs = [
            ("name", "s.dead_letter"),
            ("data", "s.data"),
            ("output", "s.output"),
            ("retry_limit", "s.retry_limit"),
            ("keep_until", "s.keep_until + (s.keep_until - s.start_after)"),
        ]
        return _csv([column for column, _ in pairs]), _csv([value for _, value in pairs])
    version = caps.schema_version
    pairs = [
        ("name", "s.dead_letter"),
        ("data", "s.data"),
        ("retry_limit", "dlq.retry_limit"),
        ("retry_backoff", "dlq.retry_backoff"),
        ("retry_delay", "dlq.retry_delay"),
        ("start_after", n.now),
        ("created_on", n.now),
        ("keep_until", f"{n.now} + make_interval(secs => dlq.retention_seconds)"),
        ("deletion_seconds", "dlq.deletion_seconds"),
    ]
    if not caps.provenance_survives_retry:
        pairs.append(("output", "s.output"))
    if caps.dead_letter_provenance:
        pairs += [
            ("source_name", "s.name"),
            ("source_id", "s.id"),
            ("source_created_on", "s.created_on"),
            ("source_retry_count", "s.retry_count"),
        ]
    if version >= 37:
        pairs += [
            ("expire_seconds", "dlq.expire_seconds"),
            ("singleton_key", "s.singleton_key"),
            ("heartbeat_seconds", "dlq.heartbeat_seconds"),
        ]
    if version >= 38:
        pairs += [("priority", "s.priority"), ("group_id", "s.group_id"), ("group_tier", "s.group_tier")]
    if caps.provenance_survives_retry:
        pairs += [("source_output", "s.output"), ("source_root_id", "coalesce(s.source_root_id, s.id)")]
    if caps.trace_context:
        pairs.append(("trace_context", "s.trace_context"))
    return _csv([column for column, _ in pairs]), _csv([value for _, value in pairs])


def _fail(caps: Capabilities, n: _Names, picked: str, removed: str, result: str) -> str:
    """pg-boss's failure path (failJobs / failJobsBody) after the rows to fail are chosen.

    ``removed`` is a DELETE … RETURNING every column plus ``failure_output``. Each row is
    inserted again under its id: as ``retry`` with a new start_after while retries
    remain, else as ``failed`` (completed_on = now). A retry that conflicts with a
    policy index (stately: the key already has a job in retry) is inserted as ``failed``
    instead. Each ``failed`` row with a dead letter queue gets a new job there.

    Retry delay: fixed ``retry_delay`` seconds; with backoff see ``_retry_delay``. When
    ``retry_count = retry_limit`` start_after is kept (the job is failing for good).
    """
    state = f"CAST(CASE WHEN retry_count < retry_limit THEN 'retry' ELSE 'failed' END AS {n.s}.job_state)"
    backoff = f"least(retry_delay_max, {_retry_delay(caps)})" if caps.retry_delay_max else _retry_delay(caps)
    start_after = f"""CASE
      WHEN retry_count = retry_limit THEN start_after
      WHEN NOT retry_backoff THEN {n.now} + make_interval(secs => retry_delay)
      ELSE {n.now} + make_interval(secs => {backoff})
    END"""
    completed_on = f"CASE WHEN retry_count < retry_limit THEN NULL ELSE {n.now} END"
    columns, again_values = _reinsert(caps, state=state, start_after=start_after, completed_on=completed_on)
    _, failed_values = _reinsert(
        caps, state=f"CAST('failed' AS {n.s}.job_state)", start_after="start_after", completed_on=n.now
    )
    settled = [
        "id",
        "name",
        "state",
        "priority",
        "data",
        "retry_count",
        "created_on",
        "output",
        "dead_letter",
        "singleton_key",
    ]
    settled += [
        column for column in ("group_id", "group_tier", "source_root_id", "trace_context") if column in caps.job_columns
    ]
    own_queue = ""
    if caps.archive:
        settled += ["retry_limit", "keep_until", "start_after"]
        own_queue = "\n    AND s.dead_letter <> s.name"
    dead_letter_columns, dead_letter_values = _dead_letter_copy(caps, n)
    return f"""
WITH {picked}
removed AS (
  {removed}
),
again AS (
  INSERT INTO {n.s}.job ({columns})
  SELECT {again_values}
  FROM removed
  ON CONFLICT DO NOTHING
  RETURNING {", ".join(settled)}
),
conflicted AS (
  INSERT INTO {n.s}.job ({columns})
  SELECT {failed_values}
  FROM removed
  WHERE id NOT IN (SELECT id FROM again)
  RETURNING {", ".join(settled)}
),
settled AS (
  SELECT * FROM again
  UNION ALL
  SELECT * FROM conflicted
),
dead_letters AS MATERIALIZED (
  SELECT s.id AS failed_id, gen_random_uuid() AS copy_id
  FROM settled s
  JOIN {n.s}.queue dlq ON dlq.name = s.dead_letter
  WHERE s.state = 'failed'{own_queue}
),
dead_lettered AS (
  INSERT INTO {n.s}.job (id, {dead_letter_columns})
  SELECT d.copy_id, {dead_letter_values}
  FROM dead_letters d
  JOIN settled s ON s.id = d.failed_id
  JOIN {n.s}.queue dlq ON dlq.name = s.dead_letter
  RETURNING id
)
{result}
"""


@cache
def fail_jobs(caps: Capabilities, schema: str) -> str:
    """pg-boss fail() with job objects and per-job outputs (failJobsByIdWithOutputs):
    fenced like complete on the fetched attempt and state = 'active'."""
    n = _names(caps, schema)
    return _fail(
        caps,
        n,
        """input AS (
  SELECT * FROM json_to_recordset(CAST(:jobs AS json)) AS x (id uuid, retry_count int, output jsonb)
),""",
        f"""DELETE FROM {n.s}.job j
  USING input i
  WHERE j.name = :name AND j.id = i.id AND j.state = 'active' AND j.retry_count = i.retry_count
  RETURNING j.*, i.output AS failure_output""",
        """
SELECT s.id, CAST(s.state AS text) AS state, d.copy_id AS dead_letter_id
FROM settled s
LEFT JOIN dead_letters d ON d.failed_id = s.id
""",
    )


@cache
def fail_expired(caps: Capabilities, schema: str, *, heartbeat: bool) -> str:
    """pg-boss's monitor expiry, one batch of at most :limit jobs: failJobsByTimeout()
    (active past started_on + expire_seconds, under the '<table>failJobsByTimeout'
    lock; 10.x: past started_on + expire_in, under the schema's own lock) or, with
    ``heartbeat`` (30+), failJobsByHeartbeat() (active with a heartbeat older than
    heartbeat_seconds, under '<table>failJobsByHeartbeat').

    The predicate is checked again by the DELETE, so a job settled after it was picked
    is left alone. ``picked`` tells the caller whether a full batch was taken.
    """
    n = _names(caps, schema)
    if heartbeat:
        predicate = (
            "j.state = 'active' AND j.heartbeat_seconds IS NOT NULL"
            f" AND j.heartbeat_on + j.heartbeat_seconds * interval '1 second' < {n.now}"
        )
        message = "job heartbeat timeout"
    elif caps.archive:
        predicate = f"j.state = 'active' AND j.started_on + j.expire_in < {n.now}"
        message = "job failed by timeout in active state"
    else:
        predicate = f"j.state = 'active' AND j.started_on + j.expire_seconds * interval '1 second' < {n.now}"
        message = "job timed out"
    return _fail(
        caps,
        n,
        f"""picked AS (
  SELECT id FROM {n.s}.job j WHERE j.name = :name AND {predicate} LIMIT :limit
),""",
        f"""DELETE FROM {n.s}.job j
  WHERE j.name = :name AND {predicate} AND j.id IN (SELECT id FROM picked)
  RETURNING j.*, CAST('{{"value": {{"message": "{message}"}}}}' AS jsonb) AS failure_output""",
        """SELECT p.picked, s.id, CAST(s.state AS text) AS state, d.copy_id AS dead_letter_id
FROM (SELECT count(*) AS picked FROM picked) p
LEFT JOIN settled s ON true
LEFT JOIN dead_letters d ON d.failed_id = s.id
""",
    )


@cache
def touch_jobs(caps: Capabilities, schema: str) -> str:
    """pg-boss touch() with job objects (30+): refresh the heartbeat of still-held
    attempts. Before 30 there is no heartbeat to refresh; the statement only reports
    which attempts are still held."""
    n = _names(caps, schema)
    head = """
WITH input AS (
  SELECT * FROM json_to_recordset(CAST(:jobs AS json)) AS x (id uuid, retry_count int)
)"""
    held = "j.name = :name AND j.id = i.id AND j.state = 'active' AND j.retry_count = i.retry_count"
    if not caps.heartbeats:
        return f"""{head}
SELECT CAST(j.id AS text) AS id
FROM {n.s}.job j
JOIN input i ON {held}
"""
    return f"""{head}
UPDATE {n.s}.job j
SET heartbeat_on = {n.now}
FROM input i
WHERE {held}
RETURNING CAST(j.id AS text) AS id
"""


# -- managing -------------------------------------------------------------------------


@cache
def cancel_jobs(caps: Capabilities, schema: str) -> str:
    """pg-boss cancel() by id: any job not yet finished, active ones included; a
    cancelled job no longer holds its throttle slot."""
    n = _names(caps, schema)
    return f"""
UPDATE {n.s}.job
SET completed_on = {n.now}, state = 'cancelled'
WHERE name = :name AND id = ANY(CAST(:ids AS uuid[])) AND state < 'completed'
RETURNING id
"""


def _recount_retained(caps: Capabilities, n: _Names, *, total: bool) -> str:
    """46: take the changed jobs that the queue's retained_count had counted (finished
    by retained_on) off that count (and, for a delete, off total_count)."""
    if not caps.retained_count:
        return ""
    total_count = ",\n      total_count = greatest(q.total_count - c.retained, 0)" if total else ""
    return f""",
recounted AS (
  UPDATE {n.s}.queue q
  SET retained_count = CASE WHEN q.retained_count IS NULL THEN NULL
                            ELSE greatest(q.retained_count - c.retained, 0) END{total_count}
  FROM counted c
  WHERE q.name = :name AND c.retained > 0
  RETURNING 1
)"""


def _retained(caps: Capabilities, n: _Names, states: str) -> str:
    if not caps.retained_count:
        return "0"
    return f"""(count(*) FILTER (WHERE {states}completed_on <= (SELECT retained_on FROM {n.s}.queue
                                              WHERE name = :name)))::int"""


@cache
def resume_jobs(caps: Capabilities, schema: str) -> str:
    """pg-boss resume(): cancelled jobs are queued again, due no earlier than now, and
    (45+) lose upsert_by_key; 46 keeps the queue's retained_count in step."""
    n = _names(caps, schema)
    upsert = ", upsert_by_key = NULL" if caps.upsert_by_key else ""
    return f"""
WITH resumable AS (
  SELECT id, completed_on
  FROM {n.s}.job
  WHERE name = :name AND id = ANY(CAST(:ids AS uuid[])) AND state = 'cancelled'
),
resumed AS (
  UPDATE {n.s}.job j
  SET completed_on = NULL, state = 'created'{upsert},
      start_after = greatest(j.start_after, {n.now})
  FROM resumable r
  WHERE j.name = :name AND j.id = r.id AND j.state = 'cancelled'
  RETURNING r.completed_on
),
counted AS (
  SELECT count(*)::int AS changed, {_retained(caps, n, "")} AS retained
  FROM resumed
){_recount_retained(caps, n, total=False)}
SELECT changed FROM counted
"""


@cache
def retry_jobs(caps: Capabilities, schema: str) -> str:
    """pg-boss retry(): failed jobs go back to retry with one more allowed attempt, due
    no earlier than now. 12.38's statement on every schema: 10.x to 12.25 left
    completed_on set, and their maintenance (10.x's archive pass, from 11.0 the deletion
    by completed_on + deletion_seconds) then removes a job retried long after it failed."""
    n = _names(caps, schema)
    return f"""
UPDATE {n.s}.job
SET state = 'retry', retry_limit = retry_limit + 1, completed_on = NULL,
    start_after = greatest(start_after, {n.now})
WHERE name = :name AND id = ANY(CAST(:ids AS uuid[])) AND state = 'failed'
RETURNING id
"""


@cache
def delete_jobs(caps: Capabilities, schema: str) -> str:
    """pg-boss deleteJob() by id, in any state; 46 keeps retained_count and total_count
    in step. On 10.x a finished job may have moved to ``archive``, where ``get_job``
    still finds it, so it is deleted there too (10.x's own deleteJob leaves it)."""
    n = _names(caps, schema)
    deleted = f"""deleted AS (
  DELETE FROM {n.s}.job
  WHERE name = :name AND id = ANY(CAST(:ids AS uuid[]))
  RETURNING state, completed_on
),"""
    if caps.archive:
        deleted = f"""live AS (
  DELETE FROM {n.s}.job
  WHERE name = :name AND id = ANY(CAST(:ids AS uuid[]))
  RETURNING state, completed_on
),
archived AS (
  DELETE FROM {n.s}.archive
  WHERE name = :name AND id = ANY(CAST(:ids AS uuid[]))
  RETURNING state, completed_on
),
deleted AS (
  SELECT * FROM live
  UNION ALL
  SELECT * FROM archived
),"""
    return f"""
WITH {deleted}
counted AS (
  SELECT count(*)::int AS changed,
    {_retained(caps, n, "state IN ('completed', 'cancelled') AND ")} AS retained
  FROM deleted
){_recount_retained(caps, n, total=True)}
SELECT changed FROM counted
"""


@cache
def get_job(caps: Capabilities, schema: str) -> str:
    """pg-boss getJobById(): one job, every column; on 10.x also from ``archive``
    (getJobById with includeArchive), the live row first."""
    n = _names(caps, schema)
    if not caps.archive:
        return f"""
SELECT {_job_details(caps)} FROM {n.s}.job j WHERE j.name = :name AND j.id = CAST(:id AS uuid)
"""
    columns = ", ".join(sorted(caps.job_columns))
    return f"""
SELECT {_job_details(caps)}
FROM (
  SELECT {columns}, 0 AS place FROM {n.s}.job WHERE name = :name AND id = CAST(:id AS uuid)
  UNION ALL
  SELECT {columns}, 1 AS place FROM {n.s}.archive WHERE name = :name AND id = CAST(:id AS uuid)
) j
ORDER BY j.place
LIMIT 1
"""


@cache
def find_jobs(
    caps: Capabilities, schema: str, *, by_ids: bool, by_key: bool, by_data: bool, queued: bool, after: bool
) -> str:
    """pg-boss findJobs(): one queue's jobs, every column, oldest first (created_on, then
    id), at most :limit. Filters, each only when asked for: ids (:ids), singleton_key
    (:key), data containing :data (jsonb ``@>``), not yet active (``queued``). With
    ``after``, the page starts past the (created_on, id) of the job :after, read in the
    same statement; when that job is gone the page is empty, and the caller can tell
    why from ``get_job``.

    On 10.x the queue's jobs are its live rows and its archived ones (as ``get_job``
    reads them), an archived copy of a live job left out."""
    n = _names(caps, schema)
    if caps.archive:
        columns = ", ".join(sorted(caps.job_columns))
        jobs = f"""(
  SELECT {columns} FROM {n.s}.job WHERE name = :name
  UNION ALL
  SELECT {columns} FROM {n.s}.archive a WHERE a.name = :name
    AND NOT EXISTS (SELECT 1 FROM {n.s}.job l WHERE l.name = a.name AND l.id = a.id)
)"""
    else:
        jobs = f"{n.s}.job"
    anchor = (
        f"""WITH anchor AS (
  SELECT a.created_on, a.id FROM {jobs} a WHERE a.name = :name AND a.id = CAST(:after AS uuid)
)
"""
        if after
        else ""
    )
    filters = [
        "AND j.id = ANY(CAST(:ids AS uuid[]))" if by_ids else "",
        "AND j.singleton_key = CAST(:key AS text)" if by_key else "",
        "AND j.data @> CAST(:data AS jsonb)" if by_data else "",
        "AND j.state < 'active'" if queued else "",
        "AND j.created_on >= (SELECT created_on FROM anchor)\n"
        "  AND (j.created_on, j.id) > (SELECT created_on, id FROM anchor)"
        if after
        else "",
    ]
    where = "".join(f"\n  {f}" for f in filters if f)
    return f"""
{anchor}SELECT {_job_details(caps)}
FROM {jobs} j
WHERE j.name = :name{where}
ORDER BY j.created_on, j.id
LIMIT :limit
"""
