"""The estimate as text for a person and as JSON with a stable schema:
{"peak_bytes", "breakdown": {term: {"bytes", "detail", "kind"}}, "fits": {device: {...}},
 "max_micro_batch", "step_seconds", "run_seconds", "epoch_seconds", "model", "plan", "flops"}."""

from __future__ import annotations

from dataclasses import asdict

SCHEMA_VERSION = 1


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 or n == 0 else f"{n / 2**20:.1f} MiB"


def _dur(s: float | None) -> str:
    if s is None:
        return "n/a"
    if s < 120:
        return f"{s:.2f} s"
    return f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def as_json(est) -> dict:
    plan = asdict(est.plan)
    plan["adapter"] = est.plan.adapter.model_dump(mode="json")
    shape = {k: v for k, v in asdict(est.shape).items() if k not in ("linears", "meta_model")}
    shape["total_params"] = est.shape.total_params
    return {
        "schema": SCHEMA_VERSION,
        "peak_bytes": est.peak_bytes,
        "cpu_offload_bytes": est.breakdown.cpu_bytes(),
        "breakdown": {t.name: {"bytes": t.bytes, "kind": t.kind, "detail": t.detail} for t in est.breakdown.terms},
        "fits": est.fits,
        "device": est.device.name,
        "max_micro_batch": est.max_micro_batch,
        "step_seconds": est.step_seconds,
        "run_seconds": est.run_seconds,
        "epoch_seconds": est.epoch_seconds,
        "phase_seconds": est.phases,
        "utilisation": est.utilisation,
        "flops": est.flops,
        "trainable_params": est.shape.total_params if est.plan.full else est.adapter_params,
        "model": shape,
        "plan": plan,
    }


def as_text(est) -> str:
    s, p = est.shape, est.plan
    how = "full fine-tuning" if p.full else f"{p.adapter.type} ({est.adapter_formula})"
    quant = f", base {p.quantization}" if p.quantization != "none" else ""
    rows = f"micro-batch {p.micro_batch_size} × {p.seq_len} tokens{' packed' if p.packing else ''}"
    if p.rl is not None:
        rows = _rl_rows(p)
    lines = [
        f"estimate: {s.name} ({s.total_params / 1e6:,.1f}M params: d {s.hidden}, {s.layers} layers, {s.heads} heads / "
        f"{s.kv_heads} kv, f {s.intermediate}{' SwiGLU' if s.gated_mlp else ''}, vocab {s.vocab:,}{', tied' if s.tied else ''})",
        f"run: {p.method}, {how}{quant}; weights {p.weight_dtype}, compute {p.precision}, {p.optimizer}; "
        f"{rows}{', gradient checkpointing' if p.checkpointing else ''}; {p.attn}",
        f"on: {est.device.name}" + (f" × {p.gpus} ({p.sharding}{', offload ' + p.offload if p.offload != 'none' else ''})" if p.gpus > 1 else ""),
        "",
        f"  {'term':<20}{'per device':>12}  how",
    ]
    for t in est.breakdown.terms:
        tag = {"transient": " (transient)", "cpu": " (CPU RAM)", "forward": " (forward only)",
               "backward": " (backward to step only)", "generation": " (generation only)"}.get(t.kind, "")
        lines.append(f"  {t.name:<20}{gib(t.bytes):>12}  {t.detail}{tag}")
    lines.append(f"  {'peak':<20}{gib(est.peak_bytes):>12}  all terms, forward-only vs backward-only whichever is larger (CPU: RSS; GPU: allocator peak + framework)")
    if est.breakdown.cpu_bytes():
        lines.append(f"  {'host RAM':<20}{gib(est.breakdown.cpu_bytes()):>12}  offloaded states")
    lines += ["", "  fits:"]
    for name, row in est.fits.items():
        if row["peak_bytes"] is None:
            lines.append(f"    n/a {name:<14} {gib(row['capacity_bytes']):>11}  ({row.get('why_not', 'not estimated')})")
            continue
        mark = "yes" if row["fits"] else "NO "
        lines.append(f"    {mark} {name:<14} {gib(row['capacity_bytes']):>11}  (needs {gib(row['peak_bytes'])})")
    lines.append(f"  largest micro-batch on {est.device.name}: {est.max_micro_batch}"
                 + (" (even 1 does not fit)" if est.max_micro_batch == 0 else ""))
    if est.phases is not None:
        return "\n".join(lines + _rl_time(est))
    fl = est.flops
    lines += ["", f"  time: {fl['total'] / 1e12:,.2f} TFLOP per micro-batch (forward {fl['forward'] / 1e12:,.2f}, "
                  f"backward {fl['backward'] / 1e12:,.2f}, recompute {fl['recompute'] / 1e12:,.2f}, reference {fl['reference'] / 1e12:,.2f}) "
                  f"at {est.utilisation:.0%} of {est.device.peak_flops(p.precision) / 1e12:,.2f} TFLOP/s",
              f"  step ({p.grad_accum_steps} micro-batches): {_dur(est.step_seconds)}; run ({p.max_steps} steps): {_dur(est.run_seconds)}; "
              f"epoch: {_dur(est.epoch_seconds)}" + ("" if p.dataset_rows else " (pass --rows N for an epoch)")]
    return "\n".join(lines)


def _rl_rows(p) -> str:
    r = p.rl
    layout = (f"{p.micro_batch_size} rows [prompt | {r.generations} completions] of ≤ {p.seq_len} tokens (prompt shared)"
              if r.share_prompts else f"{p.train_rows()} rows [prompt | completion] of ≤ {p.seq_len} tokens")
    return (f"{p.micro_batch_size} prompts × {r.generations} completions per micro-batch, prompt ~{r.prompt_tokens:.0f} "
            f"(longest {r.prompt_tokens_max}; from {r.prompt_source}), completion {r.completion_tokens} of max_new_tokens "
            f"{r.max_new_tokens}; training micro-batch {layout}")


def _rl_time(est) -> list[str]:
    """Online RL: where a step's time goes (seconds per optimizer step, one process)."""
    p, r, fl, ph = est.plan, est.plan.rl, est.flops, est.phases
    T = lambda k: f"{fl[k] / 1e12:,.3f}"  # noqa: E731
    reuse = f", once per {r.reuse} steps (reuse)" if r.reuse > 1 else ""
    bound = ("bandwidth/overhead-bound on the CPU: calibrated on a measured run" if est.device.kind == "cpu"
             else "HBM bandwidth + per-layer launch overhead: not calibrated")
    D = lambda s: _dur(s) if s >= 1 else f"{s * 1000:.0f} ms"  # noqa: E731
    ref = {0.0: "no reference pass", 1.0: "reference every rollout"}.get(r.reference_every, f"reference every {1 / r.reference_every:.0f} rollouts (logged kl)")
    return ["", f"  time per optimizer step at {est.utilisation:.0%} of {est.device.peak_flops(p.precision) / 1e12:,.3f} TFLOP/s "
                f"({p.micro_batch_size * p.grad_accum_steps} prompts, {p.micro_batch_size * p.grad_accum_steps * r.generations} completions):",
            f"    generation {D(ph['generation']):>10}  prefill {T('prefill')} + decode {T('decode')} TFLOP, {max(r.completion_tokens - 1, 0)} "
            f"decode steps each reading all weights ({bound}){reuse}",
            f"    scoring    {D(ph['scoring']):>10}  no-grad: policy {T('policy scoring')} ({'old log-probs' + (' and values' if r.value_head else '') if r.policy_pass else 'not needed'}), "
            f"reference {T('reference')} ({ref}), reward model {T('reward model')} TFLOP{reuse}",
            f"    training   {D(ph['training']):>10}  forward {T('forward')} + backward {T('backward')} + recompute {T('recompute')} TFLOP "
            f"over {p.grad_accum_steps} micro-batch(es)",
            f"  step: {_dur(est.step_seconds)}; run ({p.max_steps} steps): {_dur(est.run_seconds)}; epoch: {_dur(est.epoch_seconds)}"
            + ("" if p.dataset_rows else " (pass --rows N prompts for an epoch)")]
