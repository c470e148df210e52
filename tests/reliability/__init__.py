"""Faults, load and abuse against real PostgreSQL, real pg-boss and the functions over HTTP.

* ``test_crash``: drain instances killed with SIGKILL mid-work beside a Node worker;
  nothing lost, nothing run twice except re-runs after a crash (counted apart).
* ``test_database_faults``: backends terminated, the server restarted, statements timed
  out under load; only success or 503, no half-written batch, the next call works.
* ``test_overlap``: the same drain call delivered twice at once, budgets overlapping.
* ``test_abuse``: near-miss credentials, replays, forged OIDC tokens, injection, and
  the key check's timing.
* ``test_fuzz``: requests generated from ``openapi.yaml`` and arbitrary bodies.
* ``test_load``: locust against enqueue and webhook; a backlog drained beside Node.
* ``test_secrets_in_logs``: every log line of the run searched for every secret.

The suite runs its own PostgreSQL (``cluster.py``) so that restarting it is safe, and
serves the functions from ``app.py`` (``main.py`` plus a handler that records each run).
``RELIABILITY_SOAK=1`` runs every scenario bigger and longer (``scripts/reliability.sh``).
"""
