"""``health``: liveness. Answers as long as the instance runs; touches no database."""

from __future__ import annotations

import flask
import functions_framework

from shared.http import endpoint, json_response


@functions_framework.http
@endpoint("GET", "HEAD")
def health(request: flask.Request) -> flask.Response:
    return json_response({"status": "healthy"})
