"""One job as ``jobs`` answers it against the same job from Node's ``getJobById``."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

# Node's driver makes timestamptz a JavaScript Date: milliseconds.
_MILLISECOND = timedelta(milliseconds=1)


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# pg-boss 10.x's getJobById also returns the raw expire_in interval; ours says the same
# in expireInSeconds, as 11 and 12 do.
TEN_ONLY = {"expireIn"}


def differences(ours: dict[str, Any], node: dict[str, Any]) -> list[str]:
    """Each field of Node's job that ours lacks or holds differently; timestamps equal to
    Node's millisecond, and a number equal to the numeric text 10.x's query hands Node
    (``EXTRACT(epoch FROM expire_in)``). Fields only ours has are not differences (older
    releases return fewer)."""
    found = []
    for field, expected in node.items():
        if field in TEN_ONLY:
            continue
        if field not in ours:
            found.append(f"{field}: missing (Node: {expected!r})")
            continue
        got = ours[field]
        if isinstance(expected, str) and isinstance(got, str) and field.endswith(("On", "After", "Until")):
            if expected != got and abs(_instant(got) - _instant(expected)) >= _MILLISECOND:
                found.append(f"{field}: {got!r} (Node: {expected!r})")
        elif isinstance(expected, str) and isinstance(got, int) and not isinstance(got, bool):
            if _number(expected) != got:
                found.append(f"{field}: {got!r} (Node: {expected!r})")
        elif got != expected:
            found.append(f"{field}: {got!r} (Node: {expected!r})")
    return found


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None
