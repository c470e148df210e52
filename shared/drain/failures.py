"""The errors drain itself fails a job with, so pg-boss stores why and its retry rules apply."""


class HandlerTimedOut(Exception):
    """The handler ran longer than its job's ``expire_seconds``."""


class DrainStopped(Exception):
    """The drain call's budget ended while the handler was still running."""


class HandlerOutputInvalid(Exception):
    """The handler returned something that cannot be stored as JSON."""


class BatchJobFailed(Exception):
    """A batch handler failed this job of its batch with a message (``Failed("...")``)."""


class WorkerDied(Exception):
    """The worker process running the handler exited before answering (a crash, os._exit, a kill)."""
