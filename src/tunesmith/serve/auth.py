"""Who may call the server and how much they may send: loopback by default, an API key for any
other bind address (checked on every route but /health), and a bound on the request body."""

from __future__ import annotations

import hmac
import ipaddress
import json

from ..errors import UserError
from .errors import APIError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_bind(host: str, api_key: str | None, flag: str = "--api-key",
               how: str = "clients send `Authorization: Bearer KEY`", what: str = "the server") -> None:
    """Refuse to listen beyond this machine without a key: anyone who can reach the port could use it.
    `flag`, `how`, `what`: the names in the message (`tunesmith ui` calls its key --token)."""
    if not is_loopback(host) and not api_key:
        raise UserError(f"--host {host} makes {what} reachable from other machines; "
                        f"set {flag} KEY ({how}) or bind 127.0.0.1")


def check_key(authorization: str | None, api_key: str | None) -> None:
    if not api_key:
        return
    scheme, _, given = (authorization or "").partition(" ")
    # compare_digest: the time taken does not reveal how much of a guess was right
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), api_key.encode()):
        raise APIError(401, "Incorrect API key provided; send `Authorization: Bearer <key>`", code="invalid_api_key")


class BodyLimit:
    """ASGI middleware: a body over `limit` bytes gets a 413 before it is read in full."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await _too_large(send, self.limit)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise body_too_large(self.limit)
            return message

        # raised while the route reads its body, so the app's APIError handler answers it
        await self.app(scope, counted, send)


def body_too_large(limit: int) -> APIError:
    return APIError(413, f"request body is over the server's limit of {limit} bytes "
                         "(start it with a larger --max-body-bytes)", code="request_too_large")


async def _too_large(send, limit: int) -> None:
    body = json.dumps(body_too_large(limit).body()).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
