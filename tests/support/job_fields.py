"""One job as ``jobs`` answers it against the same job from Node's ``getJobById``."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

# Node's driver makes timestamptz a JavaScript Date: milliseconds.
_MILLISECOND = timedelta(milliseconds=1)


def _instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def differences(ours: dict[str, Any], node: dict[str, Any]) -> list[str]:
    """Each field of Node's job that ours lacks or holds differently; timestamps equal to
    Node's millisecond. Fields only ours has are not differences (older releases return
    fewer)."""
    found = []
    for field, expected in node.items():
        if field not in ours:
            found.append(f"{field}: missing (Node: {expected!r})")
            continue
        got = ours[field]
        if isinstance(expected, str) and isinstance(got, str) and field.endswith(("On", "After", "Until")):
            if expected != got and abs(_instant(got) - _instant(expected)) >= _MILLISECOND:
                found.append(f"{field}: {got!r} (Node: {expected!r})")
        elif got != expected:
            found.append(f"{field}: {got!r} (Node: {expected!r})")
    return found
