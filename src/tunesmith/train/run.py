"""`tunesmith train`: config -> run directory. Builds what the loop needs, in dependency order, then
hands over to `train_loop`, then writes the result, the plots and the report.

Order matters: the config and the output_dir are validated first (no weight is loaded for a config
that will fail), then the tokenizer (the data needs it), the data (bad rows fail before the model
costs memory), the model and the adapter; only then is the run directory claimed (an old run that
--overwrite replaces is moved aside, and put back if this run fails), then the optimizer, and
only then is a checkpoint restored into them.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path
from typing import Callable

import torch

from ..adapter_counts import closed_form_trainable
from ..adapters import apply_adapter, save_adapter
from ..config import RunConfig, load_config
from ..data.pipeline import prepare_data
from ..errors import ConfigError, TrainingError, UserError
from ..io import Claim, apply_umask, atomic_write_text, check_output, claim_dir, clean_stale, sibling, swap_in
from ..models.loading import count_parameters, load_model, load_tokenizer, resolve_dtype
from ..objectives import get_objective
from . import checkpoint as ckpt
from . import fsdp
from .forward import CausalLMLoss, base_causal_lm
from .loop import LoopParts, LoopState, evaluate_with_metrics, train_loop
from .metrics import MetricsLog, Progress, fmt_count
from .optim import build_optimizer, build_scheduler
from .report import write_report
from .sampler import StepSampler
from .trackers import Trackers

# Keys that may change between a run and its resumption without breaking exact reproduction.
RESUMABLE_CHANGES = {"train.max_steps", "train.epochs", "train.save_every", "train.keep_checkpoints", "train.eval_every",
                     "train.progress", "train.report_to", "train.early_stopping_patience", "train.log_every"}


def say(msg: str) -> None:
    if int(os.environ.get("RANK", "0")) == 0:
        print(msg, file=sys.stderr, flush=True)


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def claim_run_dir(cfg: RunConfig, overwrite: bool, resume: bool) -> Claim:
    """The run directory, checked and claimed (io.claim_dir): an old run is moved aside, not deleted,
    until `commit()`; the data and model may not live inside it. With `resume`, the directory must
    hold this run (same config) and something to continue from."""
    if resume:  # checked again (claim_dir checks the rest again): something may have written there meanwhile
        _check_resume(cfg, Path(cfg.output_dir))
    return claim_dir(cfg.output_dir, "train", overwrite=overwrite, inputs=_inputs(cfg), what="output_dir", resume=resume)


def check_run_dir(cfg: RunConfig, overwrite: bool, resume: bool) -> None:
    """Everything claim_run_dir would refuse, without touching anything."""
    if resume:
        _check_resume(cfg, Path(cfg.output_dir))
    check_output(cfg.output_dir, "train", overwrite=overwrite, what="output_dir", allow_existing=resume, inputs=_inputs(cfg))


def _inputs(cfg: RunConfig) -> list[str]:
    return [*cfg.data.train, *cfg.data.eval, cfg.model.path]


def _check_resume(cfg: RunConfig, run_dir: Path) -> None:
    saved = run_dir / "config.yaml"
    if not saved.is_file():
        raise UserError(f"--resume: output_dir {run_dir} holds no run (no config.yaml); drop --resume to start one")
    old = _flat(load_config(saved).model_dump(mode="json"))
    new = _flat(cfg.model_dump(mode="json"))
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES)
    if changed:
        raise ConfigError(f"--resume: the config differs from the run in {run_dir} in {changed}; "
                          "resume with the same config, or start a new run in another output_dir")
    final = [name for name in ("adapter", "model") if (run_dir / name).exists()]
    if final and ckpt.latest_valid(run_dir / "checkpoints", warn=lambda _: None) is None:
        raise UserError(f"--resume: {run_dir} holds a finished run ({final[0]}/) and no complete checkpoint to continue "
                        "from, so resuming would start over and replace it; train into a new output_dir (or pass "
                        "--overwrite instead of --resume to replace it deliberately)")


def build_model(cfg: RunConfig, device: torch.device, head: str = "causal"):
    """Base model (maybe quantized) + adapter, with trainable parameters in fp32. head="score": the
    causal backbone with a scalar head (sequence classification), for reward models."""
    compute = torch.bfloat16 if cfg.train.precision == "bf16" else torch.float16 if cfg.train.precision == "fp16" else torch.float32
    model = load_model(cfg.model, compute_dtype=compute, device=device, head=head)
    gc_kwargs = {"use_reentrant": False}  # reentrant checkpointing leaves LoRA B at zero (PITFALLS 14)
    if cfg.model.quantization != "none":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.train.gradient_checkpointing,
                                                gradient_checkpointing_kwargs=gc_kwargs)
    elif cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
    if cfg.adapter.type == "none":
        model.requires_grad_(True)
    else:
        expected, formula = closed_form_trainable(model, cfg.adapter)
        say(f"adapter: {cfg.adapter.type}, closed form {formula} = {expected:,} trainable parameters")
    model = apply_adapter(model, cfg.adapter, task_type="SEQ_CLS" if head == "score" else "CAUSAL_LM")
    # Master weights: whatever trains is fp32, whatever the storage dtype (PITFALLS 13).
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    base_causal_lm(model).config.use_cache = False
    return model


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def save_result(cfg: RunConfig, model, tokenizer, run_dir: Path, full_state: dict | None = None) -> Path:
    """adapter/ (PEFT format) or model/ (safetensors in the storage dtype), with the tokenizer and its
    chat template, written into a temp dir and renamed into place. `full_state`: the gathered state
    dict of a sharded (FSDP) model, whose own parameters are only this rank's shards."""
    name = "model" if cfg.adapter.type == "none" else "adapter"
    final, tmp = run_dir / name, sibling(run_dir / name, "tmp")
    clean_stale(final)  # a .tmp of a save that was killed
    if cfg.adapter.type == "none":
        dtype = resolve_dtype(cfg.model.dtype)
        state = {k: v.detach().to(dtype) for k, v in (full_state or model.state_dict()).items()}
        model.save_pretrained(tmp, state_dict=state, safe_serialization=True)
    else:
        save_adapter(model, tmp, full_state)
    tokenizer.save_pretrained(tmp)
    apply_umask(tmp)
    swap_in(tmp, final)  # a result from before (a resumed run) is deleted only once the new one is in
    return final


def train(config: str | Path | RunConfig, overrides: list[str] | None = None, *, overwrite: bool = False,
          resume: bool = False, callbacks: list[Callable] | None = None) -> dict:
    """Run one training job; returns the summary that report.md is written from. A run that fails
    after --overwrite moved the old run aside puts the old run back."""
    claims: list[Claim] = []
    try:
        summary = _train(config, overrides, overwrite, resume, callbacks, claims)
    except BaseException:
        for claim in claims:
            claim.restore()
        raise
    for claim in claims:
        claim.commit()
    return summary


def _train(config, overrides, overwrite: bool, resume: bool, callbacks, claims: list[Claim]) -> dict:
    from accelerate import Accelerator

    cfg = config if isinstance(config, RunConfig) else load_config(config, overrides)
    if cfg.train.precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("`train.precision: fp16` needs a GPU; on the CPU use bf16 or fp32")
    precision = cfg.train.precision
    if precision == "auto":
        precision = "bf16" if resolve_dtype("auto") == torch.bfloat16 else "fp32"
        cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"precision": precision})})
    if precision == "fp32" and cfg.model.dtype == "auto" and resolve_dtype("auto") != torch.float32:
        # fp32 compute asked for on a bf16-capable GPU: bf16 frozen weights would feed bf16 activations
        # into fp32 trainable modules (a reward head, LoRA) with no autocast to reconcile them.
        cfg = cfg.model_copy(update={"model": cfg.model.model_copy(update={"dtype": "fp32"})})
    acc = Accelerator(cpu=not torch.cuda.is_available())
    main = acc.is_main_process
    if acc.num_processes > 1:
        say(f"distributed: {acc.distributed_type.value} over {acc.num_processes} processes ({acc.device.type})")
    t_begin = time.time()
    if main:  # a bad output_dir fails before any weight is loaded; nothing is moved or written yet
        check_run_dir(cfg, overwrite, resume)
    torch.manual_seed(cfg.train.seed)

    tokenizer = load_tokenizer(cfg.model.path, cfg.model.trust_remote_code)
    objective = get_objective(cfg.method, cfg)
    # An objective with its own kind of data (preference pairs, ...) prepares it; otherwise token rows.
    own_data = getattr(objective, "prepare_data", None)
    data = own_data(tokenizer, cfg.train.seed) if own_data else prepare_data(cfg.data, tokenizer, seed=cfg.train.seed)
    for note in data.notes:
        say(f"data: {note}")
    ex = data.stats["examples"]
    say(f"data: {ex['count']} examples, {data.stats['rows']} rows, tokens/example p50 {ex.get('p50')} p90 {ex.get('p90')} "
        f"max {ex.get('max')}, {data.stats['label_tokens']} label tokens, {data.stats['eval_examples']} eval examples")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    sampler = StepSampler(len(data.train), cfg.train.micro_batch_size, cfg.train.grad_accum_steps, acc.num_processes)
    if sampler.steps_per_epoch == 0:
        raise ConfigError(f"{len(data.train)} training rows cannot fill one step of {sampler.global_batch} rows "
                          "(micro_batch_size x grad_accum_steps x processes); lower them or add data")
    total_steps = sampler.total_steps(cfg.train.epochs, cfg.train.max_steps)

    head = getattr(objective, "head", "causal")  # "score": a reward model's scalar head
    model = build_model(cfg, acc.device) if head == "causal" else build_model(cfg, acc.device, head=head)
    if head == "score":
        base_causal_lm(model).config.pad_token_id = pad_id
    trainable, total = count_parameters(model)
    if trainable == 0:
        raise TrainingError("no parameter is trainable; check adapter.type and adapter.target_modules")
    # Config, data and model have all checked out: only now is an old run moved aside, and config.yaml written.
    if main:
        claims.append(claim_run_dir(cfg, overwrite, resume))
        atomic_write_text(Path(cfg.output_dir) / "config.yaml", cfg.dump())
    acc.wait_for_everyone()
    run_dir = Path(cfg.output_dir)
    say(f"model: {fmt_count(trainable)} trainable of {fmt_count(total)} parameters ({100 * trainable / total:.2f}%; {trainable:,} exactly)")
    wrap = getattr(objective, "wrap", None)
    wrapper = wrap(model, cfg.train.loss_chunk_size) if wrap else CausalLMLoss(model, cfg.train.loss_chunk_size)
    if hasattr(objective, "setup"):  # the reference model / log-probs, before a checkpoint moves the weights
        objective.setup(wrapper, data, pad_id, acc.device, say)
    # FSDP shards before the optimizer exists, so the optimizer holds the sharded parameters.
    own_fsdp = cfg.train.fsdp and acc.num_processes > 1 and acc.distributed_type.value != "FSDP"
    if own_fsdp:
        fsdp.shard(wrapper, fsdp.decoder_layers(model))
    optimizer = build_optimizer(wrapper, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train, total_steps)

    state = LoopState()
    if resume:
        found = ckpt.latest_valid(run_dir / "checkpoints", warn=say)
        if found is None:
            say(f"--resume: no complete checkpoint in {run_dir / 'checkpoints'}; starting from the beginning")
        else:
            saved = ckpt.load_checkpoint(found, wrapper, optimizer, scheduler, rank=acc.process_index)
            state = LoopState(**{k: v for k, v in saved.items() if k in LoopState.__dataclass_fields__})
            say(f"resumed from {found} (step {state.step})")
    if own_fsdp:  # accelerate would wrap the sharded module in DDP as well
        optimizer = acc.prepare(optimizer)
    else:
        wrapper, optimizer = acc.prepare(wrapper, optimizer)

    log = MetricsLog(run_dir / "metrics.jsonl", truncate_after_step=state.step) if main else None
    trackers = Trackers(cfg.train.report_to if main else [], run_dir, cfg.model_dump(mode="json"), run_dir.name)
    progress = Progress(total_steps, initial=state.step, enabled=cfg.train.progress and main)
    parts = LoopParts(wrapper, objective, optimizer, scheduler, acc, data.train, data.eval, pad_id,
                      run_dir, log, progress, trackers, list(callbacks or []))
    try:
        state = train_loop(parts, cfg, state, total_steps)
        final_eval, _, final_metrics = evaluate_with_metrics(parts, cfg)
        if data.eval and main:
            log.log({"step": state.step, "eval_loss": final_eval, **final_metrics})
            parts.trackers.log({"eval_loss": final_eval, **final_metrics}, state.step)
    finally:
        progress.close()
        trackers.close()
        if log is not None:
            log.close()

    model = acc.unwrap_model(wrapper).model
    # A sharded model is gathered into full tensors first (a collective: every rank calls it).
    full_state = None
    if fsdp.is_sharded(wrapper):
        full_state = {k.removeprefix("model."): v for k, v in fsdp.full_model_state(acc.unwrap_model(wrapper)).items()}
    acc.wait_for_everyone()
    summary = {
        "name": run_dir.name, "method": cfg.method, "model": cfg.model.path,
        "adapter": cfg.adapter.type, "quantization": cfg.model.quantization, "precision": precision,
        "trainable_params": trainable, "total_params": total, "steps": state.step, "max_steps": total_steps,
        "tokens": state.tokens, "duration_s": round(time.time() - t_begin, 2), "peak_memory_bytes": _peak_memory(acc.device),
        "stop_reason": state.stop_reason, "final_loss": state.last_loss, "final_eval_loss": final_eval,
        "data": data.stats, "notes": data.notes, "run_dir": str(run_dir), "final_eval_metrics": final_metrics,
    }
    if main:
        summary["output"] = str(save_result(cfg, model, tokenizer, run_dir, full_state))
        if hasattr(objective, "report_sections"):  # e.g. the preference curves and table
            summary["sections"] = summary.get("sections", []) + objective.report_sections(run_dir)
        write_report(run_dir, summary)
        say(f"done: {state.stop_reason}; final loss {state.last_loss:.4f}; result in {summary['output']}; report {run_dir / 'report.md'}")
    acc.wait_for_everyone()
    return summary
