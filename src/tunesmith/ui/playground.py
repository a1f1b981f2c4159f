"""The Playground's backend: a client of a running `tunesmith serve` (OpenAI-compatible).

The page never talks to the server itself: it calls the UI, and the UI forwards to the server
with the API key. So the key stays in this process: it is sent only in the Authorization header
to the serve URL, and no message, log line or page carries it (error texts use `safe_url`, which
also drops any user:password in the URL).

Side by side is two independent streams, one per model, over the same messages: the server
batches them together, and each page column fills as its own tokens arrive.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ..errors import UserError

MODELS_TIMEOUT_S = 10.0
STREAM_TIMEOUT_S = 300.0  # longest wait for the next token (a CPU prefill of a long prompt is slow)


class PlaygroundError(UserError):
    """The serve side failed; `status` is what the UI answers the page with."""

    def __init__(self, message: str, status: int = 502):
        super().__init__(message)
        self.status = status


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=100_000)


class ChatRequest(BaseModel):
    """What the page sends for one stream."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(min_length=1, description="A name from the server's /v1/models: the base or an adapter.")
    messages: list[ChatMessage] = Field(min_length=1, max_length=200)
    max_tokens: int = Field(256, ge=1, le=8192)
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int | None = None

    def body(self) -> dict:
        out = {"model": self.model, "messages": [m.model_dump() for m in self.messages], "max_tokens": self.max_tokens,
               "temperature": self.temperature, "top_p": self.top_p, "stream": True,
               "stream_options": {"include_usage": True}}
        if self.seed is not None:
            out["seed"] = self.seed
        return out


def safe_url(url: str) -> str:
    """The URL without user:password, for messages."""
    p = urllib.parse.urlsplit(url)
    host = p.hostname or ""
    netloc = host + (f":{p.port}" if p.port else "")
    return urllib.parse.urlunsplit((p.scheme, netloc, p.path, "", ""))


def check_serve_url(url: str) -> str:
    """The base URL (no trailing slash, no /v1), or an error naming the option."""
    p = urllib.parse.urlsplit(url)
    if p.scheme not in ("http", "https") or not p.hostname:
        raise UserError(f"--serve-url {safe_url(url) or url!r}: give the server's address, e.g. http://127.0.0.1:8000")
    base = url.rstrip("/")
    return base[: -len("/v1")] if base.endswith("/v1") else base


class ChatStream:
    """The server's SSE body, one `data:` payload at a time; close() hangs up (the server then stops)."""

    def __init__(self, response):
        self._resp = response

    def next_event(self) -> str | None:
        """The next payload (a JSON text or "[DONE]"), None at the end of the body."""
        while True:
            line = self._resp.readline()
            if not line:
                return None
            line = line.decode("utf-8").strip()
            if line.startswith("data:"):
                return line[len("data:"):].strip()

    def close(self) -> None:
        self._resp.close()


class ServeClient:
    def __init__(self, url: str, api_key: str = ""):
        self.url = check_serve_url(url)
        self._key = api_key

    def __repr__(self) -> str:  # the key is never part of a repr
        return f"ServeClient({safe_url(self.url)!r})"

    def _request(self, path: str, body: dict | None, timeout: float):
        headers = {"Accept": "application/json" if body is None else "text/event-stream"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method="GET" if body is None else "POST")
        where = safe_url(self.url)
        try:
            return urllib.request.urlopen(req, timeout=timeout)  # noqa: S310 (the scheme is checked: http/https)
        except urllib.error.HTTPError as e:
            raise self._http_error(e, where) from None
        except (urllib.error.URLError, OSError) as e:
            reason = getattr(e, "reason", e)
            raise PlaygroundError(f"cannot reach tunesmith serve at {where} ({reason}); start it with "
                                  "`tunesmith serve --model DIR` and pass its address as `tunesmith ui --serve-url URL`") from None

    @staticmethod
    def _http_error(e: urllib.error.HTTPError, where: str) -> PlaygroundError:
        try:
            message = json.loads(e.read().decode("utf-8", "replace"))["error"]["message"]
        except (ValueError, KeyError, TypeError, OSError):
            message = f"HTTP {e.code}"
        if e.code == 401:
            return PlaygroundError(f"tunesmith serve at {where} refused the API key ({message}); pass the key it was started "
                                   "with (`tunesmith serve --api-key`) as `tunesmith ui --serve-key KEY`", 502)
        # 4xx: the request (an unknown model name, a prompt over the context); the page shows the server's words
        return PlaygroundError(f"tunesmith serve at {where}: {message}", 400 if 400 <= e.code < 500 else 502)

    def models(self) -> list[dict]:
        """[{id, parent}]: the base (parent None) first, then its adapters, as the server lists them."""
        with self._request("/v1/models", None, MODELS_TIMEOUT_S) as resp:
            try:
                data = json.loads(resp.read().decode("utf-8"))["data"]
                return [{"id": m["id"], "parent": m.get("parent"), "max_model_len": m.get("max_model_len")} for m in data]
            except (ValueError, KeyError, TypeError):
                raise PlaygroundError(f"{safe_url(self.url)}/v1/models did not answer like an OpenAI server; is "
                                      "--serve-url the address of `tunesmith serve`?") from None

    def chat_stream(self, request: ChatRequest) -> ChatStream:
        """Opened and checked (status, model name) before the first byte reaches the page."""
        return ChatStream(self._request("/v1/chat/completions", request.body(), STREAM_TIMEOUT_S))


async def relay(stream: ChatStream):
    """The server's events as SSE for the page, read off the event loop. A failure after the first
    event goes into the stream as an OpenAI-shaped error (the headers are sent by then); the
    connection to the server is closed however the page's request ends (a closed tab included)."""
    import asyncio

    try:
        while True:
            try:
                event = await asyncio.to_thread(stream.next_event)
            except OSError as e:  # timeout or reset mid-answer
                yield "data: " + json.dumps({"error": {"message": f"the server stopped answering ({e})"}}) + "\n\n"
                yield "data: [DONE]\n\n"
                return
            if event is None:
                return
            yield f"data: {event}\n\n"
    finally:
        stream.close()
