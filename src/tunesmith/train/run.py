"""`tunesmith train`: config -> run directory, in three steps: `setup` builds what the loop needs, in
dependency order; `fit` runs `train_loop` and the final evaluation; `finish` writes the result, the
plots and the report. Only the objective (objectives/base.py) knows which method is training.

Order matters: the config and the output_dir are validated first (no weight is loaded for a config
that will fail), then the tokenizer (the data needs it), the data (bad rows fail before the model
costs memory), the model and the adapter; only then is the run directory claimed (an old run that
--overwrite replaces is moved aside, and put back if this run fails), then the optimizer, and
only then is a checkpoint restored into them.
"""

from __future__ import annotations

import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from safetensors.torch import save_file

from ..adapters import adapter_warnings, apply_adapter, closed_form_trainable, save_adapter
from ..config import RunConfig, load_config
from ..console import say  # noqa: F401 (also imported from here as train.run.say by older code)
from ..data.pipeline import PreparedData
from ..errors import ConfigError, TrainingError, UserError
from ..io import Claim, apply_umask, atomic_write_text, check_output, claim_dir, clean_stale, sibling, swap_in
from ..models.loading import count_parameters, load_model, load_tokenizer, resolve_dtype
from ..objectives import get_objective
from ..objectives.base import Objective, SetupContext
from . import allocator, fsdp
from . import checkpoint as ckpt
from .segment_attention import CHECKPOINT_KWARGS
from .callbacks import Callback, as_callbacks
from .forward import base_causal_lm
from .host_memory import pin_mmap_threshold
from .lora_linear import fuse_lora_linears
from .swiglu import fuse_swiglu
from .loop import LoopParts, LoopState, autocast, evaluate_with_metrics, train_loop
from .metrics import MetricsLog, Progress, fmt_count
from .optim import build_optimizer, build_scheduler
from .report import write_report
from .sampler import StepSampler
from .trackers import Trackers

# Keys that may change between a run and its resumption without breaking exact reproduction.
RESUMABLE_CHANGES = {"train.max_steps", "train.epochs", "train.save_every", "train.keep_checkpoints", "train.eval_every",
                     "train.progress", "train.report_to", "train.early_stopping_patience", "train.log_every"}


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
    # Non-reentrant (reentrant checkpointing leaves LoRA B at zero, PITFALLS 14), and the recomputation re-enters
    # the packed-row attention of the forward (train/segment_attention.py).
    gc_kwargs = dict(CHECKPOINT_KWARGS)
    if cfg.model.quantization != "none":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.train.gradient_checkpointing,
                                                gradient_checkpointing_kwargs=gc_kwargs)
    elif cfg.train.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=gc_kwargs)
    task_type = "SEQ_CLS" if head == "score" else "CAUSAL_LM"
    if cfg.adapter.type == "none":
        model.requires_grad_(True)
    else:
        expected, formula = closed_form_trainable(model, cfg.adapter, task_type)
        say(f"adapter: {cfg.adapter.type}, closed form {formula} = {expected:,} trainable parameters")
        for warning in adapter_warnings(model, cfg.adapter):
            say(warning)
    model = apply_adapter(model, cfg.adapter, task_type=task_type)
    # Master weights: whatever trains is fp32, whatever the storage dtype (PITFALLS 13).
    for p in model.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()
    base_causal_lm(model).config.use_cache = False
    fuse_swiglu(model)  # one (B, T, intermediate) tensor less saved per layer, same gradients (train/swiglu.py)
    fuse_lora_linears(model)  # LoRA linears without their (tokens, d_out) temporaries (train/lora_linear.py)
    return model


def _peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def save_result(cfg: RunConfig, model, tokenizer, run_dir: Path, full_state: dict | None = None,
                extra: dict[str, dict] | None = None) -> Path:
    """adapter/ (PEFT format) or model/ (safetensors in the storage dtype), with the tokenizer and its
    chat template, written into a temp dir and renamed into place. `full_state`: the gathered state
    dict of a sharded (FSDP) model, whose own parameters are only this rank's shards. `extra`: the
    objective's own files ({name: tensors}, e.g. PPO's value_head.safetensors), saved beside them."""
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
    for fname, tensors in (extra or {}).items():
        save_file({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}, str(tmp / fname))
    apply_umask(tmp)
    swap_in(tmp, final)  # a result from before (a resumed run) is deleted only once the new one is in
    return final


@dataclass
class Run:
    """What `setup` builds for `fit` and `finish`."""
    cfg: RunConfig
    acc: object  # accelerate.Accelerator
    run_dir: Path
    tokenizer: object
    objective: Objective
    data: PreparedData
    parts: LoopParts
    state: LoopState
    total_steps: int
    trainable: int
    total: int
    t_begin: float
    estimate: dict | None = None  # estimate/check.py's prediction, checked against the measured peak at the end


def train(config: str | Path | RunConfig, overrides: list[str] | None = None, *, overwrite: bool = False,
          resume: bool = False, callbacks: list[Callback | Callable] | None = None) -> dict:
    """Run one training job; returns the summary that report.md is written from. `callbacks`:
    `Callback` objects or functions `fn(step, record)` (train/callbacks.py). A run that fails after
    --overwrite moved the old run aside puts the old run back."""
    claims: list[Claim] = []
    try:
        summary = _train(config, overrides, overwrite, resume, as_callbacks(callbacks), claims)
    except BaseException:
        for claim in claims:
            claim.restore()
        raise
    for claim in claims:
        claim.commit()
    return summary


def _train(config, overrides, overwrite: bool, resume: bool, callbacks: list[Callback], claims: list[Claim]) -> dict:
    cfg = config if isinstance(config, RunConfig) else load_config(config, overrides)
    if cfg.train.precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("`train.precision: fp16` needs a GPU; on the CPU use bf16 or fp32")
    # "auto" precision and dtype pinned for this machine (RunConfig.resolved), so the loop, the loader
    # and the saved config.yaml read one value.
    cfg = cfg.resolved()
    for note in cfg.start_notes():  # e.g. epochs unused under max_steps; a trained lm_head means full logits
        say(f"note: {note}")
    run = setup(cfg, overwrite=overwrite, resume=resume, callbacks=callbacks, claims=claims)
    final_eval, final_metrics = fit(run)
    return finish(run, final_eval, final_metrics)


def setup(cfg: RunConfig, *, overwrite: bool, resume: bool, callbacks: list[Callback], claims: list[Claim]) -> Run:
    """Everything the loop needs, in dependency order: the output_dir checked, tokenizer, data, model,
    then the run directory claimed (its claim appended to `claims` for train() to commit or restore),
    the objective's module and reference, optimizer, then the checkpoint restored into them."""
    from accelerate import Accelerator

    acc = Accelerator(cpu=not torch.cuda.is_available())
    malloc = allocator.loaded()
    if malloc is not None:  # preloaded by `tunesmith train` (train/allocator.py) or by the user
        say(f"note: malloc: {malloc}, preloaded (docs/performance.md; {allocator.CHOICE_ENV}=system to keep glibc)")
    elif acc.device.type == "cpu":
        pin_mmap_threshold()  # freed activations go back to the system (train/host_memory.py)
    if acc.num_processes > 1:
        say(f"distributed: {acc.distributed_type.value} over {acc.num_processes} processes ({acc.device.type})")
    t_begin = time.time()
    if acc.is_main_process:  # a bad output_dir fails before any weight is loaded; nothing is moved or written yet
        check_run_dir(cfg, overwrite, resume)
    torch.manual_seed(cfg.train.seed)

    tokenizer = load_tokenizer(cfg.model.path, cfg.model.trust_remote_code)
    objective = get_objective(cfg.method, cfg)
    data = objective.prepare_data(tokenizer, cfg.train.seed)
    _say_data(data)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sampler = StepSampler(len(data.train), cfg.train.micro_batch_size, cfg.train.grad_accum_steps, acc.num_processes)
    if sampler.steps_per_epoch == 0:
        raise ConfigError(f"{len(data.train)} training rows cannot fill one step of {sampler.global_batch} rows "
                          "(micro_batch_size x grad_accum_steps x processes); lower them or add data")
    total_steps = sampler.total_steps(cfg.train.epochs, cfg.train.max_steps)

    estimate = _estimate_before_model(cfg, acc, data.stats)
    model = build_model(cfg, acc.device, objective.head)
    if objective.head == "score":
        base_causal_lm(model).config.pad_token_id = pad_id
    trainable, total = count_parameters(model)
    if trainable == 0:
        raise TrainingError("no parameter is trainable; check adapter.type and adapter.target_modules")
    # Config, data and model have all checked out: only now is an old run moved aside, and config.yaml written.
    if acc.is_main_process:
        claims.append(claim_run_dir(cfg, overwrite, resume))
        atomic_write_text(Path(cfg.output_dir) / "config.yaml", cfg.dump())
    acc.wait_for_everyone()
    run_dir = Path(cfg.output_dir)
    say(f"model: {fmt_count(trainable)} trainable of {fmt_count(total)} parameters ({100 * trainable / total:.2f}%; {trainable:,} exactly)")
    wrapper = objective.wrap(model)
    # The reference model / log-probs, before sharding, DDP and a checkpoint move the weights.
    objective.setup(SetupContext(wrapper, data, pad_id, tokenizer, acc.device, acc.process_index, acc.num_processes,
                                 acc.gather, lambda: autocast(cfg, acc.device), say))
    # FSDP shards before the optimizer exists, so the optimizer holds the sharded parameters.
    own_fsdp = cfg.train.fsdp and acc.num_processes > 1 and acc.distributed_type.value != "FSDP"
    if own_fsdp:
        fsdp.shard(wrapper, fsdp.decoder_layers(model))
    optimizer = build_optimizer(wrapper, cfg.train)
    scheduler = build_scheduler(optimizer, cfg.train, total_steps)
    scaler = torch.amp.GradScaler(acc.device.type) if cfg.train.precision == "fp16" else None
    state = _restore(run_dir, wrapper, optimizer, scheduler, scaler, acc.process_index, objective) if resume else LoopState()
    if own_fsdp:  # accelerate would wrap the sharded module in DDP as well
        optimizer = acc.prepare(optimizer)
    else:
        wrapper, optimizer = acc.prepare(wrapper, optimizer)

    main = acc.is_main_process
    log = MetricsLog(run_dir / "metrics.jsonl", truncate_after_step=state.step) if main else None
    trackers = Trackers(cfg.train.report_to if main else [], run_dir, cfg.model_dump(mode="json"), run_dir.name)
    progress = Progress(total_steps, initial=state.step, enabled=cfg.train.progress and main)
    parts = LoopParts(wrapper, objective, optimizer, scheduler, acc, data.train, data.eval, pad_id,
                      run_dir, log, progress, trackers, scaler, callbacks)
    return Run(cfg, acc, run_dir, tokenizer, objective, data, parts, state, total_steps, trainable, total, t_begin, estimate)


def _estimate_before_model(cfg: RunConfig, acc, data_stats: dict) -> dict | None:
    """The estimator's peak for this run (estimate/check.py), said before any weight is loaded; `finish`
    puts the measured peak beside it, so every run checks the estimator. Advisory: a model the estimator
    cannot shape (an architecture it does not know) trains all the same, with the reason said."""
    from ..estimate.check import before_model

    try:
        pre = before_model(cfg, acc.device, acc.num_processes, data_stats)
    except Exception as e:  # noqa: BLE001 (a prediction must never stop a run)
        say(f"estimate: unavailable ({type(e).__name__}: {e})")
        return None
    say(pre["line"])
    return pre


def _say_data(data: PreparedData) -> None:
    for note in data.notes:
        say(f"data: {note}")
    ex = data.stats["examples"]
    say(f"data: {ex['count']} examples, {data.stats['rows']} rows, tokens/example p50 {ex.get('p50')} p90 {ex.get('p90')} "
        f"max {ex.get('max')}, {data.stats['label_tokens']} label tokens, {data.stats['eval_examples']} eval examples")


def _restore(run_dir: Path, wrapper, optimizer, scheduler, scaler, rank: int, objective: Objective) -> LoopState:
    found = ckpt.latest_valid(run_dir / "checkpoints", warn=say)
    if found is None:
        say(f"--resume: no complete checkpoint in {run_dir / 'checkpoints'}; starting from the beginning")
        return LoopState()
    saved = ckpt.load_checkpoint(found, wrapper, optimizer, scheduler, rank=rank, scaler=scaler)
    objective.load_state_dict(saved.get("objective", {}))
    say(f"resumed from {found} (step {saved['step']})")
    return LoopState(**{k: v for k, v in saved.items() if k in LoopState.__dataclass_fields__})


def fit(run: Run) -> tuple[float, dict]:
    """The loop, then the final evaluation; returns (final eval loss, final eval metrics)."""
    parts = run.parts
    try:
        run.state = train_loop(parts, run.cfg, run.state, run.total_steps)
        final_eval, _, final_metrics = evaluate_with_metrics(parts, run.cfg)
        if run.data.eval and parts.log is not None:
            parts.log.log({"step": run.state.step, "eval_loss": final_eval, **final_metrics})
            parts.trackers.log({"eval_loss": final_eval, **final_metrics}, run.state.step)
    finally:
        parts.progress.close()
        parts.trackers.close()
        if parts.log is not None:
            parts.log.close()
    return final_eval, final_metrics


def finish(run: Run, final_eval: float, final_metrics: dict) -> dict:
    """Gather the weights, write the result (adapter/ or model/), the objective's report sections and report.md."""
    cfg, acc, state, run_dir, wrapper = run.cfg, run.acc, run.state, run.run_dir, run.parts.model
    model = acc.unwrap_model(wrapper).model
    # A sharded model is gathered into full tensors first (a collective: every rank calls it).
    full_state, wrapper_state = None, None
    if fsdp.is_sharded(wrapper):
        wrapper_state = fsdp.full_model_state(acc.unwrap_model(wrapper))
        # The model's own keys only: the wrapper's (PPO's value head) go to the objective's result_tensors.
        full_state = {k.removeprefix("model."): v for k, v in wrapper_state.items() if k.startswith("model.")}
    acc.wait_for_everyone()
    summary = {
        "name": run_dir.name, "method": cfg.method, "model": cfg.model.path,
        "adapter": cfg.adapter.type, "quantization": cfg.model.quantization, "precision": cfg.train.precision,
        "trainable_params": run.trainable, "total_params": run.total, "steps": state.step, "max_steps": run.total_steps,
        "tokens": state.tokens, "duration_s": round(time.time() - run.t_begin, 2), "peak_memory_bytes": _peak_memory(acc.device),
        "stop_reason": state.stop_reason, "final_loss": state.last_loss, "final_eval_loss": final_eval,
        "data": run.data.stats, "notes": run.data.notes, "run_dir": str(run_dir), "final_eval_metrics": final_metrics,
    }
    if run.estimate is not None:
        from ..estimate.check import after_run

        summary.update(after_run(run.estimate, acc.device))  # predicted_peak_bytes, measured_peak_bytes, estimate_error
    if acc.is_main_process:
        extra = run.objective.result_tensors(acc.unwrap_model(wrapper), wrapper_state)
        summary["output"] = str(save_result(cfg, model, run.tokenizer, run_dir, full_state, extra))
        summary["sections"] = run.objective.report_sections(run_dir)  # e.g. the preference curves and table
        write_report(run_dir, summary)
        say(f"done: {state.stop_reason}; final loss {state.last_loss:.4f}; result in {summary['output']}; report {run_dir / 'report.md'}")
    acc.wait_for_everyone()
    return summary
