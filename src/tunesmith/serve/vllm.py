"""`tunesmith serve --engine vllm`: the same model and adapters handed to vLLM, for GPU users who
outgrow the built-in server. vLLM reads PEFT adapters as `tunesmith train` writes them.

Not tested here (vLLM needs a GPU); `vllm_command` is, so the flags are pinned.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from ..errors import UserError

_VLLM_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the --max-lora-rank values vLLM accepts


def vllm_command(target, opts) -> list[str]:
    if target.base is None:
        raise UserError("--engine vllm serves a transformers model directory, not a .gguf file")
    ranks = [json.loads((p / "adapter_config.json").read_text(encoding="utf-8")).get("r", 8)
             for p in target.adapters.values()]
    cmd = ["vllm", "serve", str(target.base), "--host", opts.host, "--port", str(opts.port),
           "--served-model-name", opts.served_model_name or target.name, "--max-num-seqs", str(opts.max_batch)]
    if target.adapters:
        # vLLM refuses adapters above --max-lora-rank (default 16): pass the smallest value that fits
        rank = next((r for r in _VLLM_RANKS if r >= max(ranks)), None)
        if rank is None:
            raise UserError(f"adapter rank {max(ranks)} is above vLLM's largest --max-lora-rank {_VLLM_RANKS[-1]}")
        cmd += ["--enable-lora", "--max-loras", str(min(opts.max_adapters, len(target.adapters))),
                "--max-lora-rank", str(rank), "--lora-modules"]
        cmd += [f"{name}={path}" for name, path in target.adapters.items()]
    if opts.api_key:
        cmd += ["--api-key", opts.api_key]
    return cmd


def run_vllm(target, opts) -> int:
    if shutil.which("vllm") is None:
        raise UserError("--engine vllm needs vLLM (pip install vllm, on a machine with a GPU); "
                        "or drop --engine to use the built-in server")
    # runtime /v1/load_lora_adapter in vLLM is off unless this is set
    env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    return subprocess.run(vllm_command(target, opts), env=env, check=False).returncode
