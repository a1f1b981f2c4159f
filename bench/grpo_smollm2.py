"""GRPO + LoRA on SmolLM2-135M-Instruct, easy arithmetic with a required `#### N` answer: the
reward curve of the run and held-out accuracy (greedy, 50 prompts) before and after.

    python bench/grpo_smollm2.py --model DIR --out RUN_DIR [--steps 30] [key=value overrides]

DIR: a transformers directory of the model (on branches with the real-model issue,
`tunesmith convert smollm2-135m-instruct --out DIR`). Runs on CPU in minutes with 1 thread per core.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from arith_data import write  # noqa: E402


def _from_checkpoint(model, ckpt: Path):
    """The run's LoRA (its config.yaml) with the weights of a checkpoint's trainable.safetensors
    (wrapper names: `model.` + the PEFT model's): a run stopped at its time budget is still measured."""
    from safetensors.torch import load_file

    from tunesmith.adapters import apply_adapter
    from tunesmith.config import load_config

    cfg = load_config(ckpt.parents[1] / "config.yaml", [])
    peft = apply_adapter(model, cfg.adapter)
    weights = {k.removeprefix("model."): v for k, v in load_file(str(ckpt / "trainable.safetensors")).items()}
    missing = set(weights) - set(dict(peft.named_parameters()))
    if missing:
        raise SystemExit(f"{ckpt}: {len(missing)} weights do not fit the run's adapter, e.g. {sorted(missing)[:2]}")
    peft.load_state_dict(weights, strict=False)
    return peft


@torch.no_grad()
def accuracy(model_dir: str, adapter: str | None, rows: list[dict], max_new_tokens: int = 48) -> dict:
    """Greedy held-out accuracy (answer = the number after `####`, else the last number) and format
    rate. `adapter`: a PEFT adapter directory, or a run's checkpoints/step-N directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.evaluate.metrics import answers_match, extract_answer
    from tunesmith.objectives.rl.data import prompt_ids

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter and (Path(adapter) / "trainable.safetensors").is_file():
        model = _from_checkpoint(model, Path(adapter))
    elif adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    model.eval()
    prompts = [prompt_ids(tok, r["prompt"] if isinstance(r["prompt"], list) else [{"role": "user", "content": r["prompt"]}])
               for r in rows]
    T = max(map(len, prompts))
    ids = torch.tensor([[tok.pad_token_id] * (T - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (T - len(p)) + [1] * len(p) for p in prompts])
    out = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    texts = tok.batch_decode(out[:, T:], skip_special_tokens=True)
    correct = [answers_match(extract_answer(t, "gsm8k"), r["answer"]) for t, r in zip(texts, rows)]
    formatted = [re.search(r"####\s*-?\d+", t) is not None for t in texts]
    return {"accuracy": sum(correct) / len(rows), "format": sum(formatted) / len(rows), "example": texts[0]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--held-out", type=int, default=50)
    ap.add_argument("--checkpoint", help="only measure held-out accuracy of this checkpoints/step-N of a run in --out")
    ap.add_argument("overrides", nargs="*")
    a = ap.parse_args()
    if a.checkpoint:
        _, test_file = write(Path(a.out + "-data"))
        held = [json.loads(x) for x in test_file.read_text().splitlines()][: a.held_out]
        print(json.dumps({"checkpoint": a.checkpoint, "after": accuracy(a.model, a.checkpoint, held)}))
        return
    from tunesmith.train.metrics import read_metrics
    from tunesmith.train.run import train

    train_file, test_file = write(Path(a.out + "-data"))
    held = [json.loads(x) for x in test_file.read_text().splitlines()][: a.held_out]
    before = accuracy(a.model, None, held)
    print("before", before, flush=True)
    t0 = time.time()
    train("examples/grpo_lora.yaml", [f"model.path={a.model}", f"data.train={train_file}", f"output_dir={a.out}",
                                      f"train.max_steps={a.steps}", "train.progress=false", *a.overrides], overwrite=True)
    dt = time.time() - t0
    after = accuracy(a.model, str(Path(a.out) / "adapter"), held)
    rec = read_metrics(Path(a.out) / "metrics.jsonl")
    curve = [(r["step"], round(r["reward"], 3), round(r.get("kl", 0.0), 4), round(r["completion_length"], 1)) for r in rec]
    result = {"before": before, "after": after, "train_s": round(dt, 1), "curve (step, reward, kl, length)": curve}
    (Path(a.out) / "bench.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
