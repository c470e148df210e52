"""Report how long the release matrix took, at the end of every run that includes it."""

from __future__ import annotations

import statistics

import pytest

# What each matrix recorded: its name -> (wall seconds, {release: seconds}).
TIMINGS: dict[str, tuple[float, dict[str, float]]] = {}


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for name, (wall, per_release) in TIMINGS.items():
        if not per_release:
            continue
        slowest = max(per_release, key=per_release.__getitem__)
        terminalreporter.write_line(
            f"{name}: {len(per_release)} releases in {wall:.0f} s wall; per release median "
            f"{statistics.median(per_release.values()):.1f} s, slowest {slowest} {per_release[slowest]:.1f} s"
        )
