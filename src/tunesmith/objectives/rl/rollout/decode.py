"""The decode loop of the rollout: one prefill per distinct prompt, then one token per row per step.

Why not transformers' `generate`: for the short completions of RL it spends a large part of each
step outside the model (logits processors and stopping criteria called on every row, input
preparation, a cache that grows by `torch.cat`: a fresh (B, H, T, D) allocation per layer and token,
which with glibc's pinned mmap threshold, train/host_memory.py, is a fresh mapping faulted in
page by page). Here:

- the G copies of a prompt in a group are prefilled once and the prompt's K/V rows are copied to
  its G rows (the prompt part of the prefill costs 1/G);
- the cache is preallocated to prompt + max_new_tokens positions (`_PreallocatedLayer`): each step
  writes one position in place, and the model sees a view of the filled part, so the attention
  reads what transformers' own cache would hold;
- a row is sampled only while it is running; the loop stops when every row has ended (EOS, a stop
  string or max_new_tokens).

The model is called exactly as `generate` calls it (left padding, the attention mask, position ids
= cumulative sum of the mask - 1), so the logits are those of a full forward over the same tokens
(tests/unit/test_rl_decode.py: the cached decode's logits against a full forward, and the tokens
against `generate`'s).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer


class _PreallocatedLayer(DynamicLayer):
    """A DynamicLayer whose keys / values are views of the first `n` positions of buffers sized for
    the whole rollout: `update` writes the new positions in place instead of concatenating."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, capacity: int):
        super().__init__()
        B, H, n, _ = keys.shape
        self.kbuf = keys.new_empty((B, H, capacity, keys.shape[-1]))
        self.vbuf = values.new_empty((B, H, capacity, values.shape[-1]))
        self.kbuf[:, :, :n], self.vbuf[:, :, :n] = keys, values
        self.n, self.device, self.is_initialized = n, keys.device, True
        self.keys, self.values = self.kbuf[:, :, :n], self.vbuf[:, :, :n]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        m = key_states.shape[-2]
        if self.n + m > self.kbuf.shape[2]:
            raise RuntimeError(f"decode cache full: {self.n} + {m} > {self.kbuf.shape[2]} positions")
        self.kbuf[:, :, self.n : self.n + m] = key_states
        self.vbuf[:, :, self.n : self.n + m] = value_states
        self.n += m
        self.keys, self.values = self.kbuf[:, :, : self.n], self.vbuf[:, :, : self.n]
        return self.keys, self.values


def _expand_cache(cache: DynamicCache, rows: torch.Tensor, capacity: int) -> None:
    """Prefilled cache of the distinct prompts -> one row per completion (`rows`: its prompt's index),
    preallocated to `capacity` positions. Other layer kinds (sliding windows) are only indexed."""
    for i, layer in enumerate(cache.layers):
        if type(layer) is DynamicLayer and layer.is_initialized:
            cache.layers[i] = _PreallocatedLayer(layer.keys.index_select(0, rows), layer.values.index_select(0, rows), capacity)
        else:
            layer.batch_select_indices(rows)


def _forward_kwargs(model, cache: DynamicCache) -> tuple[dict, dict]:
    """(kwargs of every call, extra kwargs of the prefill). transformers 5.x renamed the forward's
    `past_key_values` to `cache` (the old name warns); `logits_to_keep=1` spares the prefill the
    logits of every prompt position, where the model's forward knows it."""
    from ....train.forward import base_causal_lm

    params = inspect.signature(base_causal_lm(model).forward).parameters
    every = {"cache" if "cache" in params else "past_key_values": cache, "use_cache": True}
    return every, ({"logits_to_keep": 1} if "logits_to_keep" in params else {})


def _distinct(prompts: list[list[int]]) -> tuple[list[list[int]], list[int]]:
    """The distinct prompts in first-seen order and, per row, the index of its prompt among them."""
    index: dict[tuple[int, ...], int] = {}
    of = [index.setdefault(tuple(p), len(index)) for p in prompts]
    return [list(k) for k in index], of


def left_pad(prompts: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    T = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), T), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, T - len(p):] = torch.tensor(p)
        mask[i, T - len(p):] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def decode(model, prompts: list[list[int]], *, pad_id: int, max_new_tokens: int,
           pick: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
           ended: Callable[[int, list[int]], bool], keep_logits: bool = False) -> tuple[list[list[int]], list[list[torch.Tensor]]]:
    """Decode one completion per prompt. `pick(logits (R, V) fp32, rows (R,))` returns the (R,) next
    tokens of the running rows `rows`; `ended(row, tokens)` says whether that row's completion is
    finished after its latest token. Returns each row's tokens and, with `keep_logits`, the (V,)
    logits each token was picked from (the sampler log-probs the tests compare), else empty lists."""
    device = next(model.parameters()).device
    distinct, of = _distinct(prompts)
    ids, mask = left_pad(distinct, pad_id, device)
    cache = DynamicCache()
    kw, prefill_kw = _forward_kwargs(model, cache)  # the cache is filled in place: the output's is not needed
    pos = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)  # as generate: padding gets position 1
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, **prefill_kw, **kw)
    rows = torch.tensor(of, device=device)
    B, P = len(prompts), ids.shape[1]
    _expand_cache(cache, rows, P + max_new_tokens)
    full_mask = torch.zeros((B, P + max_new_tokens), dtype=mask.dtype, device=device)
    full_mask[:, :P] = mask.index_select(0, rows)
    next_pos = pos[:, -1:].index_select(0, rows) + 1  # (B, 1)
    logits = out.logits[:, -1].float().index_select(0, rows)  # (B, V)
    tokens: list[list[int]] = [[] for _ in range(B)]
    step_logits: list[list[torch.Tensor]] = [[] for _ in range(B)]
    running = list(range(B))
    feed = torch.full((B, 1), pad_id, dtype=torch.long, device=device)
    for k in range(max_new_tokens):
        run_t = torch.tensor(running, device=device)
        z = logits.index_select(0, run_t) if len(running) < B else logits
        chosen = pick(z, run_t).tolist()
        still = []
        for j, (r, t) in enumerate(zip(running, chosen)):
            tokens[r].append(t)
            if keep_logits:
                step_logits[r].append(z[j])
            if not ended(r, tokens[r]):
                still.append(r)
        running = still
        if not running or k == max_new_tokens - 1:
            break
        # Every row is fed (ended ones a pad token) so the batch keeps its shape; only running rows are read.
        feed.fill_(pad_id)
        feed[torch.tensor(running, device=device), 0] = torch.tensor([tokens[r][-1] for r in running], device=device)
        full_mask[:, P + k] = 1
        out = model(input_ids=feed, attention_mask=full_mask[:, : P + k + 1], position_ids=next_pos, **kw)
        next_pos = next_pos + 1
        logits = out.logits[:, -1].float()
    return tokens, step_logits
