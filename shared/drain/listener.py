"""The listener thread: wakes the loop on pg-boss's NOTIFY instead of making it poll.

It LISTENs on a connection of its own (the loop's connection is busy with statements)
and posts each queue name woken to the loop's event queue.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from queue import SimpleQueue
from typing import Any

from shared.config import Settings
from shared.db import ConnectionParams, Database, Listening
from shared.drain.events import ListenerLost, Woken
from shared.errors import AppError


def listen_url(settings: Settings) -> str | None:
    """The URL drain LISTENs through, or None when it should poll.

    LISTEN cannot work through a transaction-mode pooler (Supabase's Supavisor), where
    each transaction may run on a different server connection.
    """
    chosen = settings.drain_listen_database_url or settings.database_url
    if settings.drain_listen == "off" or chosen is None:
        return None
    url = chosen.get_secret_value()
    behind_pooler = ConnectionParams.from_url(url).through_transaction_pooler
    if settings.drain_listen == "auto" and settings.drain_listen_database_url is None and behind_pooler:
        return None
    return url


class Listener:
    """LISTEN on pg-boss's channel on a connection of its own; posts each queue name woken."""

    def __init__(
        self, open_database: Callable[[], Database], channel: str, events: SimpleQueue[Any], interval: float
    ) -> None:
        self._open = open_database
        self._channel = channel
        self._events = events
        self._interval = interval
        self._stop = threading.Event()
        self._wake_read, self._wake_write = socket.socketpair()
        self._thread = threading.Thread(target=self._run, name="drain-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self._wake_write.send(b"\0")

    def _run(self) -> None:
        session: Listening | None = None
        try:
            session = self._open().listen(self._channel)
            self._events.put(Woken(None))  # listening now: anything sent before may be due
            while not self._stop.is_set():
                for payload in session.notifications(self._interval, wake=self._wake_read):
                    self._events.put(Woken(payload))
                self._wake_read.setblocking(False)
                with contextlib.suppress(OSError):
                    self._wake_read.recv(64)
                self._wake_read.setblocking(True)
        except (AppError, OSError, ValueError) as exc:
            if not self._stop.is_set():
                self._events.put(ListenerLost(str(exc)))
        finally:
            if session is not None:
                session.close()
            self._wake_read.close()
            self._wake_write.close()
