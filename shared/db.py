"""PostgreSQL access: one lazily opened pg8000 connection per function instance.

Why it looks like this:

* Cloud Functions reuse an instance for many invocations, so the connection lives as
  long as the instance and is opened on first use, not at import.
* Through a transaction-mode pooler (Supabase's Supavisor on 6543, PgBouncer) nothing
  may outlive a transaction on the server: statements are unnamed, every statement runs
  inside an explicit transaction, and no start-up option is sent (poolers refuse them).
* A connection can die between invocations (server restart, pooler idle timeout).
  After an idle spell it is checked with a cheap query before real work, and a
  statement that fails on a broken connection is retried on a fresh one only when
  the caller marks it safe to repeat (reads, or writes that are idempotent).
* Every pg8000 error is translated here, so no driver exception escapes.
* This is the one place that retries: a statement the caller marks safe to repeat is
  repeated once on a fresh connection; above it, callers only decide what to do
  when the database stays away.
* LISTEN is session state, so ``Database.listen`` gives a ``Listening`` session on a
  connection of its own, never the shared one.
"""

from __future__ import annotations

import logging
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pg8000.exceptions
import pg8000.native

from shared.config import Settings, require
from shared.errors import ConfigError, DatabaseError, DatabaseUnavailable

log = logging.getLogger(__name__)

Row = dict[str, Any]

# SQLSTATE classes meaning "this connection or server cannot serve us now".
_UNAVAILABLE_CLASSES = ("08", "53", "57P")
# A statement cancelled by statement_timeout: the database answered too slowly.
_QUERY_CANCELED = "57014"

APPLICATION_NAME = "manda-processing"

# Supabase's pooler in transaction mode: consecutive transactions of one client may run
# on different server sessions, so nothing session-scoped (LISTEN, named prepared
# statements) can be relied on through it.
TRANSACTION_POOLER_PORT = 6543

# Named prepared statements kept per connection; the package has a few dozen distinct
# statements, so this bound only matters for ad-hoc SQL (tests, one-off scripts).
MAX_PREPARED_STATEMENTS = 128
# "cached plan must not change result type": a prepared statement outlived a schema
# change (pg-boss migrated under us); it is prepared afresh.
_STALE_PLAN = "0A000"
# What ``listen`` accepts as a channel name: pg-boss's channels are pgboss_<hex>.
_CHANNEL = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


@dataclass(frozen=True)
class ConnectionParams:
    """What pg8000 needs, parsed once from a postgresql:// URL."""

    host: str
    port: int
    database: str
    user: str
    password: str | None
    # pg8000's convention: False = plain, None = try TLS and fall back, context = TLS only.
    ssl_context: ssl.SSLContext | bool | None

    @classmethod
    def from_url(cls, url: str) -> ConnectionParams:
        parts = urlsplit(url)
        if parts.scheme not in ("postgres", "postgresql"):
            raise ConfigError("DATABASE_URL: must be a postgresql:// URL")
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        try:
            port = parts.port or 5432
        except ValueError:
            raise ConfigError("DATABASE_URL: the port is not a number") from None
        return cls(
            host=parts.hostname or "localhost",
            port=port,
            database=unquote(parts.path.lstrip("/")) or "postgres",
            user=unquote(parts.username or "postgres"),
            password=unquote(parts.password) if parts.password is not None else None,
            ssl_context=_ssl_context(query.get("sslmode", "prefer")),
        )

    @property
    def through_transaction_pooler(self) -> bool:
        return self.port == TRANSACTION_POOLER_PORT


def _ssl_context(sslmode: str) -> ssl.SSLContext | bool | None:
    """Map libpq's sslmode onto pg8000's ssl_context (Supabase needs at least ``require``)."""
    if sslmode in ("disable", "allow"):
        return False
    if sslmode == "prefer":
        return None
    if sslmode == "require":
        # libpq's "require" encrypts without verifying the server certificate.
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if sslmode in ("verify-ca", "verify-full"):
        context = ssl.create_default_context()
        context.check_hostname = sslmode == "verify-full"
        return context
    raise ConfigError(f"DATABASE_URL: unknown sslmode {sslmode!r}")


class Database:
    """A single reusable connection, safe to share between threads of one instance.

    With ``prepared_statements`` (the default unless the URL is a transaction pooler)
    each distinct statement is parsed once per connection and then executed in one
    round trip; pg8000's unnamed statements take three round trips, which is most of
    the cost of a small statement on a fast network.
    """

    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float = 5.0,
        statement_timeout_ms: int = 30_000,
        idle_check_seconds: float = 30.0,
        socket_timeout: float | None = None,
        prepared_statements: bool | None = None,
    ) -> None:
        self._params = ConnectionParams.from_url(url)
        pooled = self._params.through_transaction_pooler
        if prepared_statements is None:
            prepared_statements = not pooled
        # Through a transaction pooler consecutive transactions may run on different server
        # sessions, and pg8000 sends an unnamed statement's parse, describe and execute
        # each with its own sync; outside a transaction the pooler may hand them to
        # different sessions. So there every statement runs in an explicit transaction.
        self._own_transaction = pooled
        # The statement timeout, never a start-up option (PgBouncer and Supavisor refuse
        # those): on a direct or session-mode connection set once per session; through a
        # transaction pooler with SET LOCAL in the same round trip as each BEGIN. 0: none.
        timeout = f"statement_timeout = {int(statement_timeout_ms)}" if statement_timeout_ms > 0 else None
        self._session_setup = f"SET {timeout}" if timeout and not pooled else None
        self._begin = f"BEGIN; SET LOCAL {timeout}" if timeout and pooled else "BEGIN"
        self._prepare = prepared_statements
        self._prepared: dict[str, pg8000.native.PreparedStatement] = {}
        # No read may wait longer than the server's own statement timeout plus slack:
        # that is the backstop against a network that silently drops packets.
        self._socket_timeout = socket_timeout or connect_timeout + statement_timeout_ms / 1000
        self._connect_timeout = connect_timeout
        self._idle_check_seconds = idle_check_seconds
        self._connection: pg8000.native.Connection | None = None
        self._last_used = 0.0
        self._lock = threading.RLock()

    @classmethod
    def from_settings(cls, settings: Settings, *, url: str | None = None, timeout: float | None = None) -> Database:
        """A database for these settings; the one way the package builds one.

        ``url`` stands in for DATABASE_URL (drain's LISTEN may go elsewhere); ``timeout``
        bounds connecting and every read, for a quick probe such as ready's.
        """
        if url is None:
            url = require(settings.database_url, "DATABASE_URL", "database access").get_secret_value()
        if timeout is None:
            prepared = {"on": True, "off": False}.get(settings.db_prepared_statements)
            return cls(
                url,
                connect_timeout=settings.db_connect_timeout_seconds,
                statement_timeout_ms=settings.db_statement_timeout_ms,
                idle_check_seconds=settings.db_idle_check_seconds,
                prepared_statements=prepared,
            )
        return cls(
            url,
            connect_timeout=timeout,
            statement_timeout_ms=int(timeout * 1000),
            socket_timeout=timeout,
        )

    # -- statements -------------------------------------------------------------

    def run(self, sql: str, params: Mapping[str, Any] | None = None, *, safe_to_retry: bool = False) -> list[Row]:
        """Run one statement in its own transaction (autocommit) and return its rows.

        ``safe_to_retry`` says that running the statement twice does no harm; only then
        is it repeated on a fresh connection after the connection broke under it.
        """
        with self._lock:
            connection = self._usable_connection()
            try:
                return self._execute_alone(connection, sql, params)
            except (pg8000.exceptions.InterfaceError, OSError, pg8000.exceptions.DatabaseError) as exc:
                error = _translate(exc)
                if not isinstance(error, DatabaseUnavailable):
                    raise error from exc
                self._discard()
                if not safe_to_retry:
                    raise error from exc
                log.warning("database connection broke; retrying once on a new connection")
                try:
                    return self._execute_alone(self._usable_connection(), sql, params)
                except (pg8000.exceptions.InterfaceError, OSError, pg8000.exceptions.DatabaseError) as again:
                    self._discard_if_broken(again)
                    raise _translate(again) from again

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """Run several statements atomically; the connection is held until the end."""
        with self._lock:
            connection = self._usable_connection()
            try:
                connection.run(self._begin)
                yield Transaction(lambda sql, params: self._execute(connection, sql, params))
                connection.run("COMMIT")
            except (pg8000.exceptions.InterfaceError, OSError, pg8000.exceptions.DatabaseError) as exc:
                self._rollback_quietly(connection)
                self._discard_if_broken(exc)
                raise _translate(exc) from exc
            except BaseException:
                self._rollback_quietly(connection)
                raise

    @property
    def through_transaction_pooler(self) -> bool:
        """Whether every statement runs in a transaction of its own on a pooled server session."""
        return self._params.through_transaction_pooler

    def ping(self) -> None:
        """Prove the server answers; raises ``DatabaseUnavailable`` when it does not."""
        self.run("SELECT 1", safe_to_retry=True)

    def close(self) -> None:
        with self._lock:
            self._discard()

    def listen(self, channel: str) -> Listening:
        """LISTEN on ``channel`` over a new connection of its own (close it when done).

        Never through a transaction-mode pooler: its sessions are not ours to keep.
        """
        if not _CHANNEL.match(channel):
            raise ValueError(f"invalid channel name {channel!r}")
        return Listening(self._connect(), channel)

    # -- execution ---------------------------------------------------------------------

    def _execute_alone(
        self, connection: pg8000.native.Connection, sql: str, params: Mapping[str, Any] | None
    ) -> list[Row]:
        """One statement as its own transaction: implicit, or explicit through a pooler."""
        if not self._own_transaction:
            return self._execute(connection, sql, params, retry_stale_plan=True)
        connection.run(self._begin)
        try:
            rows = self._execute(connection, sql, params)
            connection.run("COMMIT")
        except BaseException:
            self._rollback_quietly(connection)
            raise
        return rows

    def _execute(
        self,
        connection: pg8000.native.Connection,
        sql: str,
        params: Mapping[str, Any] | None,
        *,
        retry_stale_plan: bool = False,
    ) -> list[Row]:
        if not params or not self._prepare:
            result = connection.run(sql, **(params or {}))
            return _as_rows(result, connection.columns)
        statement = self._prepared.get(sql)
        if statement is None:
            if len(self._prepared) >= MAX_PREPARED_STATEMENTS:
                return _as_rows(connection.run(sql, **params), connection.columns)
            statement = self._prepared[sql] = connection.prepare(sql)
        try:
            result = statement.run(**params)
        except pg8000.exceptions.DatabaseError as exc:
            if _sqlstate(exc) != _STALE_PLAN:
                raise
            # Prepared before a schema change; forget them all. Outside a transaction
            # nothing ran, so running the statement again is safe.
            self._prepared.clear()
            if not retry_stale_plan:
                raise
            return self._execute(connection, sql, params)
        return _as_rows(result, statement.columns)

    # -- connection lifecycle ------------------------------------------------------

    def _usable_connection(self) -> pg8000.native.Connection:
        now = time.monotonic()
        if self._connection is not None and now - self._last_used > self._idle_check_seconds:
            try:
                self._connection.run("SELECT 1")
            except (pg8000.exceptions.InterfaceError, OSError, pg8000.exceptions.DatabaseError):
                log.info("idle database connection is gone; reconnecting")
                self._discard()
        if self._connection is None:
            self._connection = self._connect()
        self._last_used = now
        return self._connection

    def _connect(self) -> pg8000.native.Connection:
        params = self._params
        # The socket is opened here rather than by pg8000 so that it is closed for
        # certain when the handshake fails (pg8000 would leave that to the GC).
        sock: socket.socket | None = None
        try:
            sock = socket.create_connection((params.host, params.port), self._connect_timeout)
            sock.settimeout(self._socket_timeout)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            # pg8000 writes a statement in several small sends; with Nagle on, a statement
            # of a few kilobytes waits out the server's delayed ACK (~40 ms) every time.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = pg8000.native.Connection(
                user=params.user,
                password=params.password,
                host=params.host,
                database=params.database,
                sock=sock,
                ssl_context=params.ssl_context,
                timeout=self._socket_timeout,
                application_name=APPLICATION_NAME,
            )
            if self._session_setup:
                connection.run(self._session_setup)
            return connection
        except (pg8000.exceptions.InterfaceError, OSError, pg8000.exceptions.DatabaseError) as exc:
            if sock is not None:
                sock.close()
            raise _translate(exc) from exc

    def _discard(self) -> None:
        self._prepared.clear()  # prepared statements die with their connection
        connection, self._connection = self._connection, None
        if connection is not None:
            with suppress(pg8000.exceptions.InterfaceError, OSError, pg8000.exceptions.DatabaseError):
                connection.close()

    def _discard_if_broken(self, exc: BaseException) -> None:
        if isinstance(_translate(exc), DatabaseUnavailable):
            self._discard()

    def _rollback_quietly(self, connection: pg8000.native.Connection) -> None:
        try:
            connection.run("ROLLBACK")
        except (pg8000.exceptions.InterfaceError, OSError, pg8000.exceptions.DatabaseError):
            self._discard()


class Listening:
    """A LISTEN session on a connection of its own: NOTIFY messages of one channel.

    pg8000 reads notifications only while it runs a statement, so ``notifications``
    waits until the connection's socket is readable and then runs a no-op statement to
    take them in. pg8000 has no public accessor for that socket: ``_usock`` (the socket,
    TLS-wrapped when TLS is on) is the one private attribute this package reads.
    """

    def __init__(self, connection: pg8000.native.Connection, channel: str) -> None:
        self.channel = channel
        self._connection = connection
        self._socket = connection._usock
        try:
            connection.run(f'LISTEN "{channel}"')
        except (pg8000.exceptions.InterfaceError, OSError, pg8000.exceptions.DatabaseError) as exc:
            self.close()
            raise _translate(exc) from exc

    def notifications(self, timeout: float, *, wake: socket.socket | None = None) -> list[str]:
        """Payloads of the channel's NOTIFY messages, waiting up to ``timeout`` seconds.

        ``wake`` (a socket the caller drains) ends the wait early. The no-op statement
        runs on a timeout too, so a message left in pg8000's read buffer is never
        stranded. ``DatabaseUnavailable`` when the connection broke, since messages may
        then have been missed.
        """
        connection = self._connection
        try:
            if not connection.notifications:
                sock = self._socket
                if not (isinstance(sock, ssl.SSLSocket) and sock.pending()):
                    select.select([sock] + ([wake] if wake is not None else []), [], [], max(timeout, 0))
                connection.run("SELECT 1")
        except (pg8000.exceptions.InterfaceError, OSError, pg8000.exceptions.DatabaseError) as exc:
            raise _translate(exc) from exc
        received = []
        while connection.notifications:
            _pid, channel, payload = connection.notifications.popleft()
            if channel == self.channel:
                received.append(payload)
        return received

    def close(self) -> None:
        with suppress(pg8000.exceptions.InterfaceError, OSError, pg8000.exceptions.DatabaseError):
            self._connection.close()


class Transaction:
    """Statements inside ``Database.transaction()``."""

    def __init__(self, execute: Callable[[str, Mapping[str, Any] | None], list[Row]]) -> None:
        self._execute = execute

    def run(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Row]:
        return self._execute(sql, params)


def _as_rows(result: list[list[Any]] | None, columns: list[dict[str, Any]] | None) -> list[Row]:
    if not result or not columns:
        return []
    names = [column["name"] for column in columns]
    return [dict(zip(names, values, strict=True)) for values in result]


def _server_fields(exc: BaseException) -> dict[str, Any]:
    """The fields of a server error message (``C`` is the SQLSTATE, ``M`` the message)."""
    return exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}


def _sqlstate(exc: BaseException) -> str:
    return str(_server_fields(exc).get("C", ""))


def _translate(exc: BaseException) -> DatabaseError | DatabaseUnavailable:
    """Our exception for a pg8000 or socket error; the one place driver errors are read."""
    if isinstance(exc, (DatabaseError, DatabaseUnavailable)):
        return exc
    if isinstance(exc, (pg8000.exceptions.InterfaceError, OSError, socket.timeout)):
        return DatabaseUnavailable(f"database unreachable: {_first_line(exc)}")
    sqlstate = _sqlstate(exc)
    message = _server_fields(exc).get("M", _first_line(exc))
    if sqlstate == _QUERY_CANCELED:
        return DatabaseUnavailable(f"database did not answer in time: {message}")
    if sqlstate.startswith(_UNAVAILABLE_CLASSES):
        return DatabaseUnavailable(f"database unavailable: {message}")
    if sqlstate == "28P01" or sqlstate == "28000" or sqlstate == "3D000":
        return DatabaseUnavailable(f"database refused the connection: {message}")
    return DatabaseError(message, sqlstate=sqlstate or None)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]
