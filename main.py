"""Entry points for Cloud Functions: ``--target`` names one of these.

Each function lives in its own module under ``functions/``; this file only gathers
them. Loading it reads and validates the settings and the webhook's routes table, so
a misconfigured deployment fails at cold start with a message naming the bad setting.
"""

from shared import instance, log

log.configure(instance.settings().log_level)
instance.webhook_routes()

from functions.drain import drain  # noqa: E402
from functions.enqueue import enqueue  # noqa: E402
from functions.health import health  # noqa: E402
from functions.ready import ready  # noqa: E402
from functions.supervise import supervise  # noqa: E402
from functions.webhook import webhook  # noqa: E402

__all__ = ["drain", "enqueue", "health", "ready", "supervise", "webhook"]
