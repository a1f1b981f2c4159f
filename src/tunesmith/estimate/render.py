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
    lines = [
        f"estimate: {s.name} ({s.total_params / 1e6:,.1f}M params: d {s.hidden}, {s.layers} layers, {s.heads} heads / "
        f"{s.kv_heads} kv, f {s.intermediate}{' SwiGLU' if s.gated_mlp else ''}, vocab {s.vocab:,}{', tied' if s.tied else ''})",
        f"run: {p.method}, {how}{quant}; weights {p.weight_dtype}, compute {p.precision}, {p.optimizer}; "
        f"micro-batch {p.micro_batch_size} × {p.seq_len} tokens{' packed' if p.packing else ''}"
        f"{', gradient checkpointing' if p.checkpointing else ''}; {p.attn}",
        f"on: {est.device.name}" + (f" × {p.gpus} ({p.sharding}{', offload ' + p.offload if p.offload != 'none' else ''})" if p.gpus > 1 else ""),
        "",
        f"  {'term':<20}{'per device':>12}  how",
    ]
    for t in est.breakdown.terms:
        tag = {"transient": " (transient)", "cpu": " (CPU RAM)", "forward": " (forward only)",
               "backward": " (backward to step only)"}.get(t.kind, "")
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
    fl = est.flops
    lines += ["", f"  time: {fl['total'] / 1e12:,.2f} TFLOP per micro-batch (forward {fl['forward'] / 1e12:,.2f}, "
                  f"backward {fl['backward'] / 1e12:,.2f}, recompute {fl['recompute'] / 1e12:,.2f}, reference {fl['reference'] / 1e12:,.2f}) "
                  f"at {est.utilisation:.0%} of {est.device.peak_flops(p.precision) / 1e12:,.2f} TFLOP/s",
              f"  step ({p.grad_accum_steps} micro-batches): {_dur(est.step_seconds)}; run ({p.max_steps} steps): {_dur(est.run_seconds)}; "
              f"epoch: {_dur(est.epoch_seconds)}" + ("" if p.dataset_rows else " (pass --rows N for an epoch)")]
    return "\n".join(lines)
