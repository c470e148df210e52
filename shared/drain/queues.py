"""Creating the handlers' queues in pg-boss, once per instance.

pg-boss's ``create_queue`` is idempotent but leaves an existing queue as it is, so a
queue configured differently from its handler is worth a warning. ``HandlerQueues``
remembers what it created, so an instance keeps one (``shared.instance``) and each
drain call asks it again at no cost.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from shared.handlers import Handler
from shared.pgboss.client import PgBoss
from shared.pgboss.models import Queue, QueueOptions

log = logging.getLogger(__name__)

# QueueOptions wire names → Queue attributes, to spot a queue configured differently.
_QUEUE_ATTRIBUTES = {
    "policy": "policy",
    "retryLimit": "retry_limit",
    "retryDelay": "retry_delay",
    "retryBackoff": "retry_backoff",
    "retryDelayMax": "retry_delay_max",
    "expireInSeconds": "expire_seconds",
    "retentionSeconds": "retention_seconds",
    "deleteAfterSeconds": "deletion_seconds",
    "deadLetter": "dead_letter",
    "heartbeatSeconds": "heartbeat_seconds",
    "notify": "notify",
}


class HandlerQueues:
    """The handlers' queues of one pg-boss client, each created once."""

    def __init__(self, boss: PgBoss) -> None:
        self.boss = boss
        self._created: set[str] = set()
        self._lock = threading.Lock()

    def ensure(self, handlers: Iterable[Handler]) -> None:
        """Create each handler's queue (and its dead-letter queue) unless done already."""
        boss, done = self.boss, self._created
        with self._lock:
            pending = [h for h in handlers if h.queue not in done]
            own = {h.queue for h in pending}
            # A dead-letter queue must exist before a queue that names it: create the ones
            # no handler configures with pg-boss's defaults, and configured ones first.
            for handler in pending:
                dead_letter = handler.options.dead_letter
                if dead_letter and dead_letter not in own and dead_letter not in done:
                    boss.create_queue(dead_letter, QueueOptions())
                    done.add(dead_letter)
            dead_letters = {h.options.dead_letter for h in pending}
            for handler in sorted(pending, key=lambda h: h.queue not in dead_letters):
                options = _for_schema(boss, handler.options)
                _warn_if_configured_differently(handler.queue, options, boss.create_queue(handler.queue, options))
                done.add(handler.queue)

    def forget(self, name: str) -> None:
        """Make the next ``ensure`` create this queue again (it was deleted)."""
        with self._lock:
            self._created.discard(name)


def _for_schema(boss: PgBoss, options: QueueOptions) -> QueueOptions:
    """A handler's queue options as the installed schema can take them: ``notify`` is
    drain's own default, not the handler's, so a schema without it (before 32) gets a
    queue that drain polls instead. Any other missing option is refused by create_queue."""
    if options.notify and not boss.capabilities.notify:
        return options.model_copy(update={"notify": None})
    return options


def _warn_if_configured_differently(name: str, options: QueueOptions, queue: Queue) -> None:
    differences = []
    for option, wanted in options.wire().items():
        attribute = _QUEUE_ATTRIBUTES.get(option)
        if attribute is None:
            continue
        actual = getattr(queue, attribute)
        actual = getattr(actual, "value", actual)
        if actual != wanted:
            differences.append(f"{option} is {actual!r}, the handler asks for {wanted!r}")
    if differences:
        log.warning(
            f"queue {name!r} already exists configured differently from its handler "
            f"({'; '.join(differences)}); create_queue leaves an existing queue as it is, so "
            "change it with pg-boss's updateQueue",
            extra={"fields": {"queue": name}},
        )
