"""Score a model on prompts with known answers: greedy generation, exact match, and answer-token loss.

Generation renders each prompt with the tokenizer's chat template and `add_generation_prompt=True`,
tokenizes it with `add_special_tokens=False` (the template already wrote the BOS), pads on the left
so every prompt ends where generation starts, and cuts each answer at the first EOS
(`<|im_end|>` for ChatML). The loss goes through the same data pipeline and loss as training, so
the number is the one `eval_loss` in metrics.jsonl would show for the same rows.
"""

from __future__ import annotations

import math

import torch

from .config import DataConfig


def chat_prompt(tokenizer, user: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                         add_generation_prompt=True)


@torch.no_grad()
def greedy_generate(model, tokenizer, texts: list[str], max_new_tokens: int = 32, add_special_tokens: bool = False,
                    batch_size: int = 64) -> list[str]:
    """The greedy continuation of each text, up to (not including) the first EOS."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    out: list[str] = []
    try:
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i : i + batch_size], add_special_tokens=add_special_tokens, padding=True,
                            return_tensors="pt").to(model.device)
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos,
                                 pad_token_id=pad if pad is not None else eos)
            for row in ids[:, enc["input_ids"].shape[1] :].tolist():  # (B, new)
                row = row[: row.index(eos)] if eos in row else row
                out.append(tokenizer.decode(row, skip_special_tokens=False))
    finally:
        tokenizer.padding_side = side
    return out


def greedy_answers(model, tokenizer, prompts: list[str], max_new_tokens: int = 32, batch_size: int = 64) -> list[str]:
    """The assistant's greedy reply to each user prompt."""
    texts = [chat_prompt(tokenizer, p) for p in prompts]
    return greedy_generate(model, tokenizer, texts, max_new_tokens, add_special_tokens=False, batch_size=batch_size)


def exact_match(predictions: list[str], targets: list[str]) -> float:
    """Fraction of predictions equal to their target once surrounding whitespace is stripped."""
    if len(predictions) != len(targets):
        raise ValueError(f"{len(predictions)} predictions for {len(targets)} targets")
    return sum(p.strip() == t.strip() for p, t in zip(predictions, targets)) / max(1, len(targets))


@torch.no_grad()
def answer_loss(model, tokenizer, data: DataConfig, batch_size: int = 8) -> float:
    """Mean cross-entropy per label token (assistant turns only, as in training) over `data.train`."""
    from .data.packing import collate, count_label_tokens
    from .data.pipeline import prepare_data
    from .train.forward import CausalLMLoss

    rows = prepare_data(data, tokenizer).train
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    loss = CausalLMLoss(model).eval()
    total, units = 0.0, 0
    for i in range(0, len(rows), batch_size):
        batch = {k: v.to(model.device) for k, v in collate(rows[i : i + batch_size], pad).items()}
        total += loss(**batch).item()
        units += count_label_tokens(batch)
    return total / units if units else math.nan
