"""Faults, load and abuse against real PostgreSQL, real pg-boss and the functions over HTTP.

* ``test_crash``: drain instances killed with SIGKILL mid-work beside a Node worker;
  nothing lost, nothing run twice except re-runs after a crash (counted apart).
* ``test_database_faults``: backends terminated, the server restarted, statements timed
  out under load; only success or 503, no half-written batch, the next call works.

The suite runs its own PostgreSQL (``cluster.py``) so that restarting it is safe, and
serves the functions from ``app.py`` (``main.py`` plus a handler that records each run).
"""
