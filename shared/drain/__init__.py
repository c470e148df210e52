"""drain's loop: claim due pg-boss jobs, run their Python handlers, settle every one.

One call of ``drain`` is one ``Drainer.run`` (``loop``). Its shape:

* **Prepare.** Check pg-boss's schema version; create each handler's queue once per
  instance (pg-boss's idempotent ``create_queue``); run pg-boss's expiry and heartbeat
  sweep (``fail_expired``) on the call's queues, so a crashed earlier call never leaves
  jobs active for ever even when no Node supervisor runs. A database that cannot be
  reached here ends the call before anything is claimed.
* **Loop**, on this (the request's) thread, which alone talks to the database through
  the instance's one connection. Each handler runs as its model says: thread and
  batch handlers on a pool of threads started as needed, async handlers as tasks on
  the call's one event loop, process handlers in the instance's worker processes; at
  most ``concurrency`` jobs at once, all reporting back through one event queue. The
  loop fetches only as many jobs as there are free slots (and idle worker processes),
  so nothing claimed sits waiting while its expiry clock runs. Queues take turns, each fetch round starting one queue
  further on and giving each queue with due jobs an equal share of the free slots, so
  one busy queue cannot starve the others. Finished jobs are settled in batches per
  queue (``complete`` / ``fail``, fenced on the fetched attempt, with pg-boss's retry,
  backoff and dead-letter bookkeeping). A handler that outlives its job's
  ``expire_seconds`` is failed as timed out (its task cancelled, its worker process
  killed); a job with ``heartbeat_seconds`` is touched every half heartbeat while its
  handler runs.
* **Watch.** With a budget, a call that runs out of due jobs keeps watching until its
  budget ends, so calls made every minute give continuous coverage. It wakes on
  pg-boss's own NOTIFY (a listener thread on a connection of its own, LISTENing on the
  schema's channel; the payload is the queue name) and still looks every
  ``listen_poll_seconds`` for jobs pg-boss does not announce (delayed, retried); or,
  where LISTEN is impossible, polls every ``poll_seconds``. With a budget of 0 it
  drains what is due and returns.
* **End.** Fetching stops ``stop_fetching_seconds`` before the budget ends (a handler's
  ``expected_seconds`` instead, for its queue) and when ``max_jobs`` were fetched. At
  the budget's end a handler still running is failed with a clear error, so pg-boss's
  retry rules apply; the job is not un-claimed, so the attempt fence discards whatever
  that handler settles late. Nothing claimed is left active with nobody working on it,
  unless the database itself is gone: then the call answers 503 and pg-boss's expiry
  (the next call's sweep) retries those jobs.

A connection that breaks under a statement is retried once on a fresh connection
(killed backend, pooler restart); a database that stays away pauses fetching, keeps
the held jobs running, and retries their settling with backoff until the budget ends.

Modules, one job each: ``limits`` (what bounds a call), ``summary`` (what a call
answers), ``queues`` (creating the handlers' queues), ``listener`` (the NOTIFY
thread), ``pool`` (the handler threads), ``async_runner`` (the call's event loop),
``processes`` and ``worker`` (the worker processes, each side), ``events`` (what they report),
``state`` (what the loop tracks per queue and per running job), ``outage`` (pausing
and backing off while the database is away), ``settling`` (complete, fail, touch in batches),
``failures`` (the errors drain fails a job with) and ``loop`` (the ``Drainer``).
"""
