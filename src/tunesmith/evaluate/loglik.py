"""Log-likelihood scoring: perplexity of a dataset, and of each choice of a multiple-choice question.

Perplexity goes through the same data pipeline and loss as training (`prepare_data` + `CausalLMLoss`),
so chat data is scored on assistant tokens only and the number is the `eval_loss` that metrics.jsonl
would show for the same rows; perplexity = exp(mean loss per label token).

A choice is scored as sum log p(continuation tokens | context), as lm-evaluation-harness does. The
context's trailing whitespace moves to the continuation; the context is tokenized alone and the
continuation is the rest of the tokenized whole (so every choice of a question shares the identical
context ids, PITFALLS 6); a BOS is prepended when the tokenizer has one (lm-eval's add_bos_token).
Rows are padded on the right, which leaves a causal model's logits at real positions unchanged, so
no attention mask is passed (sdpa keeps its fused causal kernel), and only the positions that
predict a continuation token go through the LM head.
"""

from __future__ import annotations

import math

import torch

from ..config import DataConfig


@torch.no_grad()
def answer_loss(model, tokenizer, data: DataConfig, batch_size: int = 8) -> float:
    """Mean cross-entropy per label token (assistant turns only, as in training) over `data.train`."""
    total, units = loss_and_tokens(model, tokenizer, data, batch_size)
    return total / units if units else math.nan


@torch.no_grad()
def loss_and_tokens(model, tokenizer, data: DataConfig, batch_size: int = 8) -> tuple[float, int]:
    """(summed cross-entropy, label tokens) over the rows of `data.train`."""
    from ..data.packing import collate, count_label_tokens
    from ..data.pipeline import prepare_data
    from ..train.forward import CausalLMLoss

    from ..console import progress_bar

    rows = prepare_data(data, tokenizer).train
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    loss = CausalLMLoss(model).eval()
    total, units = 0.0, 0
    for i in progress_bar(range(0, len(rows), batch_size), desc="perplexity", unit="batch", leave=False, disable=len(rows) <= batch_size):
        batch = {k: v.to(model.device) for k, v in collate(rows[i : i + batch_size], pad).items()}
        total += loss(**batch).item()
        units += count_label_tokens(batch)
    return total, units


def _logits_at(model, ids: torch.Tensor, mask: torch.Tensor | None, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """Logits at the (row, col) positions only: the LM head runs on those hidden states alone (the
    context's positions never reach the vocabulary projection), unless the head is not a plain
    linear layer (LoRA on lm_head, soft-capping), where the full logits are taken."""
    from ..train.forward import CausalLMLoss, base_causal_lm

    parts = CausalLMLoss(model)._fusable()
    if parts is None or getattr(base_causal_lm(model).config, "final_logit_softcapping", None):
        logits = model(input_ids=ids, attention_mask=mask).logits  # (B, P + T, V): P virtual tokens (prompt tuning)
        return logits[:, logits.shape[1] - ids.shape[1]:][rows, cols]  # (N, V)
    decoder, head = parts
    hidden = decoder(input_ids=ids, attention_mask=mask).last_hidden_state  # (B, T, H)
    return head(hidden[rows, cols])  # (N, V)


def split_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of context (with BOS) and of continuation: the context tokenized once, the
    continuation as enc(context + continuation)[len(enc(context)):] (PITFALLS 6; lm-eval does the same)."""
    stripped = context.rstrip()
    continuation = context[len(stripped):] + continuation
    ctx = tokenizer(stripped, add_special_tokens=False)["input_ids"]
    cont = tokenizer(stripped + continuation, add_special_tokens=False)["input_ids"][len(ctx):]
    bos = tokenizer.bos_token_id
    if bos is not None and tokenizer("a")["input_ids"][:1] == [bos]:  # only where the tokenizer itself adds one
        ctx = [bos] + ctx
    return ctx, cont


@torch.no_grad()
def continuation_logprobs(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int = 16,
                          max_length: int = 4096, progress=None) -> list[float]:
    """sum_t log p(cont_t | context, cont_<t) for each (context, continuation) pair."""
    # The model reads (context + continuation)[:-1]: the last token is only predicted. Requests whose
    # inputs are identical (one-token choices " A", " B", ... after the same question) share one row.
    seqs, inputs = [], {}
    for ctx, cont in (split_pair(tokenizer, c, x) for c, x in pairs):
        s = (ctx + cont)[-(max_length + 1):]
        seqs.append((s, min(len(cont), len(s) - 1)))
        inputs.setdefault(tuple(s[:-1]), len(inputs))
    by_input: list[list[int]] = [[] for _ in inputs]
    for i, (s, _) in enumerate(seqs):
        by_input[inputs[tuple(s[:-1])]].append(i)
    # Longest first, so each batch holds rows of similar length (little padding) and a batch that
    # does not fit in memory fails at once; the scores go back in the callers' order.
    rows_in = sorted(inputs, key=len, reverse=True)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    out = [0.0] * len(seqs)
    for b in range(0, len(rows_in), batch_size):
        batch = rows_in[b : b + batch_size]
        ids = torch.full((len(batch), len(batch[0])), pad, dtype=torch.long)
        rows, cols, targets, owner = [], [], [], []
        for r, inp in enumerate(batch):
            ids[r, : len(inp)] = torch.tensor(inp)
            for i in by_input[inputs[inp]]:
                s, n = seqs[i]
                rows += [r] * n
                cols += range(len(inp) - n, len(inp))  # input position t predicts token t+1
                targets += s[len(s) - n :]
                owner += [i] * n
        # Right padding needs no attention mask in a causal model: no real position attends to a
        # later pad. Without a mask sdpa keeps its fused causal kernel.
        logits = _logits_at(model, ids.to(model.device), None, torch.tensor(rows), torch.tensor(cols))  # (N, V)
        token_lp = torch.log_softmax(logits.float(), dim=-1).gather(-1, torch.tensor(targets, device=logits.device)[:, None])[:, 0]
        for i, lp in zip(owner, token_lp.tolist()):
            out[i] += lp
        if progress is not None:
            progress.update(sum(len(by_input[inputs[inp]]) for inp in batch))
    return out
