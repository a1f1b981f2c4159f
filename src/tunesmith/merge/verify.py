"""Checks shared by merge and quantize: logits on fixed probe inputs and exact state-dict equality."""

from __future__ import annotations

import torch

from .io import VerificationError

PROBES = ("The quick brown fox jumps over the lazy dog.",
          "Anna walks to the market in the morning and finds a red apple.")


def probe_ids(tokenizer) -> torch.Tensor:
    """(B, T) token ids of a plain sentence and a chat-rendered one, cut to a common length."""
    texts = list(PROBES)
    if tokenizer.chat_template:
        texts[1] = tokenizer.apply_chat_template([{"role": "user", "content": PROBES[1]}], tokenize=False,
                                                 add_generation_prompt=True)
    rows = [tokenizer(t, add_special_tokens=i == 0)["input_ids"] for i, t in enumerate(texts)]
    n = min(len(r) for r in rows)
    return torch.tensor([r[:n] for r in rows])


@torch.no_grad()
def logits_on_probes(model, ids: torch.Tensor) -> torch.Tensor:
    return model(input_ids=ids.to(model.device)).logits.float().cpu()  # (B, T, V)


def max_logit_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def compare_state_dicts(got: dict, want: dict, what: str) -> None:
    """Same keys, same shapes, identical values (tied weights may appear under one name only)."""
    missing, extra = set(want) - set(got), set(got) - set(want)
    if missing or extra:
        raise VerificationError(f"{what}: tensor names differ (missing {sorted(missing)[:5]}, extra {sorted(extra)[:5]})")
    for k, v in want.items():
        if got[k].shape != v.shape or not torch.equal(got[k].to(v.dtype), v):
            raise VerificationError(f"{what}: tensor {k} differs from what was computed")
