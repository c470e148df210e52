"""The Supabase outbox: every change the webhook triggers see, kept until its jobs exist.

``deploy/supabase/webhook_triggers.sql`` writes each change to ``manda_processing.outbox``
in the changing transaction and asks pg_net to POST it to ``webhook``. pg_net sends once
and forgets, so ``reconcile`` (run at the start of each scheduled call) turns every
event the webhook did not turn into jobs within a grace period into those jobs, and
deletes the rows whose jobs exist.
"""
