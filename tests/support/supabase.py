"""Supabase's pieces for the trigger tests, with their real names and shapes.

``net`` is pg_net as far as a trigger can see it: ``net.http_post`` (pg_net's signature)
queues the request in the unlogged ``net.http_request_queue`` and returns its id; the
``Relay`` plays pg_net's background worker, sending each queued request once after
commit and writing the outcome to ``net._http_response``. Like pg_net it never retries:
a refused connection, a timeout or an error status leaves only a response row, and the
request is gone. ``vault.decrypted_secrets`` is a view over a plain table.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from shared.db import Database

TRIGGERS_SQL = Path(__file__).resolve().parents[2] / "deploy" / "supabase" / "webhook_triggers.sql"

STAND_INS = """
CREATE SCHEMA net;
CREATE DOMAIN net.http_method AS text
  CHECK (value ILIKE 'get' OR value ILIKE 'post' OR value ILIKE 'delete');
CREATE UNLOGGED TABLE net.http_request_queue (
    id bigserial,
    method net.http_method NOT NULL,
    url text NOT NULL,
    headers jsonb,
    body bytea,
    timeout_milliseconds int NOT NULL
);
CREATE UNLOGGED TABLE net._http_response (
    id bigint,
    status_code integer,
    content_type text,
    headers jsonb,
    content text,
    timed_out bool,
    error_msg text,
    created timestamptz NOT NULL DEFAULT now()
);
-- pg_net's signature and defaults; it queues the request, which is sent after commit.
CREATE FUNCTION net.http_post(
    url text,
    body jsonb DEFAULT '{}'::jsonb,
    params jsonb DEFAULT '{}'::jsonb,
    headers jsonb DEFAULT '{"Content-Type": "application/json"}'::jsonb,
    timeout_milliseconds integer DEFAULT 5000
) RETURNS bigint LANGUAGE sql STRICT VOLATILE AS $$
    INSERT INTO net.http_request_queue (method, url, headers, body, timeout_milliseconds)
    VALUES ('POST', url || CASE WHEN params = '{}'::jsonb THEN '' ELSE '?' || (
              SELECT string_agg(key || '=' || value, '&') FROM jsonb_each_text(params)) END,
            headers, convert_to(body::text, 'UTF8'), timeout_milliseconds)
    RETURNING id
$$;
CREATE SCHEMA vault;
CREATE TABLE vault.secrets (name text PRIMARY KEY, secret text NOT NULL);
CREATE VIEW vault.decrypted_secrets AS SELECT name, secret AS decrypted_secret FROM vault.secrets;
CREATE TABLE public.documents (
    id serial PRIMARY KEY, project_id integer, storage_path text, status text DEFAULT 'new'
);
CREATE TABLE public.comments (id serial PRIMARY KEY, body text);
"""


def apply_triggers(url: str, variables: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    """``psql -f webhook_triggers.sql`` as deploy.sh runs it; a variable given as None is left unset."""
    argv = ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1"]
    for name, value in variables.items():
        if value is not None:
            text = value if isinstance(value, str) else json.dumps(value)
            argv += ["-v", f"{name}={text}"]
    argv += ["-f", str(TRIGGERS_SQL), "-d", url]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def queued_requests(db: Database) -> list[dict[str, Any]]:
    """Requests pg_net holds, oldest first, with the body decoded from JSON."""
    return db.run(
        "SELECT id, method, url, headers, convert_from(body, 'UTF8')::jsonb AS body, timeout_milliseconds"
        " FROM net.http_request_queue ORDER BY id"
    )


class Relay:
    """pg_net's background worker: sends each committed request once, keeps only the outcome.

    ``routes`` maps the https origin a trigger posts to onto where the function really
    listens on this machine (``http://127.0.0.1:PORT``), as DNS and TLS would.
    """

    def __init__(self, db: Database, routes: dict[str, str]) -> None:
        self.db = db
        self.routes = routes

    def send_queued(self) -> list[dict[str, Any]]:
        """One round of the worker: take every queued request, send it, record what happened."""
        with self.db.transaction() as tx:
            taken = tx.run(
                "DELETE FROM net.http_request_queue RETURNING id, url, headers,"
                " convert_from(body, 'UTF8') AS body, timeout_milliseconds"
            )
        outcomes = [self._send(request) for request in sorted(taken, key=lambda r: r["id"])]
        for outcome in outcomes:
            self.db.run(
                "INSERT INTO net._http_response (id, status_code, content, timed_out, error_msg)"
                " VALUES (:id, :status_code, :content, :timed_out, :error_msg)",
                outcome,
            )
        return outcomes

    def _send(self, request: dict[str, Any]) -> dict[str, Any]:
        parts = urlsplit(request["url"])
        target = self.routes[f"{parts.scheme}://{parts.netloc}"] + (parts.path or "/")
        outcome: dict[str, Any] = {"id": request["id"], "status_code": None, "content": None}
        outcome |= {"timed_out": False, "error_msg": None}
        try:
            response = requests.post(
                target,
                data=request["body"].encode("utf-8"),
                headers=request["headers"],
                timeout=request["timeout_milliseconds"] / 1000,
            )
        except requests.Timeout:
            outcome |= {"timed_out": True, "error_msg": "Timeout was reached"}
        except requests.ConnectionError as error:
            outcome["error_msg"] = f"Couldn't connect to server: {type(error).__name__}"
        else:
            outcome |= {"status_code": response.status_code, "content": response.text}
        return outcome
