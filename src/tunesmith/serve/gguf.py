"""A `.gguf` model: handed to llama-cpp-python's own OpenAI-compatible server (`llama_cpp.server`),
the way `--engine vllm` hands a model to vLLM.

Why a hand-off and not our engine: llama.cpp keeps its own KV cache and sampler, and its LoRA
scales are global to the context, so rows for different adapters cannot share a batch there
(PITFALLS 27); re-implementing its server would add nothing. Adapters are refused with a GGUF:
merge them first (`tunesmith merge`, then `tunesmith export`).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

from ..errors import UserError


def llama_server_command(target, opts) -> list[str]:
    if target.adapters:
        raise UserError("a .gguf model is served without adapters (llama.cpp applies LoRA to every request); "
                        "merge the adapter (`tunesmith merge`), export it (`tunesmith export`) and serve that file")
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(target.gguf), "--host", opts.host,
           "--port", str(opts.port), "--model_alias", opts.served_model_name or target.name]
    if opts.api_key:
        cmd += ["--api_key", opts.api_key]
    return cmd


def run_llama_server(target, opts) -> int:
    missing = [m for m in ("llama_cpp", "sse_starlette", "starlette_context", "pydantic_settings")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise UserError(f"serving a .gguf file needs llama-cpp-python's server ({', '.join(missing)} missing); "
                        "pip install 'tunesmith[serve-gguf]', or serve the transformers model directory instead")
    return subprocess.run(llama_server_command(target, opts), check=False).returncode
