"""The statements on the outbox table that ``deploy/supabase/webhook_triggers.sql`` creates.

The table is ours, not pg-boss's, so these live apart from ``shared.pgboss.sql``. The
clock is the database's (``clock_timestamp()``, as the trigger's default uses), so an
instance's own clock never decides whether an event is due.
"""

from __future__ import annotations

# The oldest events past the grace period that are not held back after a failed try.
# Ordered by id, which follows commit order closely enough for a bounded batch.
DUE_EVENTS = """
SELECT id, event, attempts
FROM manda_processing.outbox
WHERE created_on <= clock_timestamp() - make_interval(secs => CAST(:grace_seconds AS double precision))
  AND (held_until IS NULL OR held_until <= clock_timestamp())
ORDER BY id
LIMIT :limit
"""

# Events whose jobs exist (or that no route wants): done.
DELETE_EVENTS = """
DELETE FROM manda_processing.outbox WHERE id = ANY(CAST(:ids AS bigint[]))
"""

# Events that could not become jobs now: counted, with the reason, and held back for a
# while that doubles with each try up to a ceiling.
HOLD_EVENTS = """
UPDATE manda_processing.outbox o
SET attempts = o.attempts + 1,
    last_error = h.error,
    held_until = clock_timestamp()
      + make_interval(secs => least(CAST(:base_seconds AS double precision) * power(2, least(o.attempts, 20)),
                                    CAST(:max_seconds AS double precision)))
FROM json_to_recordset(CAST(:held AS json)) AS h(id bigint, error text)
WHERE o.id = h.id
"""
