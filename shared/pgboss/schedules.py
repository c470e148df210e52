"""``Schedules``: create, update, list and remove pg-boss cron/rrule schedules from Python.

Rows are written as pg-boss 12.38's ``schedule()`` writes them (kind decided from the
expression, zone UTC when none is given, options stored with ``tz``/``key``/``missed``),
so Node's timekeeper fires them as its own and ours fires Node's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.pgboss import cron, supervision_sql
from shared.pgboss.client import PgBoss
from shared.pgboss.errors import QueueNotFound, SchedulesNotSupported
from shared.pgboss.models import SendOptions, check_queue_name

MISSED_POLICIES = ("skip", "once")
# Schemas whose schedule() writes the rows this writes (kind, last_job_id), proven against
# 12.35 (43) and 12.38 (46); the same as the cron pass's.
SCHEDULE_SCHEMAS = (43, 46)


@dataclass(frozen=True)
class Schedule:
    """One row of pg-boss's ``schedule`` table."""

    name: str
    key: str
    kind: str
    cron: str
    timezone: str
    data: Any
    options: dict[str, Any]
    created_on: datetime
    updated_on: datetime
    last_job_id: str | None


class Schedules:
    """The schedule verbs of one pg-boss schema."""

    def __init__(self, boss: PgBoss) -> None:
        self.boss = boss

    def _check_schema(self) -> None:
        version = self.boss.capabilities.schema_version
        if version not in SCHEDULE_SCHEMAS:
            raise SchedulesNotSupported(version, " or ".join(str(v) for v in SCHEDULE_SCHEMAS))

    def schedule(
        self,
        name: str,
        expression: str,
        data: Any = None,
        options: SendOptions | None = None,
        *,
        key: str = "",
        tz: str = "UTC",
        missed: str | None = None,
    ) -> None:
        """Create or replace the schedule ``(name, key)``; raises ``InvalidSchedule``/``QueueNotFound``."""
        check_queue_name(name)
        self._check_schema()
        if missed is not None and missed not in MISSED_POLICIES:
            raise cron.InvalidSchedule(f"missed must be one of: {', '.join(MISSED_POLICIES)}")
        tz = tz or "UTC"
        [now] = self.boss.db.run(supervision_sql.render(supervision_sql.DATABASE_TIME, self.boss.schema))
        kind = cron.validate(expression, tz, datetime.fromtimestamp(int(now["time"]) / 1000, UTC))
        stored: dict[str, Any] = (options or SendOptions()).wire()
        stored.update({"tz": tz, "key": key})
        if missed is not None:
            stored["missed"] = missed
        if self.boss.get_queue(name) is None:
            raise QueueNotFound(name)
        params = {
            "name": name,
            "key": key,
            "kind": kind,
            "cron": expression,
            "timezone": tz,
            "data": json.dumps(data),
            "options": json.dumps(stored),
        }
        self.boss.db.run(supervision_sql.render(supervision_sql.UPSERT_SCHEDULE, self.boss.schema), params)

    def unschedule(self, name: str, key: str = "") -> bool:
        """Remove the schedule; whether there was one."""
        self._check_schema()
        rows = self.boss.db.run(
            supervision_sql.render(supervision_sql.DELETE_SCHEDULE, self.boss.schema), {"name": name, "key": key}
        )
        return bool(rows)

    def list(self, name: str | None = None) -> list[Schedule]:
        """Every schedule (of queue ``name``, when given), by name and key."""
        self._check_schema()
        rows = self.boss.db.run(
            supervision_sql.render(supervision_sql.GET_SCHEDULES, self.boss.schema),
            {"name": name},
            safe_to_retry=True,
        )
        return [
            Schedule(
                name=row["name"],
                key=row["key"],
                kind=row["kind"],
                cron=row["cron"],
                timezone=row["timezone"],
                data=json.loads(row["data"]) if row["data"] is not None else None,
                options=json.loads(row["options"]) if row["options"] else {},
                created_on=row["created_on"],
                updated_on=row["updated_on"],
                last_job_id=row["last_job_id"],
            )
            for row in rows
        ]
