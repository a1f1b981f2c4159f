"""Batched generation for evaluation: chat template, left padding, greedy or seeded sampling, stops.

Each prompt is rendered with the tokenizer's chat template (`add_generation_prompt=True`) and
tokenized with `add_special_tokens=False` (the template already wrote the BOS, PITFALLS 5). Prompts
are padded on the LEFT so every row ends where generation starts (PITFALLS 7: right padding would
put pad tokens between a short prompt and its answer). Generation stops per row at EOS or at any of
`stop` strings (transformers' `StopStringCriteria` marks rows done one by one), and each answer is
cut at the first EOS / stop string, since other rows of the batch may run on.
Sampling draws from a generator seeded once per call, so the same seed gives the same answers.
"""

from __future__ import annotations

import torch


def chat_prompt(tokenizer, user: str, system: str | None = None) -> str:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def _cut(text: str, stop: list[str]) -> str:
    cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
    return text[:cut] if cut >= 0 else text


@torch.no_grad()
def generate(model, tokenizer, texts: list[str], max_new_tokens: int = 256, *, add_special_tokens: bool = False,
             batch_size: int = 16, do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0,
             seed: int = 0, stop: list[str] | None = None, progress=None) -> list[str]:
    """The continuation of each (already rendered) text, up to the first EOS or stop string."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    stop = [s for s in (stop or []) if s]
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    sample = dict(do_sample=True, temperature=temperature, top_p=top_p) if do_sample else dict(do_sample=False)
    if do_sample:
        torch.manual_seed(seed)
    out: list[str] = []
    try:
        for i in range(0, len(texts), batch_size):
            enc = tokenizer(texts[i : i + batch_size], add_special_tokens=add_special_tokens, padding=True,
                            return_tensors="pt").to(model.device)
            extra = dict(stop_strings=stop, tokenizer=tokenizer) if stop else {}
            ids = model.generate(**enc, max_new_tokens=max_new_tokens, eos_token_id=eos,
                                 pad_token_id=pad if pad is not None else eos, **sample, **extra)
            for row in ids[:, enc["input_ids"].shape[1] :].tolist():  # (B, new)
                row = row[: row.index(eos)] if eos in row else row
                out.append(_cut(tokenizer.decode(row, skip_special_tokens=False), stop))
            if progress is not None:
                progress.update(len(texts[i : i + batch_size]))
    finally:
        tokenizer.padding_side = side
    return out


def greedy_generate(model, tokenizer, texts: list[str], max_new_tokens: int = 32, add_special_tokens: bool = False,
                    batch_size: int = 64) -> list[str]:
    """The greedy continuation of each text, up to (not including) the first EOS."""
    return generate(model, tokenizer, texts, max_new_tokens, add_special_tokens=add_special_tokens, batch_size=batch_size)


def greedy_answers(model, tokenizer, prompts: list[str], max_new_tokens: int = 32, batch_size: int = 64) -> list[str]:
    """The assistant's greedy reply to each user prompt."""
    texts = [chat_prompt(tokenizer, p) for p in prompts]
    return generate(model, tokenizer, texts, max_new_tokens, batch_size=batch_size)
