"""`data:` — the training/eval files and how rows become token rows."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from .base import _Section


class DataConfig(_Section):
    train: list[str] = Field(default_factory=list, description="Training files: JSON, JSONL(.gz), CSV, Parquet, or a saved `datasets` directory.")
    eval: list[str] = Field(default_factory=list, description="Evaluation files; when empty, `eval_fraction` of train is held out.")
    eval_fraction: float = Field(0.0, ge=0.0, lt=1.0, description="Fraction of the training rows held out for eval loss when `data.eval` is empty.")
    format: Literal["auto", "alpaca", "sharegpt", "messages", "text"] = Field(
        "auto", description="Row format; auto detects it from the first row's fields."
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="Map the format's field names to the file's, e.g. {instruction: question, output: answer}.",
    )
    max_length: int = Field(2048, gt=8, description="Tokens per training row (packed or padded).")
    overlength: Literal["drop", "truncate", "error"] = Field(
        "drop", description="Chat/instruction examples longer than max_length: drop them (counted), cut them, or stop. Text is split into blocks instead."
    )
    packing: bool = Field(False, description="Pack several examples per row, padding-free, with attention that cannot cross examples.")
    on_error: Literal["raise", "skip"] = Field("raise", description="Bad rows stop the run with file:line (raise) or are skipped and counted (skip).")
    train_on_prompt: bool = Field(False, description="Also put labels on system/user turns (default: assistant turns only).")
    chat_template: str = Field(
        "auto", description="auto: the tokenizer's template, else ChatML; 'chatml'; or a Jinja template string."
    )

    @field_validator("train", "eval", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

