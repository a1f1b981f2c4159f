"""The module online RL trains: token log-probs of completions (and a value head for PPO).

The training forward runs the decoder over the padded prompt + completion rows and sends only
the hidden rows that predict a completion token through the vocabulary projection, chunked
(`fused_linear_token_logps`): no (T, V) logits are kept. Log-probs are those of the sampling
distribution, logits / temperature (the temperature folds into the hidden rows: (h/T) W^T = z/T).
`score_tokens` is the no-grad version used by the rollout, which also returns the entropy.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ...train import losses
from ...train.forward import base_causal_lm, packed_decoder_call
from ..logps import fused_linear_token_logps


def _hidden(model, input_ids: Tensor, position_ids: Tensor, src: Tensor, attention_mask: Tensor | None = None,
            segment_blocks: Tensor | None = None) -> Tensor:
    decoder = base_causal_lm(model).get_decoder()
    hidden = packed_decoder_call(decoder, input_ids, position_ids, attention_mask, blocks=segment_blocks)
    return hidden.flatten(0, 1).index_select(0, src)  # (N, H)


def _head_logps(model, hidden: Tensor, tgt: Tensor, temperature: float, chunk_size: int,
                entropy_out: Tensor | None = None) -> Tensor:
    head = base_causal_lm(model).get_output_embeddings()
    if type(head) is nn.Linear:
        bias = head.bias / temperature if head.bias is not None else None
        return fused_linear_token_logps(hidden / temperature, head.weight, tgt, bias, chunk_size, entropy_out)
    # A LoRA-wrapped head: its own forward over the selected rows only, (N, V) at once.
    logp = (head(hidden).float() / temperature).log_softmax(-1)
    if entropy_out is not None:
        entropy_out.copy_(-(logp.detach().exp() * logp.detach()).sum(-1))
    return logp.gather(1, tgt[:, None]).squeeze(1)


class CompletionLogps(nn.Module):
    """(input_ids, position_ids, src, tgt) -> (N,) log-probs of the completion tokens; with a value
    head, also (N,) values of the states before each completion token (PPO). `entropy=True` adds the
    (N,) entropies of the sampling distribution (no gradient), computed from the same chunked logits.
    `attention_mask`: the (rows, 1, T, T) mask of shared-prompt blocks (batch.py), when there are any, and
    `segment_blocks` the same layout for the CPU's mask-free attention."""

    def __init__(self, model: nn.Module, chunk_size: int, temperature: float, value_head: bool = False):
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size
        self.temperature = temperature
        if value_head:
            hidden = base_causal_lm(model).config.hidden_size
            self.value_head = nn.Linear(hidden, 1)
            nn.init.zeros_(self.value_head.weight)
            nn.init.zeros_(self.value_head.bias)
        else:
            self.value_head = None

    def forward(self, input_ids: Tensor, position_ids: Tensor, src: Tensor, tgt: Tensor, entropy: bool = False,
                attention_mask: Tensor | None = None, segment_blocks: Tensor | None = None):
        hidden = _hidden(self.model, input_ids, position_ids, src, attention_mask, segment_blocks)
        ent = torch.empty(len(tgt), dtype=torch.float32, device=hidden.device) if entropy else None
        logps = _head_logps(self.model, hidden, tgt, self.temperature, self.chunk_size, ent)
        out = (logps,) if self.value_head is None else (logps, self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float())
        if entropy:
            out = (*out, ent)
        return out[0] if len(out) == 1 else out


@torch.no_grad()
def score_tokens(wrapper: CompletionLogps, batch: dict) -> tuple[Tensor, Tensor, Tensor | None]:
    """No-grad (N,) log-probs, (N,) entropies of the sampling distribution and (N,) values (or None)."""
    model, T = wrapper.model, wrapper.temperature
    hidden = _hidden(model, batch["input_ids"], batch["position_ids"], batch["src"], batch.get("attention_mask"),
                     batch.get("segment_blocks"))
    head = base_causal_lm(model).get_output_embeddings()
    tgt = batch["tgt"]
    rows = max(1, min(wrapper.chunk_size, losses.CHUNK_ELEMENTS // head.weight.shape[0]))
    logps, ent = torch.empty(len(tgt), device=hidden.device), torch.empty(len(tgt), device=hidden.device)
    for s in range(0, len(tgt), rows):
        z = head(hidden[s : s + rows]).float() / T
        lse = torch.logsumexp(z, dim=-1)
        logps[s : s + rows] = z.gather(1, tgt[s : s + rows, None]).squeeze(1) - lse
        p = torch.softmax(z, dim=-1)
        ent[s : s + rows] = lse - (p * z).sum(-1)
    values = None
    if wrapper.value_head is not None:
        values = wrapper.value_head(hidden.to(wrapper.value_head.weight.dtype)).squeeze(-1).float()
    return logps, ent, values
