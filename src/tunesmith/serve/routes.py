"""The HTTP surface: OpenAI's chat completions, completions and models, vLLM's runtime LoRA
endpoints, and /health. Every error, ours or FastAPI's, leaves in OpenAI's error shape."""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .auth import BodyLimit, check_key
from .errors import APIError
from .schemas import ChatCompletionRequest, CompletionRequest, LoadLoraRequest, UnloadLoraRequest
from .service import Service
from .streaming import chat_response, completion_response, stream


def create_app(service: Service, api_key: str | None = None, max_body_bytes: int = 1 << 20) -> FastAPI:
    app = FastAPI(title="tunesmith serve", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, limit=max_body_bytes)
    _add_error_handlers(app)
    started = int(time.time())

    async def authorized(request: Request) -> None:
        check_key(request.headers.get("authorization"), api_key)

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(authorized)])

    @app.get("/health")
    async def health():
        return {"status": "ok", **service.engine.stats()}

    @v1.get("/models")
    async def models():
        lim = service.limits.max_context
        data = [{"id": service.base_name, "object": "model", "created": started, "owned_by": "tunesmith",
                 "root": service.base_name, "parent": None, "max_model_len": lim}]
        for name in service.pool.names():
            data.append({"id": name, "object": "model", "created": started, "owned_by": "tunesmith",
                         "root": name, "parent": service.base_name, "max_model_len": lim})
        return {"object": "list", "data": data}

    @v1.post("/chat/completions")
    async def chat(req: ChatCompletionRequest):
        messages = [{"role": m.role, "content": m.text()} for m in req.messages]
        gen = service.start(req, [service.chat_ids(messages, service.resolve(req.model))])
        if req.stream:
            return StreamingResponse(stream(gen, req.model, True, req.include_usage()), media_type="text/event-stream")
        return await _whole(gen, chat_response(gen, req.model))

    @v1.post("/completions")
    async def completions(req: CompletionRequest):
        prompts = req.prompt if isinstance(req.prompt, list) and isinstance(req.prompt[0], str) else [req.prompt]
        gen = service.start(req, [service.text_ids(p) for p in prompts])
        if req.stream:
            return StreamingResponse(stream(gen, req.model, False, req.include_usage()), media_type="text/event-stream")
        return await _whole(gen, completion_response(gen, req.model))

    @v1.post("/load_lora_adapter")
    async def load_lora(req: LoadLoraRequest):
        if req.lora_name == service.base_name:
            raise APIError(400, f"`lora_name` {req.lora_name!r} is the base model's name; choose another", param="lora_name")

        def load():  # in the engine thread, between decode steps
            a = service.pool.register(req.lora_name, req.lora_path)
            try:
                service.pool.ensure_loaded(service.engine.base_model, a)
            except APIError:
                service.pool.unregister(a.name)
                raise
        await asyncio.wrap_future(service.engine.call(load))
        return PlainTextResponse(f"Success: LoRA adapter '{req.lora_name}' added successfully.")

    @v1.post("/unload_lora_adapter")
    async def unload_lora(req: UnloadLoraRequest):
        def unload():
            a = service.pool.unregister(req.lora_name)
            if a.in_use == 0:  # in use: dropped when its last sequence finishes (engine.release)
                service.pool.drop(a)
        await asyncio.wrap_future(service.engine.call(unload))
        return PlainTextResponse(f"Success: LoRA adapter '{req.lora_name}' removed successfully.")

    app.include_router(v1)
    return app


async def _whole(gen, body_coro):
    try:
        return await body_coro
    finally:
        gen.cancel()  # the client went away (or an error): stop its sequences


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def api_error(request, e: APIError):
        return JSONResponse(e.body(), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, e: RequestValidationError):
        parts = []
        for err in e.errors()[:5]:
            where = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        first = e.errors()[0].get("loc", ()) if e.errors() else ()
        param = ".".join(str(x) for x in first if x != "body") or None
        return JSONResponse(APIError(400, "; ".join(parts) or "invalid request", param=param).body(), status_code=400)

    @app.exception_handler(Exception)
    async def bug(request, e: Exception):  # ours: logged with its traceback, answered in OpenAI's shape
        logging.getLogger("tunesmith.serve").exception("request failed")
        return JSONResponse(APIError(500, f"internal error: {type(e).__name__}").body(), status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, e: StarletteHTTPException):
        return JSONResponse(APIError(e.status_code, str(e.detail)).body(), status_code=e.status_code)
