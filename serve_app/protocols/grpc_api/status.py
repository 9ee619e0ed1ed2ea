"""gRPC status codes for everything voxray refuses or ends, with a message that says what to fix.

The WebSocket protocols end a session with a :class:`CloseConnection` (a close code and a
stable ``error_code``); over gRPC the same decisions become status codes, so a Riva client
sees ``UNAUTHENTICATED`` for a missing key and ``UNAVAILABLE`` (retry elsewhere) while a
replica drains. Handlers raise :class:`GrpcAbort` for their own input errors.
"""

from __future__ import annotations

from typing import Any

import grpc

from serve_app.server.limits import SERVICE_RESTART, TRY_AGAIN_LATER, CloseConnection

# Stable error codes of CloseConnection, as gRPC status codes.
STATUS_BY_ERROR_CODE: dict[str, grpc.StatusCode] = {
    "missing_api_key": grpc.StatusCode.UNAUTHENTICATED,
    "invalid_api_key": grpc.StatusCode.UNAUTHENTICATED,
    "api_key_revoked": grpc.StatusCode.UNAUTHENTICATED,
    "invalid_client_secret": grpc.StatusCode.UNAUTHENTICATED,
    "client_secret_expired": grpc.StatusCode.UNAUTHENTICATED,
    "client_secret_used": grpc.StatusCode.UNAUTHENTICATED,
    "loopback_only": grpc.StatusCode.PERMISSION_DENIED,
    "origin_not_allowed": grpc.StatusCode.PERMISSION_DENIED,
    "session_limit_reached": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "client_not_reading": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "too_many_invalid_events": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "idle_timeout": grpc.StatusCode.DEADLINE_EXCEEDED,
    "session_expired": grpc.StatusCode.DEADLINE_EXCEEDED,
    "server_shutting_down": grpc.StatusCode.UNAVAILABLE,
    "access_check_unavailable": grpc.StatusCode.UNAVAILABLE,
}


class GrpcAbort(Exception):
    """End the call with ``code`` and ``details`` (the message a client shows its user).

    Attributes:
        code: The gRPC status code.
        details: What went wrong and what to do about it.
    """

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details

    def __reduce__(self) -> Any:
        return (type(self), (self.code, self.details))


def invalid_argument(details: str) -> GrpcAbort:
    """The client's request is wrong; ``details`` says which field and how to fix it."""
    return GrpcAbort(grpc.StatusCode.INVALID_ARGUMENT, details)


def status_for(close: CloseConnection) -> grpc.StatusCode:
    """The status code of a refusal or an ended session."""
    known = STATUS_BY_ERROR_CODE.get(close.error_code)
    if known is not None:
        return known
    if close.code == SERVICE_RESTART:
        return grpc.StatusCode.UNAVAILABLE
    if close.code == TRY_AGAIN_LATER:
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if close.error_type == "server_error":
        return grpc.StatusCode.INTERNAL
    return grpc.StatusCode.FAILED_PRECONDITION


def as_abort(close: CloseConnection) -> GrpcAbort:
    """A CloseConnection as the status a gRPC call ends with."""
    return GrpcAbort(status_for(close), close.message)


def set_status(context: Any, abort: GrpcAbort) -> None:
    """Put ``abort`` on Serve's gRPC context: the call ends with it once the method returns."""
    context.set_code(abort.code)
    context.set_details(abort.details)
