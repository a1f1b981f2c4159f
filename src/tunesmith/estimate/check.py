"""Every training run checks the estimator: `before_model` at the start (after the config is valid,
before any weight is loaded) and `after_run` at the end give the predicted and the measured peak for
metrics.jsonl / report.md.

Measured peak: CPU, the process's RSS high-water mark (VmHWM, which includes the framework baseline
the estimate also counts); GPU, torch's allocator peak plus the estimate's framework term (the CUDA
context is outside the allocator). Wiring, in train/run.py (left to the merge, see the branch report):

    pre = before_model(cfg, acc.device, processes, data.stats)  # say(pre["line"])
    ...
    summary.update(after_run(pre, acc.device)) # predicted_peak_bytes, measured_peak_bytes, estimate_error, predicted_step_seconds
"""

from __future__ import annotations

import re
from pathlib import Path

from ..config import RunConfig
from .core import estimate_plan
from .devices import GIB, GPU_OVERHEAD, Device, cpu_threads, this_cpu
from .plan import plan_from_config
from .rl import RL_METHODS
from .shapes import model_shape


def _vm(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) * 1024


def _device(device) -> Device:
    if getattr(device, "type", "cpu") != "cuda":
        return this_cpu(threads=cpu_threads())
    import torch

    props = torch.cuda.get_device_properties(device)
    return Device(props.name, "gpu", props.total_memory, 0.0, 0.0)


def before_model(cfg: RunConfig, device, processes: int = 1, data_stats: dict | None = None) -> dict:
    """The estimate of this run on this machine, made before the model exists. `data_stats`: the prepared
    data's stats; online RL takes its prompt lengths from them (mean, longest) instead of reading the data again."""
    dev = _device(device)
    baseline = _vm("VmRSS") if dev.kind == "cpu" else GPU_OVERHEAD
    lengths = (data_stats or {}).get("examples", {})
    prompts = (lengths["mean"], lengths["max"]) if cfg.method in RL_METHODS and "max" in lengths else None
    plan = plan_from_config(cfg, target=dev.kind, gpus=processes, this_process=True, prompt_tokens=prompts)
    est = estimate_plan(model_shape(cfg.model.path, cfg.model.trust_remote_code), plan, dev, overhead=baseline)
    fits = "fits" if est.peak_bytes <= dev.capacity else "DOES NOT FIT"
    line = (f"estimate: peak {est.peak_bytes / GIB:.2f} GiB on {dev.name} ({dev.capacity / GIB:.0f} GiB: {fits}); "
            f"largest micro-batch {est.max_micro_batch}; ~{est.step_seconds:.2f} s/step")
    if est.phases is not None:
        line += " (" + ", ".join(f"{k} {v:.2f} s" for k, v in est.phases.items()) + ")"
    return {"predicted_peak_bytes": est.peak_bytes, "predicted_step_seconds": est.step_seconds, "line": line, "kind": dev.kind}


def after_run(pre: dict, device) -> dict:
    if pre["kind"] == "gpu":
        import torch

        measured = torch.cuda.max_memory_allocated(device) + GPU_OVERHEAD
    else:
        measured = _vm("VmHWM")
    return {"predicted_peak_bytes": pre["predicted_peak_bytes"], "measured_peak_bytes": measured,
            "estimate_error": (pre["predicted_peak_bytes"] - measured) / measured,
            "predicted_step_seconds": pre.get("predicted_step_seconds")}
