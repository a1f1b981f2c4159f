"""`tunesmith serve`: build the engine and the app for a model and its adapters, then listen.

`build_app` is what tests and embedders call (no sockets); `serve` adds uvicorn, or hands the same
model and adapters to vLLM (`--engine vllm`), or a `.gguf` model to llama-cpp-python's server.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError
from .auth import check_bind
from .loading import Target, parse_adapter_args, resolve_model


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_adapters: int = 8
    max_batch: int = 16
    max_queue: int = 64
    max_tokens: int = 1024
    max_body_bytes: int = 1 << 20
    allowed_adapter_dirs: list[str] = field(default_factory=list)
    served_model_name: str | None = None
    dtype: str = "auto"


def _missing(extra: str, what: str) -> UserError:
    return UserError(f"{what} is not installed; pip install 'tunesmith[{extra}]'")


def build_app(target: Target, opts: ServeOptions):
    """(FastAPI app, Service) for a transformers base and its adapters; the engine thread is started."""
    try:
        import fastapi  # noqa: F401
    except ImportError:
        raise _missing("serve", "fastapi") from None
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..merge.io import check_model_dir
    from ..models.loading import best_device, resolve_dtype
    from .adapter_pool import AdapterPool
    from .engine import Engine
    from .routes import create_app
    from .service import Limits, Service

    base = check_model_dir(target.base, "--model")
    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, use_safetensors=True, dtype=resolve_dtype(opts.dtype))
    model.to(best_device()).eval()
    name = opts.served_model_name or target.name
    context = int(getattr(model.config, "max_position_embeddings", 0) or tok.model_max_length)
    allowed = opts.allowed_adapter_dirs or [os.getcwd()]
    pool = AdapterPool(opts.max_adapters, [Path(a) for a in allowed])
    engine = Engine(model, tok, pool, max_batch=opts.max_batch, max_queue=opts.max_queue, max_context=context)
    for adapter_name, path in target.adapters.items():
        if adapter_name == name:
            raise UserError(f"--adapter {adapter_name}={path}: the name is the base model's; choose another")
        try:
            a = pool.register(adapter_name, path, trusted=True)
            with torch.no_grad():
                pool.ensure_loaded(model, a)  # fail at start, not on the first request
        except Exception as e:
            raise UserError(f"--adapter {adapter_name}={path}: {getattr(e, 'message', e)}") from None
    engine.start()
    service = Service(engine, pool, tok, name, Limits(max_tokens=opts.max_tokens, max_context=context))
    return create_app(service, api_key=opts.api_key, max_body_bytes=opts.max_body_bytes), service


def serve(model: str | Path, adapters: list[str] | None = None, engine: str = "builtin", **options) -> int:
    """Serve until interrupted; returns the process exit code."""
    opts = ServeOptions(**options)
    for flag in ("port", "max_adapters", "max_batch", "max_queue", "max_tokens", "max_body_bytes"):
        if getattr(opts, flag) < 1:
            raise UserError(f"--{flag.replace('_', '-')} must be a positive number, got {getattr(opts, flag)}")
    check_bind(opts.host, opts.api_key)
    target = resolve_model(model)
    target.adapters.update(parse_adapter_args(adapters))
    if engine == "vllm":
        from .vllm import run_vllm

        return run_vllm(target, opts)
    if engine != "builtin":
        raise UserError(f"--engine {engine!r}: choose builtin or vllm")
    if target.gguf is not None:
        from .gguf import run_llama_server

        return run_llama_server(target, opts)
    try:
        import uvicorn
    except ImportError:
        raise _missing("serve", "uvicorn") from None
    app, _ = build_app(target, opts)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("tunesmith.serve").info("serving %s on http://%s:%d/v1", target.name, opts.host, opts.port)
    uvicorn.run(app, host=opts.host, port=opts.port, log_level="info", timeout_graceful_shutdown=5)
    return 0
