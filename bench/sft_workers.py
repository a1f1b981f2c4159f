"""The two SFT workers of bench/sft_vs_trl.py (also run by bench/memory_real.py): one framework, one
configuration and method, in a fresh process. See sft_vs_trl.py's docstring for what is measured."""

from __future__ import annotations

import gc
import json
import statistics
import time
from pathlib import Path

from common import maxrss_mb, vm_hwm_mb

LORA = dict(r=16, alpha=32, dropout=0.0, target_modules="all-linear")
LR = {"lora": 2e-4, "qlora": 2e-4, "full": 2e-5}  # full fine-tuning moves every weight: a tenth of LoRA's rate
WARMUP_STEPS_EXCLUDED = 2  # steps 1 and 2 are warm-up (allocator growth, first-call overheads)
LOSS_WINDOW = 5


def gpu_peak_mb() -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**20


def peak_now(spec: dict) -> float:
    return gpu_peak_mb() if spec["device"] == "cuda" else maxrss_mb()


def baseline_after_load(model_dir: str) -> float:
    """Load the model once the way both frameworks do (safetensors, fp32, sdpa), then free it; the
    high-water mark after that is the baseline subtracted from the training peak."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    del model
    gc.collect()
    if torch.cuda.is_available():  # on the GPU the peak is torch's own allocator count, which starts at 0
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        return gpu_peak_mb()
    return maxrss_mb()


def steady_state(times: list[float], tokens: list[int], losses: list[float]) -> dict:
    """tokens/s between the end of warm-up and the end of the run; tokens are cumulative per step. A run
    shorter than the loss window (--quick, memory_real.py's 3 steps) averages all its steps."""
    k = WARMUP_STEPS_EXCLUDED - 1  # index of the end of the last warm-up step
    dt = times[-1] - times[k]
    window = min(LOSS_WINDOW, len(losses))
    return {
        "tokens_per_s": (tokens[-1] - tokens[k]) / dt,
        "steady_steps": len(times) - 1 - k,
        "steady_s": dt,
        "s_per_step": dt / (len(times) - 1 - k),
        "final_loss": statistics.fmean(losses[-window:]),
        "loss_window": window,
    }


def tunesmith_config(spec: dict) -> dict:
    method = spec.get("method", "lora")
    model = {"path": spec["model_dir"], "dtype": "fp32"}
    if method == "qlora":
        model.update(quantization="nf4", double_quant=True)
    adapter = {"type": "none"} if method == "full" else {"type": "lora", **LORA}
    return {
        "model": model,
        "data": {"train": [spec["data"]], "format": "alpaca", "columns": {"instruction": "question", "output": "answer"},
                 "max_length": spec["max_length"], "packing": spec["packing"]},
        "adapter": adapter,
        "train": {"max_steps": spec["steps"], "micro_batch_size": spec["micro_batch_size"],
                  "grad_accum_steps": spec["grad_accum_steps"], "lr": LR[method], "scheduler": "cosine", "warmup_steps": 0,
                  "precision": "bf16" if spec["device"] == "cuda" else "fp32", "save_every": 0, "progress": False,
                  "seed": 0, "gradient_checkpointing": bool(spec.get("gradient_checkpointing", False))},
        "output_dir": spec["run_dir"],
    }


def worker_tunesmith(spec: dict) -> dict:
    import accelerate  # noqa: F401  (imported before the baseline: train() imports it)
    import peft  # noqa: F401

    from tunesmith.config import validate_config
    from tunesmith.train.run import train

    base = baseline_after_load(spec["model_dir"])
    cfg = validate_config(tunesmith_config(spec))
    times, tokens, losses, peak = [], [], [], [0.0, None]

    def on_step(step: int, record: dict) -> None:
        times.append(time.perf_counter())
        tokens.append(record["tokens"])
        losses.append(record["loss"])
        peak[:] = [peak_now(spec), vm_hwm_mb()]

    summary = train(cfg, overwrite=True, callbacks=[on_step])
    return {
        "baseline_mb": base, "peak_abs_mb": peak[0], "peak_mb": peak[0] - base, "vm_hwm_mb": peak[1],
        "losses": losses, "tokens": tokens, "step_end_s": [t - times[0] for t in times],
        "label_tokens": summary["data"]["label_tokens"], "examples": summary["data"]["examples"]["count"],
        "rows": summary["data"]["rows"], "packing_efficiency": summary["data"].get("packing_efficiency"),
        **steady_state(times, tokens, losses),
    }


def trl_model(spec: dict):
    """The model handed to SFTTrainer: the path (TRL loads it with model_init_kwargs), or for QLoRA the
    NF4 + double-quant model loaded here like tunesmith's (compute dtype = the run's), with bitsandbytes'
    AVX512-BF16 inference kernel off (models/bnb_cpu.py). TRL then casts the LoRA weights of a quantized
    model to bf16 (its own QLoRA recipe, sft_trainer.py); tunesmith keeps them fp32."""
    if spec.get("method", "lora") != "qlora":
        return spec["model_dir"], {"dtype": "float32", "attn_implementation": "sdpa"}
    import torch
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    from tunesmith.models.bnb_cpu import use_portable_cpu_kernel

    compute = torch.bfloat16 if spec["device"] == "cuda" else torch.float32
    qcfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute, bnb_4bit_quant_storage=torch.uint8)
    device = "cuda:0" if spec["device"] == "cuda" else "cpu"
    model = AutoModelForCausalLM.from_pretrained(spec["model_dir"], dtype=torch.float32, attn_implementation="sdpa",
                                                 quantization_config=qcfg, device_map={"": device})
    use_portable_cpu_kernel(model)
    return model, None


def trl_args(spec: dict, init_kwargs: dict | None):
    from trl.trainer.sft_trainer import SFTConfig

    return SFTConfig(
        output_dir=spec["run_dir"], per_device_train_batch_size=spec["micro_batch_size"],
        gradient_accumulation_steps=spec["grad_accum_steps"], max_steps=spec["steps"],
        learning_rate=LR[spec.get("method", "lora")], lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, logging_steps=1, save_strategy="no", report_to=[],
        bf16=spec["device"] == "cuda", fp16=False,  # bf16: autocast over fp32 weights, as tunesmith's precision: bf16
        gradient_checkpointing=False,  # SFTConfig turns it on by default; tunesmith's default is off
        max_length=spec["max_length"],
        # bfd packing is padding-free: each micro-batch is flattened into one row with restarting
        # position_ids and no attention_mask, from which transformers builds a block-diagonal mask
        # for sdpa as well (masking_utils.find_packed_sequence_indices), so FlashAttention is not
        # needed for correctness here; only the attention cost grows with the flattened length.
        packing=spec["packing"], packing_strategy="bfd", completion_only_loss=True, dataloader_num_workers=0, seed=0,
        disable_tqdm=True, model_init_kwargs=init_kwargs)


def worker_trl(spec: dict) -> dict:
    import datasets
    import peft
    import transformers
    from trl.trainer.sft_trainer import SFTTrainer

    datasets.disable_progress_bars()
    base = baseline_after_load(spec["model_dir"])
    rows = [json.loads(line) for line in Path(spec["data"]).read_text().splitlines()]
    dataset = datasets.Dataset.from_list([
        {"prompt": [{"role": "user", "content": r["question"]}], "completion": [{"role": "assistant", "content": r["answer"]}]}
        for r in rows
    ])
    tokenizer = transformers.AutoTokenizer.from_pretrained(spec["model_dir"])
    tokenizer.padding_side = "right"
    model, init_kwargs = trl_model(spec)
    peft_config = None if spec.get("method", "lora") == "full" else peft.LoraConfig(
        r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"], target_modules=LORA["target_modules"],
        task_type="CAUSAL_LM")
    times, tokens, losses, trl_tokens, peak, counted = [], [], [], [], [0.0, None], [0]

    class Counting(SFTTrainer):
        def training_step(self, model, inputs, *rest, **kw):
            mask = inputs.get("attention_mask")
            counted[0] += int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel())
            return super().training_step(model, inputs, *rest, **kw)

    class Timer(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter())
            tokens.append(counted[0])
            peak[:] = [peak_now(spec), vm_hwm_mb()]

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                losses.append(float(logs["loss"]))
                trl_tokens.append(logs.get("num_tokens"))

    trainer = Counting(model=model, args=trl_args(spec, init_kwargs), train_dataset=dataset, processing_class=tokenizer,
                       peft_config=peft_config, callbacks=[Timer()])
    train_ds = trainer.train_dataset
    label_tokens = sum(sum(1 for x in lab[1:] if x != -100) for lab in train_ds["labels"])
    trainer.train()
    return {
        "baseline_mb": base, "peak_abs_mb": peak[0], "peak_mb": peak[0] - base, "vm_hwm_mb": peak[1],
        "losses": losses, "tokens": tokens, "trl_num_tokens": trl_tokens, "step_end_s": [t - times[0] for t in times],
        "label_tokens": label_tokens, "examples": len(rows), "rows": len(train_ds),
        **steady_state(times, tokens, losses),
    }
