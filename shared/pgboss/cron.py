"""When a pg-boss schedule is due: cron and rrule expressions, evaluated as pg-boss 12.38 does.

pg-boss reads cron expressions with cron-parser (five fields, or six with seconds
first; day-of-month and day-of-week OR-ed when both are restricted) and recurrence
rules with rrule-temporal (the DTSTART, RRULE, RDATE and EXDATE lines of a calendar
entry; a bare rule is the RRULE line, and a rule without DTSTART starts at
1970-01-01T00:00:00 wall time in the schedule's zone). Here croniter (with
``second_at_beginning``) and python-dateutil's rrule do the same arithmetic, each in
the schedule's IANA zone.

An occurrence is due while it is at most 60 s old, and each due occurrence is filed in
the 60 s slot it falls in, named outright, so two passes either side of a slot
boundary file it in the same slot and it sends once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter
from dateutil.relativedelta import relativedelta
from dateutil.rrule import rruleset, rrulestr

from shared.errors import echo

# How long an occurrence stays due, and the width of the slot it is filed in.
OCCURRENCE_WINDOW = timedelta(seconds=60)
CRON = "cron"
RRULE = "rrule"

_RRULE_SHAPE = re.compile(r"^[ \t]*[a-z][a-z0-9-]*[;:]|(?:^|[\s;])FREQ=", re.IGNORECASE | re.MULTILINE)
_PROPERTY = re.compile(r"^([a-z][a-z0-9-]*)[;:]", re.IGNORECASE)
_PROPERTIES = {"DTSTART", "RRULE", "RDATE", "EXDATE"}
_EPOCH_DTSTART = "19700101T000000"
_PARTS = {
    "FREQ", "UNTIL", "COUNT", "INTERVAL", "BYSECOND", "BYMINUTE", "BYHOUR", "BYDAY", "BYMONTHDAY",
    "BYYEARDAY", "BYWEEKNO", "BYMONTH", "BYSETPOS", "WKST",
}  # fmt: skip
_PERIOD = {
    "YEARLY": "years", "MONTHLY": "months", "WEEKLY": "weeks", "DAILY": "days",
    "HOURLY": "hours", "MINUTELY": "minutes", "SECONDLY": "seconds",
}  # fmt: skip


class InvalidSchedule(ValueError):
    """An expression or zone pg-boss would refuse (the message says what is wrong)."""


def kind_of(expression: str) -> str:
    """``rrule`` when the expression is written as a recurrence rule, else ``cron``."""
    return RRULE if _RRULE_SHAPE.search(expression) else CRON


def zone(name: str | None) -> ZoneInfo:
    """The IANA zone a schedule is evaluated in (UTC when none is stored)."""
    try:
        return ZoneInfo(name or "UTC")
    except (ValueError, KeyError, OSError):
        raise InvalidSchedule(f"invalid time zone {echo(name)}") from None


def validate(expression: str, tz: str | None, now: datetime) -> str:
    """The expression's kind, after checking it evaluates (and, for a rule, still sends)."""
    if not isinstance(expression, str) or not expression.strip():
        raise InvalidSchedule("cron expression must be a non-empty string")
    kind = kind_of(expression)
    if kind == CRON:
        _cron(expression, zone(tz), now)
    elif _rule(expression, zone(tz), now).after(_local(now, _rule_zone(expression, tz)), inc=False) is None:
        raise InvalidSchedule("rrule expression has no occurrence left, so the schedule would never send a job")
    return kind


@dataclass(frozen=True)
class Due:
    """What a schedule owes now: the kind it was read as and its due occurrences."""

    kind: str
    occurrences: tuple[datetime, ...]


def due_occurrences(expression: str, kind: str, tz: str | None, now: datetime) -> Due:
    """The occurrences in (now - 60 s, now], read as ``kind``; the other kind when the
    row's label disagrees with how the expression is written (pg-boss's fallback)."""
    if not isinstance(expression, str) or not expression.strip():
        raise InvalidSchedule("cron expression must be a non-empty string")
    try:
        return Due(kind, _read(expression, kind, tz, now))
    except (InvalidSchedule, ValueError, KeyError):
        detected = kind_of(expression)
        if detected == kind:
            raise
        return Due(detected, _read(expression, detected, tz, now))


def latest_between(expression: str, kind: str, tz: str | None, after: datetime, until: datetime) -> datetime | None:
    """The most recent occurrence in (after, until], or None."""
    if kind == RRULE:
        found = _between(expression, tz, after, until)
        return found[-1] if found else None
    previous = _cron(expression, zone(tz), until + timedelta(milliseconds=1))
    return previous if previous > after else None


def preview(expression: str, tz: str | None, start: datetime, count: int) -> list[datetime]:
    """The next ``count`` occurrences strictly after ``start`` (pg-boss's previewSchedule())."""
    tzinfo = zone(tz)
    if kind_of(expression) == CRON:
        walk = croniter(_cron_fields(expression), start.astimezone(tzinfo), second_at_beginning=True)
        return [walk.get_next(datetime).astimezone(UTC) for _ in range(count)]
    rule_zone = _rule_zone(expression, tz)
    rule = _rule(expression, tzinfo, start)
    found: list[datetime] = []
    cursor = _local(start, rule_zone)
    while len(found) < count:
        nxt = rule.after(cursor, inc=False)
        if nxt is None:
            break
        found.append(_utc(nxt, rule_zone))
        cursor = nxt
    return found


def slot(instant: datetime) -> str:
    """The 60 s slot an instant falls in, as the UTC wall time pg-boss files it under."""
    seconds = int(instant.timestamp() // 60 * 60)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def occurrence_key(name: str, key: str) -> str:
    """The singleton key an occurrence is filed under: the name with '_' escaped, '__', the key."""
    return name.replace("_", "\\_") + "__" + key


def _read(expression: str, kind: str, tz: str | None, now: datetime) -> tuple[datetime, ...]:
    window_start = now - OCCURRENCE_WINDOW
    if kind == RRULE:
        return tuple(_between(expression, tz, window_start, now))
    previous = _cron(expression, zone(tz), now + timedelta(milliseconds=1))
    return (previous,) if previous > window_start else ()


def _cron_fields(expression: str) -> str:
    fields = expression.split()
    if len(fields) not in (5, 6):
        raise InvalidSchedule(f"cron expression {echo(expression)} must have 5 fields (or 6, seconds first)")
    return " ".join(fields)


def _cron(expression: str, tzinfo: ZoneInfo, before: datetime) -> datetime:
    """The latest occurrence strictly before ``before``, in UTC."""
    try:
        walk = croniter(_cron_fields(expression), before.astimezone(tzinfo), second_at_beginning=True)
        return walk.get_prev(datetime).astimezone(UTC)
    except InvalidSchedule:
        raise
    except (ValueError, KeyError, TypeError, OverflowError) as error:
        raise InvalidSchedule(f"invalid cron expression {echo(expression)}: {echo(error)}") from None


def _lines(expression: str) -> tuple[list[str], str | None, str]:
    """The calendar lines (with DTSTART first), the DTSTART value, and the RRULE value."""
    lines: list[str] = []
    dtstart: str | None = None
    rule: str | None = None
    for raw in re.sub(r"\r?\n[ \t]", "", expression).splitlines():
        text = raw.strip()
        if not text:
            continue
        match = _PROPERTY.match(text)
        name = match.group(1).upper() if match else "RRULE"
        value = text[text.index(":") + 1 :] if match else text
        if name not in _PROPERTIES:
            raise InvalidSchedule(f"unsupported property {echo(name)} in rrule expression")
        if name == "DTSTART":
            if dtstart is not None:
                raise InvalidSchedule("rrule expression has more than one DTSTART")
            dtstart = text
        if name == "RRULE":
            if rule is not None:
                raise InvalidSchedule("rrule expression has more than one RRULE")
            rule = value
            for part in value.split(";"):
                if part and part.split("=")[0].upper() not in _PARTS and not part.upper().startswith("X-"):
                    raise InvalidSchedule(f"unsupported part {echo(part)} in rrule expression")
        lines.append(text if match else f"RRULE:{text}")
    if rule is None:
        raise InvalidSchedule("rrule expression has no RRULE to recur on")
    if dtstart is None and re.search(r"(^|;)COUNT=", rule, re.IGNORECASE):
        raise InvalidSchedule("rrule expression uses COUNT, which counts from DTSTART, so it needs a DTSTART")
    return [line for line in lines if not line.upper().startswith("DTSTART")], dtstart, rule


def _rule_zone(expression: str, tz: str | None) -> ZoneInfo | None:
    """The zone the rule's wall times are in: None when its DTSTART carries one itself."""
    _, dtstart, _ = _lines(expression)
    if dtstart is not None and (dtstart.rstrip().upper().endswith("Z") or "TZID=" in dtstart.upper()):
        return None
    return zone(tz)


def _rule(expression: str, tzinfo: ZoneInfo, near: datetime) -> rruleset:
    """The rule set, its start moved forward in whole periods to shortly before ``near``
    when that leaves its occurrences unchanged (no COUNT)."""
    body, dtstart, rule = _lines(expression)
    start_line = dtstart or f"DTSTART:{_EPOCH_DTSTART}"
    try:
        parsed = rrulestr("\n".join([start_line, *body]), forceset=True)
    except (ValueError, TypeError, OverflowError) as error:  # a date past year 9999 overflows
        raise InvalidSchedule(f"invalid rrule expression: {echo(error)}") from None
    parts = dict(part.split("=", 1) for part in rule.upper().split(";") if "=" in part)
    if "COUNT" in parts or not isinstance(parsed, rruleset):
        return parsed
    start = parsed._rrule[0]._dtstart  # the start rrulestr read
    floating = start.tzinfo is None
    target = near.astimezone(tzinfo).replace(tzinfo=None) if floating else near
    unit = _PERIOD.get(parts.get("FREQ", ""), "")
    step = int(parts.get("INTERVAL", "1"))
    if unit and target > (start if floating else start.astimezone(target.tzinfo)):
        # Whole multiples of INTERVAL, two of them short of ``near``, keep every occurrence
        # from there on where it was.
        periods = (_periods_between(start, target, unit) // step - 2) * step
        if periods > 0:
            moved = start + relativedelta(**{unit: periods})
            text = moved.strftime("%Y%m%dT%H%M%S")
            if not floating:
                text = moved.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
            parsed = rrulestr("\n".join([f"DTSTART:{text}", *body]), forceset=True)
    return parsed


def _periods_between(start: datetime, end: datetime, unit: str) -> int:
    if start.tzinfo is not None:
        end = end.astimezone(start.tzinfo)
    if unit in ("years", "months"):
        months = (end.year - start.year) * 12 + end.month - start.month - 1
        return max(months // 12 if unit == "years" else months, 0)
    seconds = {"weeks": 604800, "days": 86400, "hours": 3600, "minutes": 60, "seconds": 1}[unit]
    return max(int((end - start).total_seconds() // seconds) - 1, 0)


def _between(expression: str, tz: str | None, after: datetime, until: datetime) -> list[datetime]:
    """A rule's occurrences in (after, until], in UTC."""
    tzinfo = zone(tz)
    rule_zone = _rule_zone(expression, tz)
    rule = _rule(expression, tzinfo, after)
    found = rule.between(_local(after, rule_zone), _local(until, rule_zone), inc=True)
    return [_utc(value, rule_zone) for value in found if _utc(value, rule_zone) > after]


def _local(instant: datetime, rule_zone: ZoneInfo | None) -> datetime:
    """An instant as the rule compares it: naive wall time in its zone, or aware."""
    return instant.astimezone(rule_zone).replace(tzinfo=None) if rule_zone is not None else instant


def _utc(value: datetime, rule_zone: ZoneInfo | None) -> datetime:
    if value.tzinfo is None:
        value = value.replace(tzinfo=rule_zone)
    return value.astimezone(UTC)
