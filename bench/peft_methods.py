"""Every PEFT method on the same tiny task, tunesmith next to TRL's SFTTrainer + PEFT, on the CPU.

    .venv/bin/python bench/peft_methods.py [--steps 120] [--pretrain-steps 200] [--repeats 3] [--no-trl] [--quick]

Writes bench/results/peft_methods.json, the table into bench/README.md and the docs table into
docs/peft.md (between markers). One process, methods in turn; per method `--repeats` runs alternating tunesmith and TRL, the median
tokens/s reported (the machine is shared, single runs moved the ratios by up to 2x).

Setup: the quickstart's world. A tiny Llama (hidden 64, 2 layers) gets a tokenizer trained on the
built-in corpus and `--pretrain-steps` of full pre-training on it, so the base knows the words; then
each method fine-tunes that base on the quickstart's past-tense task (alpaca rows, answer-only
loss), unpacked rows (prompt-learning methods cannot pack), micro-batch 8, constant lr after no
warm-up, AdamW, clip 1.0, fp32, one torch thread. The lr is per method (the usual ranges: ~1e-3..
5e-3 for weight methods, ~1e-2..3e-1 for virtual tokens); both frameworks get the same one.

Measured per method:
  params tiny / 7B  trainable parameters on the tiny base (measured) and on Llama-2-7B's shapes
                    (d 4096, 32 layers, MLP 11008, built on the meta device, adapter applied by the
                    same code, measured; the closed form of adapter_counts.py is checked equal)
  nf4 base          `model.quantization: nf4`, 12 steps: "yes (first loss -> mean of the last 3)" when
                    it trains with finite losses, else the error; config refusals are quoted
  tokens/s          non-pad tokens per second from the end of step 2 to the end of the last step
                    (collation, optimizer and logging inside); TRL's counted from the attention
                    mask of each micro-batch it receives
  loss              mean training loss of the last 10 steps; eval loss on 200 held-out rows
                    (tunesmith only: TRL's eval needs a second pass we do not time)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import common

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "src"))
RESULTS_JSON = HERE / "results" / "peft_methods.json"
README = HERE / "README.md"
DOCS = REPO / "docs" / "peft.md"

# type: (adapter section, lr)
METHODS = {
    "lora": ({"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0}, 3e-3),
    "dora": ({"type": "dora", "r": 8, "alpha": 16, "dropout": 0.0}, 3e-3),
    "ia3": ({"type": "ia3"}, 3e-2),
    "prefix": ({"type": "prefix", "prefix": {"num_virtual_tokens": 16}}, 3e-2),
    "prompt": ({"type": "prompt", "prompt": {"num_virtual_tokens": 16}}, 3e-1),
    "ptuning": ({"type": "ptuning", "ptuning": {"num_virtual_tokens": 16, "encoder_hidden_size": 64}}, 1e-2),
    "adapter": ({"type": "adapter", "bottleneck": {"size": 32}}, 3e-3),
}
LLAMA_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                num_key_value_heads=32, vocab_size=32000)
WARMUP_STEPS_EXCLUDED, LOSS_WINDOW, MICRO_BATCH, MAX_LENGTH = 2, 10, 8, 64


def setup(work: Path, pretrain_steps: int) -> tuple[Path, Path, Path]:
    from tunesmith.models.tiny import init_model
    from tunesmith.quickstart import Budget, pretrain_config, write_corpus, write_jsonl
    from tunesmith.quickstart.task import past_tense_task
    from tunesmith.train.run import train

    b = Budget(corpus_docs=3000, pretrain_steps=pretrain_steps, max_length=128)
    corpus = write_corpus(work / "data" / "corpus.txt", b.corpus_docs, b.seed)
    init_model(work / "base-init", size="tiny", corpus=[corpus], seed=0)
    cfg = pretrain_config(work, corpus, b)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"progress": False, "eval_every": 0})})
    print(f"pre-training the tiny base for {pretrain_steps} steps ...", flush=True)
    s = train(cfg, overwrite=True)
    print(f"  base pre-trained: final loss {s['final_loss']:.3f}", flush=True)
    tr, ev = past_tense_task(1500, 200, seed=0)
    return work / "pretrain" / "model", write_jsonl(work / "data" / "train.jsonl", tr), write_jsonl(work / "data" / "eval.jsonl", ev)


def steady(times: list[float], tokens: list[int], losses: list[float]) -> dict:
    k = WARMUP_STEPS_EXCLUDED - 1
    return {"tokens_per_s": (tokens[-1] - tokens[k]) / (times[-1] - times[k]),
            "final_loss": statistics.fmean(losses[-LOSS_WINDOW:]), "losses": losses}


def run_tunesmith(name: str, base: Path, train_file: Path, eval_file: Path, steps: int, work: Path, quant: str = "none") -> dict:
    from tunesmith.config import validate_config
    from tunesmith.train.run import train

    adapter, lr = METHODS[name]
    cfg = validate_config({
        "model": {"path": str(base), "dtype": "fp32", "quantization": quant},
        "data": {"train": [str(train_file)], "eval": [str(eval_file)], "format": "alpaca", "max_length": MAX_LENGTH},
        "adapter": adapter,
        "train": {"max_steps": steps, "micro_batch_size": MICRO_BATCH, "lr": lr, "scheduler": "constant",
                  "precision": "fp32", "save_every": 0, "progress": False, "seed": 0},
        "output_dir": str(work / f"run-{name}-{quant}"),
    })
    times, tokens, losses = [], [], []

    def on_step(step: int, record: dict) -> None:
        times.append(time.perf_counter())
        tokens.append(record["tokens"])
        losses.append(record["loss"])

    s = train(cfg, overwrite=True, callbacks=[on_step])
    if quant != "none":
        return {"losses": losses}
    return {**steady(times, tokens, losses), "eval_loss": s["final_eval_loss"], "trainable": s["trainable_params"]}


def peft_config_of(name: str, base: Path):
    """The PEFT config tunesmith builds for `name`, so TRL trains exactly the same adapter."""
    import torch
    from transformers import AutoModelForCausalLM

    from tunesmith.adapters import PEFT_BUILDERS
    from tunesmith.config import AdapterConfig

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    return PEFT_BUILDERS[name](AdapterConfig(**METHODS[name][0]), model)


def run_trl(name: str, base: Path, train_file: Path, steps: int, work: Path) -> dict:
    import datasets
    import transformers
    from trl.trainer.sft_trainer import SFTConfig, SFTTrainer

    datasets.disable_progress_bars()
    rows = [json.loads(line) for line in train_file.read_text().splitlines()]
    ds = datasets.Dataset.from_list([
        {"prompt": [{"role": "user", "content": f"{r['instruction']}\n\n{r['input']}"}],
         "completion": [{"role": "assistant", "content": r["output"]}]} for r in rows])
    tok = transformers.AutoTokenizer.from_pretrained(base)
    tok.padding_side = "right"
    args = SFTConfig(output_dir=str(work / f"trl-{name}"), per_device_train_batch_size=MICRO_BATCH, max_steps=steps,
                     learning_rate=METHODS[name][1], lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
                     max_grad_norm=1.0, logging_steps=1, save_strategy="no", report_to=[], bf16=False, fp16=False,
                     gradient_checkpointing=False, max_length=MAX_LENGTH, packing=False, completion_only_loss=True,
                     dataloader_num_workers=0, seed=0, disable_tqdm=True,
                     model_init_kwargs={"dtype": "float32", "attn_implementation": "sdpa"})
    times, tokens, losses, counted = [], [], [], [0]

    class Counting(SFTTrainer):
        def training_step(self, model, inputs, *rest, **kw):
            counted[0] += int(inputs["attention_mask"].sum())
            return super().training_step(model, inputs, *rest, **kw)

    class Timer(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter())
            tokens.append(counted[0])

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))

    trainer = Counting(model=str(base), args=args, train_dataset=ds, processing_class=tok,
                       peft_config=peft_config_of(name, base), callbacks=[Timer()])
    trainer.train()
    return steady(times, tokens, losses)


def params_7b(name: str) -> tuple[int, int]:
    """(measured on a meta-device Llama-2-7B with the adapter applied, closed form)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tunesmith.adapters import closed_form_trainable
    from tunesmith.adapters import apply_adapter
    from tunesmith.config import AdapterConfig
    from tunesmith.models.loading import count_parameters

    with torch.device("meta"):
        model = LlamaForCausalLM(LlamaConfig(**LLAMA_7B))
    cfg = AdapterConfig(**METHODS[name][0])
    closed = closed_form_trainable(model, cfg)[0]
    return count_parameters(apply_adapter(model, cfg))[0], closed


def four_bit(name: str, base: Path, train_file: Path, eval_file: Path, work: Path, steps: int = 12) -> str:
    """`model.quantization: nf4` for `steps` steps: the first loss -> the mean of the last 3, or the refusal."""
    from tunesmith.errors import UserError

    try:
        losses = run_tunesmith(name, base, train_file, eval_file, steps, work, quant="nf4")["losses"]
    except UserError as e:
        return f"no: {str(e).splitlines()[-1].strip(' -')}"
    if not all(math.isfinite(x) for x in losses):
        return f"no: non-finite loss {losses}"
    return f"yes ({losses[0]:.2f} → {statistics.fmean(losses[-3:]):.2f} in {steps} steps)"


def fmt(results: dict, trl: bool) -> list[str]:
    from tunesmith.adapters import METHODS as INFO

    head = "| method | trains | params (tiny) | params (Llama-2-7B) | can merge | nf4 base | tokens/s | final loss | eval loss |"
    lines = [head + (" TRL tokens/s | TRL final loss | tokens/s ratio |" if trl else ""),
             "|---|---|---:|---:|---|---|---:|---:|---:|" + ("---:|---:|---:|" if trl else "")]
    for name, r in results.items():
        row = (f"| {name} | {INFO[name]['trains']} | {r['trainable']:,} | {r['params_7b']:,} | "
               f"{'yes' if INFO[name]['can_merge'] else 'no'} | {r['nf4']} | {r['tokens_per_s']:,.0f} | "
               f"{r['final_loss']:.4f} | {r['eval_loss']:.4f} |")
        if trl:
            t = r.get("trl")
            row += (f" {t['tokens_per_s']:,.0f} | {t['final_loss']:.4f} | **{r['tokens_per_s'] / t['tokens_per_s']:.2f}x** |"
                    if t else " n/a (no such method in PEFT) | | |")
        lines.append(row)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--pretrain-steps", type=int, default=200)
    ap.add_argument("--no-trl", action="store_true", help="skip the TRL column")
    ap.add_argument("--quick", action="store_true", help="20 steps, 40 pre-training steps, no files written")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="runs per (method, framework), alternating; median tokens/s")
    a = ap.parse_args()
    if a.quick:
        a.steps, a.pretrain_steps, a.repeats = 20, 40, 1
    import torch
    import transformers

    torch.set_num_threads(a.threads)
    transformers.logging.set_verbosity_error()
    t0 = time.time()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="peft-bench-") as tmp:
        work = Path(tmp)
        base, train_file, eval_file = setup(work, a.pretrain_steps)
        for name in METHODS:
            # Alternate the frameworks per repeat, so a change in the shared machine's load hits both.
            ours, theirs = [], []
            for _ in range(a.repeats):
                ours.append(run_tunesmith(name, base, train_file, eval_file, a.steps, work))
                if not a.no_trl and name != "adapter":
                    theirs.append(run_trl(name, base, train_file, a.steps, work))
            r = common.median_run(ours, "tokens_per_s")
            r["params_7b"], closed = params_7b(name)
            assert r["params_7b"] == closed, f"{name}: 7B count {r['params_7b']} != closed form {closed}"
            r["nf4"] = four_bit(name, base, train_file, eval_file, work)
            if theirs:
                r["trl"] = common.median_run(theirs, "tokens_per_s")
            results[name] = r
            print(fmt({name: r}, not a.no_trl)[-1], flush=True)
    lines = fmt(results, not a.no_trl)
    print("\n".join(lines))
    if a.quick:
        return
    cmd = "PYTHONPATH=src .venv/bin/python bench/peft_methods.py" + (" --no-trl" if a.no_trl else "")
    setup_note = (f"Setup: tiny Llama (d 64, 2 layers) pre-trained {a.pretrain_steps} steps on the built-in corpus, then "
                  f"{a.steps} steps of each method on the past-tense task, micro-batch {MICRO_BATCH} unpacked rows of <= "
                  f"{MAX_LENGTH} tokens, constant lr per method ({', '.join(f'{k} {v[1]:g}' for k, v in METHODS.items())}), "
                  f"fp32, {a.threads} torch thread(s), 2 CPUs shared with other jobs; median of {a.repeats} alternating runs per cell "
                  f"(every run's tokens/s: bench/results/peft_methods.json). tokens/s from step {WARMUP_STEPS_EXCLUDED} to the end; "
                  f"final loss = mean of the last {LOSS_WINDOW} steps; eval loss on 200 held-out rows. "
                  "The loss columns of the two frameworks differ by construction: TRL's completion keeps the newline "
                  "the chat template writes after `<|im_end|>`, one more (trivially predictable) label token per "
                  "answer (9 instead of 8 here), which lowers its mean by about 1/9 (compare tunesmith x 8/9). "
                  f"Versions: torch {torch.__version__}, transformers {transformers.__version__}, peft {__import__('peft').__version__}"
                  + ("" if a.no_trl else f", trl {__import__('trl').__version__}") + ".")
    block = ["", f"Latest run ({time.strftime('%Y-%m-%d %H:%M:%S')}, {(time.time() - t0) / 60:.1f} min):",
             "", "```", cmd, "```", "", *lines, "", setup_note, ""]
    RESULTS_JSON.parent.mkdir(exist_ok=True)
    RESULTS_JSON.write_text(json.dumps({"results": results, "steps": a.steps, "pretrain_steps": a.pretrain_steps}, indent=1))
    heading = "## Every PEFT method on one tiny task (`peft_methods.py`)"
    common.update_readme("peft_methods", block, heading=heading, path=README)
    common.update_readme("peft_methods", block, heading=heading, path=DOCS)
    print(f"wrote {RESULTS_JSON.relative_to(REPO)}, {README.relative_to(REPO)}, {DOCS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
