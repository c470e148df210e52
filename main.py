"""Entry points for Cloud Functions: ``--target`` names one of these.

Each function lives in its own module under ``functions/``; this file only gathers
them. Loading it reads and validates the settings and the webhook's routes table, and
checks that the function being started (``FUNCTION_TARGET``, which functions-framework
sets from ``--target``) has every setting it cannot work without. A misconfigured
deployment so refuses to start with one line naming the setting, not a traceback, and
no request ever meets a missing credential or routes table.
"""

import os
import sys
from collections.abc import Callable

import functions_framework
from werkzeug.exceptions import HTTPException

import functions.drain
import functions.enqueue
import functions.jobs
import functions.schedules
import functions.webhook
from functions.drain import drain
from functions.enqueue import enqueue
from functions.health import health
from functions.jobs import jobs
from functions.ready import ready
from functions.schedules import schedules
from functions.supervise import supervise
from functions.webhook import webhook
from shared import http, instance, log
from shared.config import Settings
from shared.errors import ConfigError

__all__ = ["drain", "enqueue", "health", "jobs", "ready", "schedules", "supervise", "webhook"]

# What each function cannot work without; the others need nothing beyond valid settings.
STARTUP_CHECKS: dict[str, Callable[[Settings], None]] = {
    "drain": functions.drain.check_settings,
    "enqueue": functions.enqueue.check_settings,
    "jobs": functions.jobs.check_settings,
    "schedules": functions.schedules.check_settings,
    # supervise accepts exactly drain's callers.
    "supervise": functions.drain.check_settings,
    "webhook": functions.webhook.check_settings,
}

# What Flask or functions-framework refuse before a function runs answers in our shape too.
functions_framework.errorhandler(HTTPException)(http.framework_error)

try:
    log.configure(instance.settings().log_level)
    instance.webhook_routes()
    STARTUP_CHECKS.get(os.environ.get("FUNCTION_TARGET", ""), lambda _settings: None)(instance.settings())
except ConfigError as error:
    sys.exit(f"manda-processing cannot start: {error}")
