"""The errors drain itself fails a job with, so pg-boss stores why and its retry rules apply."""


class HandlerTimedOut(Exception):
    """The handler ran longer than its job's ``expire_seconds``."""


class DrainStopped(Exception):
    """The drain call's budget ended while the handler was still running."""


class HandlerOutputInvalid(Exception):
    """The handler returned something that cannot be stored as JSON."""
