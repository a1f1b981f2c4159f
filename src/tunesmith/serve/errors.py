"""Errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with the status a
client library maps to its own exception class (400 BadRequestError, 401 AuthenticationError,
404 NotFoundError, 413, 503 InternalServerError-with-retry)."""

from __future__ import annotations

_TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "invalid_request_error",
          405: "invalid_request_error", 413: "invalid_request_error", 422: "invalid_request_error",
          429: "rate_limit_error", 500: "server_error", 503: "server_error"}


class APIError(Exception):
    """A request that cannot be served; becomes an OpenAI-shaped JSON error with `status`."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": _TYPES.get(self.status, "invalid_request_error"),
                          "param": self.param, "code": self.code}}


class QueueFull(APIError):
    def __init__(self, limit: int):
        super().__init__(503, f"the server's request queue is full ({limit} waiting); retry later",
                         code="queue_full")
