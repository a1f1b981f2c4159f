"""Batched sampling of completions with the policy being trained, inside the training loop.

Prompts are left-padded into one batch and sampled with transformers' `generate` (KV cache on,
whatever the training config says about `use_cache`), in eval mode (no dropout), under a seed
derived from (run seed, step, process), inside `fork_rng` so the training RNG stream is untouched:
a resumed run samples exactly the completions the uninterrupted run sampled. A completion ends
after EOS (kept: it is the token that ends the turn and it is trained like any other) or after the
first stop string (cut there), or is truncated at max_new_tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Completion:
    ids: list[int]
    truncated: bool  # reached max_new_tokens without EOS or a stop string
    sampler_logps: list[float] | None = None  # log softmax(logits / T) of the sampled tokens (tests)


def step_seed(seed: int, step: int, rank: int) -> int:
    return (seed * 1_000_003 + step * 7919 + rank * 104_729) % (2**63 - 1)


def _cut_at_stop(ids: list[int], stop: list[str], tokenizer) -> int | None:
    """The shortest prefix length whose text contains a stop string, or None."""
    if not stop or not any(s in tokenizer.decode(ids) for s in stop):
        return None
    for k in range(1, len(ids) + 1):
        if any(s in tokenizer.decode(ids[:k]) for s in stop):
            return k
    return None


def _left_pad(prompts: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), T), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, T - len(p):] = torch.tensor(p)
        mask[i, T - len(p):] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def sample(model, prompts: list[list[int]], *, tokenizer, eos_ids: list[int], pad_id: int, max_new_tokens: int,
           temperature: float, top_p: float, stop: list[str], seed: int, batch_size: int = 0,
           return_logps: bool = False) -> list[Completion]:
    """One completion per prompt (repeat a prompt for a group), in prompt order."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[Completion] = []
    step = batch_size or len(prompts)
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            for s in range(0, len(prompts), step):
                out += _sample_batch(model, prompts[s : s + step], tokenizer, eos_ids, pad_id, max_new_tokens,
                                     temperature, top_p, stop, return_logps, device)
    finally:
        model.train(was_training)
    return out


def _sample_batch(model, prompts, tokenizer, eos_ids, pad_id, max_new_tokens, temperature, top_p, stop, return_logps, device):
    ids, mask = _left_pad(prompts, pad_id, device)
    kw = dict(stop_strings=stop, tokenizer=tokenizer) if stop else {}
    gen = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=temperature, top_p=top_p,
                         top_k=0, max_new_tokens=max_new_tokens, eos_token_id=eos_ids, pad_token_id=pad_id,
                         use_cache=True, return_dict_in_generate=True, output_logits=return_logps, **kw)
    new = gen.sequences[:, ids.shape[1]:].tolist()
    out = []
    for i, toks in enumerate(new):
        end = next((k + 1 for k, t in enumerate(toks) if t in eos_ids), None)
        truncated = end is None
        cut = _cut_at_stop(toks[: end or len(toks)], stop, tokenizer)
        if cut is not None:
            end, truncated = cut, False
        toks = toks[: end or max_new_tokens]
        logps = None
        if return_logps:
            logps = [float(torch.log_softmax(gen.logits[k][i].float() / temperature, -1)[t]) for k, t in enumerate(toks)]
        out.append(Completion(toks, truncated, logps))
    return out
