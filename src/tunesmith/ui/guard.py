"""What every request to the dashboard passes, as ASGI middleware (pure ASGI: streamed responses,
such as the playground's, pass through untouched):

- Host header: bound to loopback, the app answers only requests that name this machine
  (localhost, 127.0.0.1, [::1]). A web page elsewhere could otherwise point a DNS name of its own at
  127.0.0.1 ("DNS rebinding") and read the runs, or start one, from the user's browser.
- Token: when the app has one (required on any other bind address, launch.py), a request carries
  it as `Authorization: Bearer TOKEN`, as the `tunesmith_ui_token` cookie, or once as `?token=` in
  the URL `tunesmith ui` prints, which sets the cookie. Compared in constant time (serve/auth.py).
- Writes (anything but GET/HEAD) must carry the header `X-Tunesmith-UI: 1` (common.js sends it): a
  cross-site form cannot set a custom header, so another site cannot make the browser start a run.
"""

from __future__ import annotations

import hmac
import json
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

COOKIE = "tunesmith_ui_token"
WRITE_HEADER = b"x-tunesmith-ui"
LOCAL_NAMES = {"localhost", "127.0.0.1", "[::1]", "::1"}


def host_name(host_header: str) -> str:
    """'127.0.0.1:7860' -> '127.0.0.1'; '[::1]:7860' -> '[::1]'."""
    if host_header.startswith("["):
        return host_header.split("]")[0] + "]"
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def token_matches(given: str | None, token: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def given_tokens(headers: dict[bytes, bytes], query: str) -> tuple[list[str], str | None]:
    """(tokens the request carries, the one from ?token= if any)."""
    found = []
    scheme, _, value = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    if scheme.lower() == "bearer":
        found.append(value.strip())
    cookie = SimpleCookie()
    try:
        cookie.load(headers.get(b"cookie", b"").decode("latin-1"))
    except Exception:  # noqa: BLE001 (a malformed cookie header is just no token)
        pass
    if COOKIE in cookie:
        found.append(cookie[COOKIE].value)
    from_query = (parse_qs(query).get("token") or [None])[0]
    if from_query:
        found.append(from_query)
    return found, from_query


class Guard:
    def __init__(self, app, settings):
        self.app, self.settings = app, settings

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        path = scope.get("path", "")
        if self.settings.loopback:
            host = host_name(headers.get(b"host", b"").decode("latin-1")).lower()
            if host not in LOCAL_NAMES:
                return await _refuse(send, path, 403, f"this dashboard answers only requests to localhost, not to {host!r} "
                                                      "(start it with --host and --token to reach it by another name)")
        set_cookie = None
        if self.settings.token:
            tokens, from_query = given_tokens(headers, scope.get("query_string", b"").decode("latin-1"))
            if not any(token_matches(t, self.settings.token) for t in tokens):
                return await _refuse(send, path, 401, "this dashboard needs its token: open the URL `tunesmith ui` printed "
                                                      "(it ends in ?token=...), or send `Authorization: Bearer TOKEN`")
            if from_query:
                set_cookie = f"{COOKIE}={self.settings.token}; HttpOnly; SameSite=Strict; Path=/"
        if scope["method"] not in ("GET", "HEAD") and headers.get(WRITE_HEADER) != b"1":
            return await _refuse(send, path, 403, "writes need the header `X-Tunesmith-UI: 1` (the dashboard's pages send it)")
        if set_cookie is None:
            return await self.app(scope, receive, send)

        async def with_cookie(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", set_cookie.encode())]}
            await send(message)

        await self.app(scope, receive, with_cookie)


async def _refuse(send, path: str, status: int, message: str) -> None:
    if path.startswith("/api/"):
        body, kind = json.dumps({"error": message}).encode(), b"application/json"
    else:
        from html import escape

        body = f"<!doctype html><title>tunesmith ui</title><p>{escape(message)}</p>".encode()
        kind = b"text/html; charset=utf-8"
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
