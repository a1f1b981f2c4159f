"""Prompt rows for online RL: the user turn of any SFT format, or a `prompt` column, plus the
row's other columns (handed to the reward functions, e.g. `answer`).

A prompt is rendered with the chat template and the generation prompt (`<|im_start|>assistant`),
so the policy continues as the assistant. Prompts longer than `rl.max_prompt_length` are dropped
and counted; a bad row fails with its file:line (or is skipped with `data.on_error: skip`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ...data.encode import resolve_chat_template
from ...data.formats import RowError, apply_columns, to_example
from ...data.pipeline import PreparedData, length_stats
from ...data.readers import Row, read_rows
from ...errors import DataError

_FORMAT_KEYS = {"prompt", "messages", "conversations", "instruction", "input", "system"}


@dataclass
class PromptRow:
    ids: list[int]  # rendered prompt tokens, ending with the assistant generation prompt
    messages: list[dict]  # the conversation up to the last user turn
    columns: dict = field(default_factory=dict)  # the row's other fields (answer, ...)
    where: str = ""

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def text(self) -> str:
        return self.messages[-1]["content"]


def _messages(data: dict, where: str, fmt: str) -> list[dict]:
    prompt = data.get("prompt")
    if isinstance(prompt, str):
        if not prompt.strip():
            raise RowError(where, "empty 'prompt'", expected="non-empty text")
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, list):
        # A conversation ending in the user turn to answer (few-shot turns before it allowed); the
        # messages format wants a final assistant turn, so a placeholder is added and removed below.
        data = {"messages": [*prompt, {"role": "assistant", "content": "-"}]}
    elif prompt is not None:
        raise RowError(where, "'prompt' is neither text nor a message list")
    if fmt == "auto":
        fmt = "messages" if "messages" in data else "sharegpt" if "conversations" in data else "alpaca"
    if fmt == "alpaca" and "output" not in data:
        data = {**data, "output": "-"}  # a prompt-only alpaca row: the output is not used
    msgs = to_example(Row(data, where), fmt).messages
    while msgs and msgs[-1]["role"] == "assistant":
        msgs = msgs[:-1]
    if not msgs or msgs[-1]["role"] != "user":
        raise RowError(where, "no user turn to answer", expected="a prompt, or a conversation ending in a user turn")
    return msgs


def prompt_ids(tokenizer, messages: list[dict]) -> list[int]:
    """The conversation rendered with the assistant generation prompt, tokenized the way training
    tokenizes (the template brings its own special tokens)."""
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def read_prompts(cfg, tokenizer) -> tuple[list[PromptRow], Counter, list[str]]:
    dc = cfg.data
    resolve_chat_template(tokenizer, dc.chat_template)
    out, dropped, notes = [], Counter(), []
    for path in dc.train:
        n = 0
        for row in read_rows(path):
            n += 1
            data = apply_columns(row, dc.columns, strict=False)
            try:
                msgs = _messages(data, row.where, dc.format)
            except RowError as e:
                if dc.on_error == "raise":
                    raise
                dropped[e.reason] += 1
                continue
            ids = prompt_ids(tokenizer, msgs)
            if len(ids) > cfg.rl.max_prompt_length:
                dropped[f"prompt longer than rl.max_prompt_length {cfg.rl.max_prompt_length}"] += 1
                continue
            columns = {k: v for k, v in data.items() if k not in _FORMAT_KEYS}
            out.append(PromptRow(ids, msgs, columns, row.where))
        if n == 0:
            raise DataError(f"{path}: no rows found; is it the right file?")
    if not out:
        raise DataError(f"no usable prompt in {dc.train}; dropped: {dict(dropped)}")
    for reason, k in dropped.items():
        notes.append(f"dropped {k} prompts: {reason}")
    return out, dropped, notes


def prepare_prompts(cfg, tokenizer) -> PreparedData:
    rows, dropped, notes = read_prompts(cfg, tokenizer)
    stats = {"examples": length_stats([len(r) for r in rows]), "rows": len(rows), "label_tokens": 0,
             "eval_examples": 0, "dropped": dict(dropped)}
    return PreparedData(rows, [], stats, notes)
