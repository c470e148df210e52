"""A local Secret Manager speaking the real gRPC wire protocol.

Tests drive the genuine ``SecretManagerServiceClient`` (request building, retry and
timeout handling, error mapping) against a ``grpc.server`` on 127.0.0.1, so what is
tested is what runs in production, minus Google. Only ``AccessSecretVersion`` is
implemented; messages are the client library's own protobuf types.
"""

from __future__ import annotations

import socket
import threading
from concurrent import futures
from dataclasses import dataclass
from types import TracebackType

import grpc
from google.cloud.secretmanager_v1 import SecretManagerServiceClient
from google.cloud.secretmanager_v1.services.secret_manager_service.transports import (
    SecretManagerServiceGrpcTransport,
)
from google.cloud.secretmanager_v1.types import (
    AccessSecretVersionRequest,
    AccessSecretVersionResponse,
    SecretPayload,
)

SERVICE = "google.cloud.secretmanager.v1.SecretManagerService"


@dataclass(frozen=True)
class Call:
    """One AccessSecretVersion request as the server saw it."""

    name: str
    deadline_seconds: float | None  # time the client allowed, None if unbounded


def client_for(address: str) -> SecretManagerServiceClient:
    """A real client whose transport is an insecure channel to ``address``."""
    channel = grpc.insecure_channel(address)
    return SecretManagerServiceClient(transport=SecretManagerServiceGrpcTransport(channel=channel))


def unreachable_address() -> str:
    """An address on which nothing listens (a port that was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


class FakeSecretManager:
    """Secret Manager on a free local port; use as a context manager.

    ``add`` stores a version, ``deny`` makes a secret answer PERMISSION_DENIED,
    ``calls`` records every request so tests can count fetches.
    """

    def __init__(self) -> None:
        self._versions: dict[tuple[str, str], dict[int, bytes]] = {}
        self._denied: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self.calls: list[Call] = []
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        self._server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(
                    SERVICE,
                    {
                        "AccessSecretVersion": grpc.unary_unary_rpc_method_handler(
                            self._access,
                            request_deserializer=AccessSecretVersionRequest.deserialize,
                            response_serializer=AccessSecretVersionResponse.serialize,
                        )
                    },
                ),
            )
        )
        port = self._server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{port}"

    def __enter__(self) -> FakeSecretManager:
        self._server.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.stop(grace=None)

    def add(self, project: str, secret: str, value: str | bytes, version: int | None = None) -> str:
        """Store a version (next number if not given); return its resource name."""
        data = value.encode() if isinstance(value, str) else value
        with self._lock:
            versions = self._versions.setdefault((project, secret), {})
            number = version if version is not None else max(versions, default=0) + 1
            versions[number] = data
        return f"projects/{project}/secrets/{secret}/versions/{number}"

    def deny(self, project: str, secret: str) -> None:
        """Make every access to this secret fail with PERMISSION_DENIED."""
        with self._lock:
            self._denied.add((project, secret))

    def client(self) -> SecretManagerServiceClient:
        """A real ``SecretManagerServiceClient`` talking to this server."""
        return client_for(self.address)

    def names_fetched(self) -> list[str]:
        return [call.name for call in self.calls]

    def _access(
        self, request: AccessSecretVersionRequest, context: grpc.ServicerContext
    ) -> AccessSecretVersionResponse:
        with self._lock:
            self.calls.append(Call(request.name, context.time_remaining()))
            parts = request.name.split("/")
            if len(parts) != 6 or parts[0::2] != ["projects", "secrets", "versions"]:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad name {request.name!r}")
            project, secret, version = parts[1], parts[3], parts[5]
            if (project, secret) in self._denied:
                context.abort(
                    grpc.StatusCode.PERMISSION_DENIED,
                    f"Permission 'secretmanager.versions.access' denied for resource "
                    f"'{request.name}' (or it may not exist).",
                )
            versions = self._versions.get((project, secret), {})
            number = max(versions, default=None) if version == "latest" else _int(version)
            if number not in versions:
                context.abort(
                    grpc.StatusCode.NOT_FOUND,
                    f"Secret Version [{request.name}] not found.",
                )
            return AccessSecretVersionResponse(
                name=f"projects/{project}/secrets/{secret}/versions/{number}",
                payload=SecretPayload(data=versions[number]),
            )


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() else None
