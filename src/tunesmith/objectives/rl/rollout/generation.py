"""Batched sampling of completions with the policy being trained, inside the training loop.

Prompts are left-padded into one batch and decoded by rollout/decode.py (KV cache on, whatever the
training config says about `use_cache`; each distinct prompt prefilled once for its group), in
eval mode (no dropout). Each row draws its
tokens with its own generator (Gumbel-max: argmax(logits / T + Gumbel noise), top-p applied first,
which samples exactly softmax(logits / T) restricted to the nucleus), seeded by (run seed, step,
the row's position in the step's global batch). So a completion depends on its prompt, the policy
and where it sits in the step, not on how the step is split into micro-batches and processes (one
process with accumulation samples what two processes sample), a resumed run samples exactly what
the uninterrupted run sampled (on the same kind of device: the noise is drawn where the logits
are, and CPU and CUDA generators give different streams), and the training RNG stream is untouched.
A row's generator draws one (V,) noise vector per token of its completion, so the tokens are the
ones transformers' `generate` with the same noise gave (it drew for ended rows too, which no other
row's stream sees). Only temperature and
top-p shape the distribution: the model's generation_config (repetition penalty, top-k) is not
applied, so the sampling distribution is the one the training forward's log-probs describe. A completion ends
after EOS (kept: it is the token that ends the turn and it is trained like any other) or after the
first stop string (cut there), or is truncated at max_new_tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .decode import decode


@dataclass
class Completion:
    ids: list[int]
    truncated: bool  # reached max_new_tokens without EOS or a stop string
    sampler_logps: list[float] | None = None  # log softmax(logits / T) of the sampled tokens (tests)


def step_seed(seed: int, step: int, row: int) -> int:
    """The generator seed of completion `row` (its position in the step's global batch) at `step`."""
    return (seed * 1_000_003 + step * 7919 + row * 104_729) % (2**63 - 1)


class _RowSampler:
    """A logits processor that turns greedy decoding into sampling with one generator per row:
    argmax(z + g), g ~ Gumbel(0, 1) i.i.d., is a sample of softmax(z) (the Gumbel-max trick), with
    z = logits / T and the tokens outside the top-p nucleus at -inf."""

    def __init__(self, seeds: list[int], temperature: float, top_p: float):
        from transformers import TopPLogitsWarper

        self.seeds, self.gens = seeds, None
        self.temperature = temperature
        self.top_p = TopPLogitsWarper(top_p) if top_p < 1.0 else None

    def __call__(self, input_ids: torch.Tensor | None, scores: torch.Tensor) -> torch.Tensor:
        """(B, V) logits of all rows -> (B, V) perturbed scores whose argmax is each row's sample."""
        return self.perturb(scores, range(len(self.seeds)))

    def perturb(self, scores: torch.Tensor, rows) -> torch.Tensor:
        """(R, V) logits of the rows `rows` (indices into `seeds`) -> their perturbed scores; only
        those rows' generators advance."""
        z = scores.float() / self.temperature
        if self.top_p is not None:
            z = self.top_p(None, z)
        if self.gens is None:  # on the logits' device: no (B, V) noise crosses from the CPU per token
            self.gens = [torch.Generator(device=z.device).manual_seed(s) for s in self.seeds]
            # One (B, V) fp64 noise buffer for the whole decode, filled and transformed in place: a fresh
            # one per token would be ~7 (B, V) fp64 allocations a step (on the CPU, fresh pages each).
            self.noise = torch.empty((len(self.seeds), z.shape[1]), dtype=torch.float64, device=z.device)
        rows = list(rows)
        u = self.noise[: len(rows)]
        for i, r in enumerate(rows):
            torch.rand(z.shape[1], generator=self.gens[r], dtype=torch.float64, device=z.device, out=u[i])
        gumbel = u.clamp_(min=1e-300).log_().neg_().log_().neg_()  # -log(-log u): (R, V) Gumbel(0, 1)
        return z.add_(gumbel.to(z.dtype)) if z is not scores else z + gumbel.to(z.dtype)

    def pick(self, scores: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return self.perturb(scores, rows.tolist()).argmax(-1)


def _cut_at_stop(ids: list[int], stop: list[str], tokenizer) -> int | None:
    """The shortest prefix length whose text contains a stop string, or None."""
    if not stop or not any(s in tokenizer.decode(ids) for s in stop):
        return None
    for k in range(1, len(ids) + 1):
        if any(s in tokenizer.decode(ids[:k]) for s in stop):
            return k
    return None


@torch.no_grad()
def sample(model, prompts: list[list[int]], *, tokenizer, eos_ids: list[int], pad_id: int, max_new_tokens: int,
           temperature: float, top_p: float, stop: list[str], seed: int, step: int = 0, first_row: int = 0,
           batch_size: int = 0, return_logps: bool = False) -> list[Completion]:
    """One completion per prompt (repeat a prompt for a group), in prompt order. Prompt i is row
    `first_row + i` of the step's global batch: its generator seed is step_seed(seed, step, that row)."""
    was_training = model.training
    model.eval()
    out: list[Completion] = []
    chunk = batch_size or len(prompts)
    try:
        for s in range(0, len(prompts), chunk):
            seeds = [step_seed(seed, step, first_row + i) for i in range(s, min(s + chunk, len(prompts)))]
            out += _sample_batch(model, prompts[s : s + chunk], tokenizer, eos_ids, pad_id, max_new_tokens,
                                 _RowSampler(seeds, temperature, top_p), stop, return_logps, temperature)
    finally:
        model.train(was_training)
    return out


def _sample_batch(model, prompts, tokenizer, eos_ids, pad_id, max_new_tokens, row_sampler, stop, return_logps, temperature):
    eos = set(eos_ids)

    def ended(row: int, toks: list[int]) -> bool:
        return toks[-1] in eos or (bool(stop) and _cut_at_stop(toks, stop, tokenizer) is not None)

    new, step_logits = decode(model, prompts, pad_id=pad_id, max_new_tokens=max_new_tokens, pick=row_sampler.pick,
                              ended=ended, keep_logits=return_logps)
    out = []
    for i, toks in enumerate(new):
        truncated = toks[-1] not in eos
        cut = _cut_at_stop(toks, stop, tokenizer) if truncated else None
        if cut is not None:
            toks, truncated = toks[:cut], False
        logps = None
        if return_logps:
            logps = [float(torch.log_softmax(step_logits[i][k] / temperature, -1)[t]) for k, t in enumerate(toks)]
        out.append(Completion(toks, truncated, logps))
    return out
