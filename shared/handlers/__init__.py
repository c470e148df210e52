"""Python job handlers that ``drain`` runs, one per pg-boss queue.

Write a handler in a module of this package, decorate it with ``@handler("queue")``
(``model="batch"``, ``"async"`` or ``"process"`` to run it otherwise than on a thread)
and list the module in ``HANDLER_MODULES``; see README.md here.
"""

from __future__ import annotations

import importlib

from shared.handlers.registry import (
    Attempt,
    Failed,
    Handler,
    Registry,
    queue_options,
    sleep,
    sleep_async,
    stopping,
)

__all__ = [
    "HANDLERS",
    "HANDLER_MODULES",
    "Attempt",
    "Failed",
    "Handler",
    "Registry",
    "handler",
    "load",
    "queue_options",
    "sleep",
    "sleep_async",
    "stopping",
]

# Every handler the package ships. A module registers its handlers when imported.
HANDLER_MODULES: tuple[str, ...] = ("shared.handlers.echo",)

HANDLERS = Registry()
handler = HANDLERS.handler


def load() -> Registry:
    """The registry with every module of ``HANDLER_MODULES`` imported (idempotent)."""
    for module in HANDLER_MODULES:
        importlib.import_module(module)
    return HANDLERS
