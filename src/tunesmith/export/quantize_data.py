"""Calibration and held-out text for quantization, token chunks, and perplexity.

Calibration (GPTQ/AWQ statistics) and evaluation (perplexity) never share a document: the held-out
set is what was not used to calibrate, so a quantizer cannot look better by fitting its test text.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..errors import DataError, UserError


def read_texts(path: str | Path, what: str) -> list[str]:
    """Non-empty lines of a .txt file, or the `text` field of each row of a .jsonl file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"{what} {p} does not exist")
    texts = []
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            if p.suffix == ".jsonl":
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{p}:{n}: not valid JSON ({e.msg})") from None
                if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                    raise DataError(f"{p}:{n}: expected an object with a string `text` field")
                texts.append(row["text"])
            else:
                texts.append(line.rstrip("\n"))
    if not texts:
        raise UserError(f"{what} {p} has no text")
    return texts


def default_texts() -> tuple[list[str], list[str]]:
    """(calibration, held-out) from the built-in corpus: disjoint documents."""
    from ..models.corpus import builtin_corpus

    docs = list(dict.fromkeys(builtin_corpus(n_docs=3000, seed=8)))
    calib = docs[: len(docs) // 2]
    seen = set(calib)
    return calib, [d for d in docs[len(docs) // 2:] if d not in seen]


def chunks(tokenizer, texts: list[str], seq_len: int, limit: int) -> torch.Tensor:
    """(N, seq_len) windows of the texts joined by EOS, N <= limit; BOS starts each window if the tokenizer adds one."""
    if seq_len < 8:
        raise UserError(f"--seq-len {seq_len} is too short; use at least 8 tokens")
    sep = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    # BOS only when the tokenizer itself adds one: SmolLM2 names <|im_start|> its bos_token but never adds
    # it, and a window opening with a chat marker before raw text scores a model it was never trained as.
    probe = tokenizer("a")["input_ids"]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None and probe[:1] == [tokenizer.bos_token_id] else []
    stream: list[int] = []
    need = (seq_len - len(bos)) * limit
    for text in texts:
        stream += tokenizer(text, add_special_tokens=False)["input_ids"] + sep
        if len(stream) >= need:
            break
    width = seq_len - len(bos)
    rows = [bos + stream[i: i + width] for i in range(0, len(stream) - width + 1, width)][:limit]
    if not rows:
        raise UserError(f"the text gives {len(stream)} tokens, fewer than one window of --seq-len {seq_len}; "
                        "give more text or a shorter --seq-len")
    return torch.tensor(rows)


@torch.no_grad()
def perplexity(model, ids: torch.Tensor, batch_size: int = 8, desc: str = "perplexity") -> float:
    """exp(mean next-token NLL) over every position of every window (the first token is not predicted)."""
    total, count = 0.0, 0
    for i in tqdm(range(0, len(ids), batch_size), desc=desc, unit="batch", leave=False):
        batch = ids[i: i + batch_size].to(model.device)
        logits = model(input_ids=batch).logits.float()  # (B, T, V)
        nll = torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), batch[:, 1:].flatten(), reduction="sum")
        total += nll.item()
        count += batch[:, 1:].numel()
    return math.exp(total / count)
