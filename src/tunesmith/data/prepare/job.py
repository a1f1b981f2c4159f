"""Config + command-line shortcuts -> a validated prepare job.

The prepare stage reads the same YAML as training: input from `data.*`, output to `output_dir`,
steps from `prepare:`. A config with a `model:` section is validated as a whole run config (so a
typo anywhere is caught before the data is touched) and its tokenizer is the target tokenizer;
without one, only `data`, `prepare`, `train` and `output_dir` may appear.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ...config import DataConfig, PrepareConfig, TrainConfig, merge_dicts, parse_overrides, read_yaml, validate_config
from ...errors import ConfigError

_ROW_KINDS = ("preference", "kto")  # formats prepare reads that the SFT `data.format` does not name


class PrepareOnlyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data: DataConfig = Field(default_factory=DataConfig)
    prepare: PrepareConfig = Field(default_factory=PrepareConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    output_dir: str = Field("", description="The prepared directory.")


@dataclass
class PrepareJob:
    data: DataConfig
    prepare: PrepareConfig
    output_dir: str
    tokenizer: str
    trust_remote_code: bool
    micro_batch_size: int
    fmt: str | None

    def run(self, overwrite: bool = False) -> dict[str, Any]:
        from .run import run_prepare

        tok = None
        if self.tokenizer:
            from ..encode import resolve_chat_template
            from ...models.loading import load_tokenizer

            tok = load_tokenizer(self.tokenizer, self.trust_remote_code)
            resolve_chat_template(tok, self.data.chat_template)
        return run_prepare(self.data, self.prepare, self.output_dir, tok, self.micro_batch_size, overwrite, fmt=self.fmt)


def load_prepare_job(config: str | Path | None, overrides: list[str] | None = None, *, input: list[str] | None = None,
                     format: str | None = None, out: str | Path | None = None, benchmarks: list[str] | None = None,
                     tokenizer: str | None = None, jsonl: bool = False) -> PrepareJob:
    overrides = list(overrides or [])
    if config is not None and "=" in str(config) and not Path(config).exists():
        overrides.insert(0, str(config))  # `tunesmith prepare --input f prepare.pii.action=drop`: no config file
        config = None
    raw = read_yaml(config) if config else {}
    shortcuts: dict[str, Any] = {}
    fmt = None
    if input:
        shortcuts.setdefault("data", {})["train"] = list(input)
    if format in _ROW_KINDS:
        fmt = format
    elif format:
        shortcuts.setdefault("data", {})["format"] = format
    if out is not None:
        shortcuts["output_dir"] = str(out)
    if benchmarks:
        shortcuts.setdefault("prepare", {}).setdefault("contamination", {})["benchmarks"] = list(benchmarks)
    if tokenizer:
        shortcuts.setdefault("prepare", {})["tokenizer"] = tokenizer
    if jsonl:
        shortcuts.setdefault("prepare", {})["jsonl"] = True
    raw = merge_dicts(merge_dicts(raw, shortcuts), parse_overrides(overrides))
    source = str(config) if config else "command line"
    if "model" in raw:
        from ...config import RunConfig

        cfg = validate_config(raw, RunConfig, source)
        model_path, trust = cfg.model.path, cfg.model.trust_remote_code
    else:
        cfg = validate_config(raw, PrepareOnlyConfig, source)
        model_path, trust = "", False
        if not cfg.output_dir:
            raise ConfigError(f"{source}: `output_dir` is not set; pass --out DIR (or set output_dir in the config)")
    return PrepareJob(cfg.data, cfg.prepare, cfg.output_dir, cfg.prepare.tokenizer or model_path, trust,
                      cfg.train.micro_batch_size, fmt)
