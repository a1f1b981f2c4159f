"""The tables of docs/estimate.md: Llama-2-7B/13B/70B-shaped configs (config.json only, no weights),
full / LoRA / QLoRA, and ZeRO-1/2/3 over 4 GPUs, as `tunesmith estimate` computes them.

    PYTHONPATH=src python bench/estimate_tables.py
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from tunesmith.config import validate_config
from tunesmith.estimate import estimate_plan, model_shape, plan_from_config
from tunesmith.estimate.devices import GPUS

LLAMA2 = {
    "7B": dict(hidden_size=4096, intermediate_size=11008, num_attention_heads=32, num_key_value_heads=32, num_hidden_layers=32),
    "13B": dict(hidden_size=5120, intermediate_size=13824, num_attention_heads=40, num_key_value_heads=40, num_hidden_layers=40),
    "70B": dict(hidden_size=8192, intermediate_size=28672, num_attention_heads=64, num_key_value_heads=8, num_hidden_layers=80),
}
GB = 1e9


def _dir(tmp: Path, name: str, shape: dict) -> str:
    d = tmp / f"llama-2-{name}"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "llama", "vocab_size": 32000, "tie_word_embeddings": False, **shape}))
    return str(d)


def est(path, adapter="none", quant="none", gpus=1, sharding="ddp", batch=1, seq=512):
    cfg = validate_config({"model": {"path": path, "quantization": quant},
                           "adapter": {"type": adapter, **({"r": 16} if adapter == "lora" else {})},
                           "data": {"max_length": seq}, "train": {"micro_batch_size": batch, "gradient_checkpointing": True}})
    return estimate_plan(model_shape(path), plan_from_config(cfg, target="gpu", gpus=gpus, sharding=sharding), GPUS["H200-141GB"])


def main() -> None:
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        print("| model | params | full FT | LoRA r16 | QLoRA r16 | accelerate (training = 4 × bf16 size) |")
        print("|---|---:|---:|---:|---:|---:|")
        paths = {n: _dir(tmp, n, s) for n, s in LLAMA2.items()}
        for n, p in paths.items():
            psi = model_shape(p).total_params
            f, lo, q = est(p), est(p, "lora"), est(p, "lora", "nf4")
            print(f"| Llama-2-{n} | {psi / 1e9:.2f}B | {f.peak_bytes / GB:.1f} GB | {lo.peak_bytes / GB:.1f} GB | "
                  f"{q.peak_bytes / GB:.1f} GB | {4 * 2 * psi / GB:.1f} GB |")
        print("\n| model | stage | weights | grads | Adam | peak per GPU (4 GPUs) |")
        print("|---|---|---:|---:|---:|---:|")
        for n in ("7B",):
            for stage in ("ddp", "zero1", "zero2", "zero3"):
                b = est(paths[n], gpus=4, sharding=stage).breakdown
                print(f"| Llama-2-{n} | {stage} | {b.get('weights') / GB:.1f} GB | {b.get('gradients') / GB:.1f} GB | "
                      f"{b.get('optimizer') / GB:.1f} GB | {b.device_bytes() / GB:.1f} GB |")


if __name__ == "__main__":
    main()
