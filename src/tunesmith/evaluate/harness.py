"""lm-evaluation-harness (EleutherAI), when installed (`pip install tunesmith[harness]`): run its tasks
on the same model/adapter and fold its numbers into the report.

The model goes in as lm-eval's `hf` model with `peft=` for an adapter, exactly as `lm_eval --model hf
--model_args pretrained=...,peft=...` would load it, so the numbers are the harness's own. Its stock
tasks download their data from the hub; on a machine without network use task YAML files of your own
(`--harness-include DIR`, lm-eval's `include_path`) whose `dataset_path: json` points at local files.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import UserError


def run_harness(tasks: list[str], model_path: str, adapter: str | None = None, include: str | None = None,
                limit: int = 0, batch_size: int = 8, device: str = "cpu", dtype: str = "float32") -> dict:
    """{task: {metric: value}} from lm_eval.simple_evaluate, plus its version."""
    try:
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError:
        raise UserError("--harness needs lm-evaluation-harness: pip install 'tunesmith[harness]' (lm_eval==0.4.13)") from None
    args = {"pretrained": model_path, "dtype": dtype, "trust_remote_code": False}
    if adapter:
        args["peft"] = adapter
    manager = TaskManager(include_path=[str(Path(include))] if include else None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        raise UserError(f"--harness: lm-eval knows no task {unknown}; check the names (lm_eval ls tasks) or --harness-include")
    try:
        out = lm_eval.simple_evaluate(model="hf", model_args=args, tasks=tasks, batch_size=batch_size, device=device,
                                      limit=limit or None, task_manager=manager, log_samples=False)
    except (ConnectionError, OSError) as e:
        raise UserError(f"--harness: lm-eval could not load a task's data ({e}); offline, point a task YAML at local files") from None
    results: dict[str, dict[str, float]] = {}
    for task, metrics in (out or {}).get("results", {}).items():
        clean = {}
        for key, value in metrics.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and "stderr" not in key and key != "sample_len":
                clean[key.split(",")[0]] = float(value)
        results[f"harness:{task}"] = clean
    return {"version": lm_eval.__version__, "scores": results}
