"""GPU paths of the training stage, checked on a CUDA machine (the CI and dev machines have none).

    python bench/gpu_check.py --out DIR [--quick]

What it checks, each printed as one line and written to DIR/gpu_check.json:
  env        torch / CUDA / device, bf16 support, bitsandbytes' CUDA backend.
  precision  `train.precision: auto` resolves to bf16 on the GPU and the trainable weights stay fp32
             (master weights, PITFALLS 13).
  setups     `tunesmith train` end to end on a ~60M-parameter Llama (hidden 768, 8 layers, vocab of the
             tiny tokenizer) for: full fine-tuning bf16, LoRA bf16, LoRA + gradient checkpointing,
             QLoRA (NF4 + double quant through bitsandbytes' CUDA kernels), LoRA + adamw_8bit,
             LoRA + paged_adamw_8bit, LoRA + packing: loss falls, tokens/s, peak GPU memory.
  fused_ce   the chunked lm_head + cross-entropy against the plain logits path at a 128,256-token
             vocabulary: peak GPU memory and time of forward + backward, and the loss/grad agreement.
  accum      PITFALLS 1 on the GPU in fp32: 8 rows x 1 micro-batch and 1 row x 8 give the same loss.

Exit status 1 when any check fails.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "tests"))


def make_model(out: Path, hidden: int, layers: int) -> Path:
    """The tiny factory's tokenizer on a bigger Llama body (the GPU needs work to show anything)."""
    import transformers

    from tunesmith.models.tiny import init_model

    tiny = init_model(out / "tokenizer-src", size="tiny", seed=0)
    tok = transformers.AutoTokenizer.from_pretrained(tiny)
    cfg = transformers.LlamaConfig(vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers,
                                   num_attention_heads=hidden // 64, num_key_value_heads=hidden // 128,
                                   intermediate_size=hidden * 8 // 3 // 64 * 64, max_position_embeddings=2048,
                                   tie_word_embeddings=False, bos_token_id=tok.bos_token_id,
                                   eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg)
    path = out / "model"
    model.save_pretrained(path, safe_serialization=True)
    tok.save_pretrained(path)
    return path


def write_data(out: Path, n: int) -> Path:
    from conftest import alpaca_rows

    from tunesmith.quickstart.task import past_tense_task

    rows = alpaca_rows(n // 2, seed=1) + past_tense_task(n // 2, 0, seed=1)[0]
    path = out / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_setup(name: str, model_dir: Path, data: Path, out: Path, steps: int, **over) -> dict:
    from tunesmith.config import validate_config
    from tunesmith.train.run import train

    raw = {"model": {"path": str(model_dir)}, "data": {"train": [str(data)], "format": "alpaca", "max_length": 512},
           "adapter": {"type": "lora", "r": 16, "alpha": 32, "dropout": 0.0},
           "train": {"lr": 3e-4, "max_steps": steps, "micro_batch_size": 16, "grad_accum_steps": 2, "save_every": 0,
                     "progress": False, "warmup_steps": 2},
           "output_dir": str(out / name)}
    for key, value in over.items():
        section, field = key.split("__")
        raw.setdefault(section, {})[field] = value
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    summary = train(validate_config(raw))
    losses = [json.loads(line)["loss"] for line in (out / name / "metrics.jsonl").read_text().splitlines()
              if "loss" in json.loads(line)]
    head, tail = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    rates = [json.loads(line).get("tokens_per_s", 0) for line in (out / name / "metrics.jsonl").read_text().splitlines()]
    rate = sorted(rates[2:])[len(rates[2:]) // 2] if len(rates) > 3 else float("nan")
    res = {"setup": name, "precision": summary["precision"], "loss_first3": round(head, 4), "loss_last3": round(tail, 4),
           "falls": tail < head * 0.9 and all(math.isfinite(x) for x in losses), "median_tokens_per_s": rate,
           "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20), "wall_s": round(time.time() - t0, 1),
           "trainable": summary["trainable_params"], "total": summary["total_params"]}
    res["ok"] = res["falls"] and summary["precision"] == "bf16"
    return res


def check_master_weights(model_dir: Path) -> dict:
    """auto precision on the GPU: bf16 storage of frozen weights, fp32 trainable ones."""
    from tunesmith.config import validate_config
    from tunesmith.train.run import build_model

    cfg = validate_config({"model": {"path": str(model_dir), "dtype": "auto"}, "adapter": {"type": "lora"},
                           "train": {"precision": "bf16"}})
    model = build_model(cfg, torch.device("cuda"))
    trainable = {p.dtype for p in model.parameters() if p.requires_grad}
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    del model
    torch.cuda.empty_cache()
    return {"trainable_dtypes": sorted(map(str, trainable)), "frozen_dtypes": sorted(map(str, frozen)),
            "ok": trainable == {torch.float32} and frozen == {torch.bfloat16}}


def check_fused_ce(tokens: int = 8192, hidden: int = 768, vocab: int = 128_256) -> dict:
    from tunesmith.train.losses import cross_entropy_sum, fused_linear_cross_entropy

    torch.manual_seed(0)
    h0 = torch.randn(tokens, hidden, device="cuda", dtype=torch.bfloat16)
    w0 = (torch.randn(vocab, hidden, device="cuda", dtype=torch.bfloat16) * 0.02)
    y = torch.randint(0, vocab, (tokens,), device="cuda")
    out = {}
    for kind in ("plain", "fused"):
        h, w = h0.clone().requires_grad_(), w0.clone().requires_grad_()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        for _ in range(3):
            h.grad = w.grad = None
            if kind == "plain":
                loss = cross_entropy_sum((h @ w.T).float(), y)
            else:
                loss = fused_linear_cross_entropy(h, w, y, chunk_size=2048)
            loss.backward()
        torch.cuda.synchronize()
        out[kind] = {"loss": loss.item(), "ms": round((time.perf_counter() - t0) / 3 * 1000, 2),
                     "peak_mb_over_inputs": round((torch.cuda.max_memory_allocated() - base) / 2**20),
                     "grad_h": h.grad.float(), "grad_w": w.grad.float()}
    rel = lambda a, b: ((a - b).norm() / b.norm()).item()  # noqa: E731
    res = {"tokens": tokens, "vocab": vocab,
           **{f"{k}_{m}": out[k][m] for k in out for m in ("loss", "ms", "peak_mb_over_inputs")},
           "loss_rel_diff": abs(out["fused"]["loss"] - out["plain"]["loss"]) / abs(out["plain"]["loss"]),
           "grad_h_rel": rel(out["fused"]["grad_h"], out["plain"]["grad_h"]),
           "grad_w_rel": rel(out["fused"]["grad_w"], out["plain"]["grad_w"])}
    res["memory_ratio"] = round(res["fused_peak_mb_over_inputs"] / res["plain_peak_mb_over_inputs"], 3)
    res["ok"] = res["loss_rel_diff"] < 1e-2 and res["grad_h_rel"] < 2e-2 and res["grad_w_rel"] < 2e-2 and res["memory_ratio"] < 0.5
    return res


def check_accum(model_dir: Path, data: Path, out: Path) -> dict:
    """PITFALLS 1 on the GPU (fp32, so the comparison is tight)."""
    losses = {}
    for mb, acc in ((8, 1), (1, 8)):
        name = f"accum-{mb}x{acc}"
        run_setup(name, model_dir, data, out, 3, train__micro_batch_size=mb, train__grad_accum_steps=acc,
                  train__precision="fp32", model__dtype="fp32")
        losses[name] = [json.loads(x)["loss"] for x in (out / name / "metrics.jsonl").read_text().splitlines()
                        if "loss" in json.loads(x)]
    a, b = losses.values()
    diff = max(abs(x - y) / abs(y) for x, y in zip(a, b))
    return {"losses": losses, "max_rel_diff": diff, "ok": diff < 1e-4}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 1
    import bitsandbytes as bnb

    results = {"env": {"torch": torch.__version__, "cuda": torch.version.cuda, "device": torch.cuda.get_device_name(),
                       "bf16": torch.cuda.is_bf16_supported(), "bitsandbytes": bnb.__version__}}
    print(json.dumps(results["env"]))
    work = out / "work"
    model_dir = make_model(work, hidden=768, layers=8)
    data = write_data(work, 2000)
    results["master_weights"] = check_master_weights(model_dir)
    print("master_weights", json.dumps(results["master_weights"]))
    results["fused_ce"] = check_fused_ce()
    print("fused_ce", json.dumps(results["fused_ce"]))
    setups = {
        "full-bf16": dict(adapter__type="none", train__lr=5e-5),
        "lora-bf16": {},
        "lora-packed": dict(data__packing=True),
        "lora-gradckpt": dict(train__gradient_checkpointing=True),
        "qlora-nf4": dict(model__quantization="nf4"),
        "lora-adamw8bit": dict(train__optimizer="adamw_8bit"),
        "lora-paged8bit": dict(train__optimizer="paged_adamw_8bit"),
    }
    if a.quick:
        setups = {k: setups[k] for k in ("lora-bf16", "qlora-nf4")}
    results["setups"] = []
    for name, over in setups.items():
        try:
            res = run_setup(name, model_dir, data, work, a.steps, **over)
        except Exception as e:  # a failing setup is a result, not the end of the check
            res = {"setup": name, "ok": False, "error": f"{type(e).__name__}: {e}"[:500]}
        results["setups"].append(res)
        print("setup", json.dumps(res))
    results["accum"] = check_accum(model_dir, data, work)
    print("accum", json.dumps(results["accum"]))
    ok = all(r.get("ok") for r in [results["master_weights"], results["fused_ce"], results["accum"], *results["setups"]])
    results["ok"] = ok
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2, default=str))
    print("ALL OK" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
