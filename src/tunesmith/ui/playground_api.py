"""/api/playground/*: the Playground, forwarding to `tunesmith serve` at `tunesmith ui --serve-url`
with `--serve-key` (ui/playground.py). The page gets the models and the token stream, never the
key. POST /api/playground/chat answers `text/event-stream`: the server's own chunks, as they come."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from ..errors import UserError
from .playground import ChatRequest, PlaygroundError, ServeClient, relay, safe_url
from .views_common import error

router = APIRouter()


def client(request: Request) -> ServeClient:
    s = request.app.state.ui
    url = getattr(s, "serve_url", "") or ""
    if not url:
        raise PlaygroundError("no server to talk to: start `tunesmith serve --model DIR` and then "
                              "`tunesmith ui --serve-url http://127.0.0.1:8000`", 400)
    return ServeClient(url, getattr(s, "serve_key", "") or "")


@router.get("/api/playground/models")
async def models(request: Request):
    try:
        c = client(request)
        found = await asyncio.to_thread(c.models)
        return {"serve_url": safe_url(c.url), "models": found}
    except UserError as e:
        return error(e)


@router.post("/api/playground/chat")
async def chat(request: Request, body: ChatRequest):
    try:
        stream = await asyncio.to_thread(client(request).chat_stream, body)  # fails here, before any byte is sent
    except UserError as e:
        return error(e)
    return StreamingResponse(relay(stream), media_type="text/event-stream", headers={"Cache-Control": "no-store"})
