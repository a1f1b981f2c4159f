"""The module the loop trains: a causal LM whose forward returns summed token losses.

Why a wrapper module rather than calling `model(...).logits`: the lm_head and the cross-entropy
are fused and chunked (train/losses.py), so the (B, T, V) logits never exist at once, and the
wrapper is what DDP/FSDP wrap, so their forward hooks see the whole computation. The decoder is
always called with `attention_mask=None`, `use_cache=False` and explicit `position_ids`: that is
how transformers recognises packed rows and keeps examples from attending to each other (a cache
object would switch that detection off). On the CPU under sdpa, packed rows skip the mask entirely:
each example is its own causal attention call (`packed_decoder_call`, train/segment_attention.py).
"""

from __future__ import annotations

import torch
from torch import nn

from .losses import IGNORE_INDEX, cross_entropy_sum, fused_linear_cross_entropy
from .packed_mask import grouped_kv_attention, shared_mask_for
from .segment_attention import segment_attention, segment_layout_for


def base_causal_lm(model):
    """The transformers model under a PEFT wrapper (LoRA layers are injected in place)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _is_prompt_learning(model) -> bool:
    return getattr(getattr(model, "peft_config", {}).get("default", None), "is_prompt_learning", False)


class CausalLMLoss(nn.Module):
    def __init__(self, model: nn.Module, chunk_size: int = 2048):
        super().__init__()
        self.model = model
        self.chunk_size = chunk_size

    def _fusable(self) -> tuple[nn.Module, nn.Linear] | None:
        base = base_causal_lm(self.model)
        head = base.get_output_embeddings()
        cfg = base.config
        plain_head = type(head) is nn.Linear  # a LoRA-wrapped or modules_to_save head takes the plain path
        if self.chunk_size <= 0 or not plain_head or _is_prompt_learning(self.model) or getattr(cfg, "logit_scale", None):
            return None
        return base.get_decoder(), head

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Sum over labelled positions of -log p(label[t+1] | tokens[..t]); the caller normalises."""
        targets = labels[:, 1:]  # (B, T-1): position t predicts token t+1
        parts = self._fusable()
        if parts is None:
            # Prompt-learning PEFT models number positions themselves (virtual tokens first); packing is refused
            # for them in config validation, so the rows here are single sequences and nothing is lost.
            pos = None if _is_prompt_learning(self.model) else position_ids
            layout = segment_layout_for(base_causal_lm(self.model).get_decoder(), pos)
            with segment_attention(base_causal_lm(self.model).get_decoder(), layout):
                logits = self.model(input_ids=input_ids, position_ids=pos, use_cache=False,
                                    **layout_kwargs(layout)).logits  # (B, P+T, V)
            # Prompt/P-tuning prepend P virtual tokens: their outputs predict nothing and are dropped here.
            logits = logits[:, logits.shape[1] - input_ids.shape[1]:]  # (B, T, V)
            return cross_entropy_sum(logits[:, :-1].flatten(0, 1), targets.flatten())
        decoder, head = parts
        hidden = packed_decoder_call(decoder, input_ids, position_ids)  # (B, T, H)
        hidden = hidden[:, :-1].flatten(0, 1)  # (N, H)
        targets = targets.flatten()
        keep = targets != IGNORE_INDEX
        # Only labelled rows go through the vocabulary projection: prompts and padding cost nothing there.
        softcap = getattr(base_causal_lm(self.model).config, "final_logit_softcapping", None)
        return fused_linear_cross_entropy(hidden[keep], head.weight, targets[keep], bias=head.bias,
                                          chunk_size=self.chunk_size, softcap=softcap)


def layout_kwargs(layout) -> dict:
    return {} if layout is None else {"segment_layout": layout}


def packed_decoder_call(decoder, input_ids: torch.Tensor, position_ids: torch.Tensor,
                        attention_mask: torch.Tensor | None = None, pair_spans: torch.Tensor | None = None,
                        blocks: torch.Tensor | None = None) -> torch.Tensor:
    """decoder(...).last_hidden_state (B, T, H) for packed rows, through the cheapest attention that applies:
    per-block sdpa with no (T, T) mask on the CPU (train/segment_attention.py); else the given 4D mask
    (DPO's and RL's shared prompts; `pair_spans` / `blocks` describe it for the CPU path), or one
    additive mask shared by all layers (train/packed_mask.py)."""
    layout = segment_layout_for(decoder, position_ids, pair_spans, attention_mask, blocks)
    if layout is not None:
        with segment_attention(decoder, layout):
            return decoder(input_ids=input_ids, position_ids=position_ids, attention_mask=None, use_cache=False,
                           segment_layout=layout).last_hidden_state
    if attention_mask is not None:
        return decoder(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask,
                       use_cache=False).last_hidden_state
    # Packed rows under sdpa: one additive mask for all layers instead of a float copy saved per layer.
    mask = shared_mask_for(decoder, position_ids, decoder.get_input_embeddings().weight.dtype)
    with grouped_kv_attention(mask, decoder):  # and k/v saved at their own head count, not repeated (GQA)
        return decoder(input_ids=input_ids, position_ids=position_ids, attention_mask=mask,
                       use_cache=False).last_hidden_state
