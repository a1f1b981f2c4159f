"""Optional experiment trackers (`train.report_to`): TensorBoard, Weights & Biases, MLflow.

metrics.jsonl and report.md are always written; these only mirror the numbers elsewhere. Each
backend's package is an extra, imported when named, so a missing one fails at start-up with the
pip command rather than after an hour of training.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tunesmith.errors import UserError


def _missing(name: str) -> UserError:
    return UserError(
        f"train.report_to lists '{name}' but the package is not installed; "
        f"pip install 'tunesmith[{name}]' or remove it from train.report_to"
    )


def _numeric(metrics: dict) -> dict[str, float]:
    """Only finite numbers are logged: trackers reject strings, and NaN breaks some dashboards."""
    out = {}
    for k, v in metrics.items():
        if hasattr(v, "item") and callable(v.item):  # 0-d tensors / numpy scalars
            v = v.item()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[k] = float(v)
    return out


def _flatten(config: dict, prefix: str = "") -> dict[str, Any]:
    """{'train': {'lr': 1e-4}} -> {'train.lr': 1e-4}; MLflow params are flat strings."""
    flat: dict[str, Any] = {}
    for k, v in config.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(_flatten(v, f"{key}."))
        else:
            flat[key] = v
    return flat


class _TensorBoard:
    def __init__(self, run_dir: Path, config: dict, run_name: str):
        try:
            import tensorboard  # noqa: F401  (torch's SummaryWriter imports it lazily)
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise _missing("tensorboard") from e
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def log(self, metrics: dict[str, float], step: int) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, global_step=step)

    def close(self) -> None:
        self.writer.close()


class _WandB:
    def __init__(self, run_dir: Path, config: dict, run_name: str):
        try:
            import wandb
        except ImportError as e:
            raise _missing("wandb") from e
        self.run = wandb.init(project="tunesmith", name=run_name, config=config, dir=str(run_dir))

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(metrics, step=step)

    def close(self) -> None:
        self.run.finish()


class _MLflow:
    def __init__(self, run_dir: Path, config: dict, run_name: str):
        try:
            import mlflow
        except ImportError as e:
            raise _missing("mlflow") from e
        self.mlflow = mlflow
        mlflow.start_run(run_name=run_name)
        # MLflow caps a param value at 500 characters; long lists (target_modules) are cut.
        mlflow.log_params({k: str(v)[:500] for k, v in _flatten(config).items()})

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.mlflow.log_metrics(metrics, step=step)

    def close(self) -> None:
        self.mlflow.end_run()


BACKENDS = {"tensorboard": _TensorBoard, "wandb": _WandB, "mlflow": _MLflow}


class Trackers:
    """Fan each logged record out to the trackers named in `train.report_to` (none by default)."""

    def __init__(self, names: list[str], run_dir: Path, config: dict, run_name: str):
        unknown = [n for n in names if n not in BACKENDS]
        if unknown:
            raise UserError(
                f"train.report_to has unknown tracker(s) {unknown}; choose from {sorted(BACKENDS)}"
            )
        self._backends: list[Any] = []
        try:
            for name in dict.fromkeys(names):  # de-duplicated, order kept
                self._backends.append(BACKENDS[name](Path(run_dir), config, run_name))
        except BaseException:
            self.close()  # a later backend failed: do not leave an earlier run open
            raise

    def log(self, metrics: dict, step: int) -> None:
        numbers = _numeric({k: v for k, v in metrics.items() if k != "step"})
        if numbers:
            for backend in self._backends:
                backend.log(numbers, step)

    def close(self) -> None:
        backends, self._backends = self._backends, []
        for backend in backends:
            backend.close()
