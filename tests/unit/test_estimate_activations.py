"""The activation formula against autograd itself: a forward of a real (small, random) Llama on the
CPU under `saved_tensors_hooks`, summing the distinct storages autograd keeps for backward (the
parameters excluded). This is what the formula in estimate/activations.py was read from; if a
transformers/PEFT/torch upgrade changes what is saved, these tests say so.

Tolerance: 3%. Full fine-tuning matches exactly; LoRA with dropout over-counts the first layer by a
little (its input comes from the frozen embedding, so one residual input is never saved)."""

import pytest
import torch

from tunesmith.estimate.activations import ActivationSpec, activation_bytes
from tunesmith.estimate.shapes import shape_of

D, F, H, G, L, V, B, T = 128, 352, 4, 2, 3, 512, 2, 64


def _traced(lora: bool, packed: bool, dropout: float) -> tuple[int, object]:
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(hidden_size=D, intermediate_size=F, num_attention_heads=H, num_key_value_heads=G, num_hidden_layers=L,
                      vocab_size=V, use_cache=False, attn_implementation="sdpa")
    model = LlamaForCausalLM(cfg)
    shape = shape_of(model)
    if lora:
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=dropout, target_modules="all-linear"))
    else:
        model.requires_grad_(True)
    model.train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    ids = torch.randint(0, V, (B, T))
    half = torch.cat([torch.arange(T // 2), torch.arange(T - T // 2)])  # two examples per row
    pos = (half if packed else torch.arange(T)).repeat(B, 1)
    saved: dict[int, int] = {}

    def pack(t):
        key = t.untyped_storage().data_ptr()
        if key not in params:
            saved[key] = t.untyped_storage().nbytes()
        return t

    base = model.get_base_model() if lora else model
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        base.model(input_ids=ids, position_ids=pos, use_cache=False)
    return sum(saved.values()), shape


@pytest.mark.parametrize("lora,packed,dropout", [(False, False, 0.0), (False, True, 0.0), (True, False, 0.0),
                                                 (True, False, 0.05), (True, True, 0.05)])
def test_formula_matches_autograd(lora, packed, dropout):
    traced, shape = _traced(lora, packed, dropout)
    ranks = tuple((n, i, 8) for n, i, _ in shape.linears[: len(shape.linears) // L]) if lora else ()
    spec = ActivationSpec(tokens=B * T, rows=B, seq_len=T, dtype="fp32", attn="sdpa", masked=packed, checkpointing=False,
                          full=not lora, lora=ranks, lora_dropout=dropout)
    predicted = activation_bytes(shape, spec)["saved"]
    assert predicted == pytest.approx(traced, rel=0.03), (predicted, traced)


@pytest.mark.parametrize("lora", [False, True])
def test_segment_attention_saves_the_unmasked_count(lora):
    """tunesmith's packed rows on the CPU (train/segment_attention.py): no (B, 1, T, T) mask and no
    repeated k/v, and the output o_proj reads is the one the attention saves: the unmasked count; the
    estimate plans packed rows so on the CPU under sdpa (Plan.segment_attention)."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from tunesmith.train.forward import packed_decoder_call

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=D, intermediate_size=F, num_attention_heads=H, num_key_value_heads=G,
                                         num_hidden_layers=L, vocab_size=V, use_cache=False, attn_implementation="sdpa"))
    shape = shape_of(model)
    if lora:
        model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules="all-linear"))
    else:
        model.requires_grad_(True)
    model.train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    pos = torch.cat([torch.arange(T // 2), torch.arange(T - T // 2)]).repeat(B, 1)
    saved: dict[int, int] = {}

    def pack(t):
        if t.untyped_storage().data_ptr() not in params:
            saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    base = model.get_base_model() if lora else model
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        packed_decoder_call(base.model, torch.randint(0, V, (B, T)), pos)
    ranks = tuple((n, i, 8) for n, i, _ in shape.linears[: len(shape.linears) // L]) if lora else ()
    spec = ActivationSpec(tokens=B * T, rows=B, seq_len=T, dtype="fp32", attn="sdpa", masked=False, checkpointing=False,
                          full=not lora, lora=ranks)
    assert activation_bytes(shape, spec)["saved"] == pytest.approx(sum(saved.values()), rel=0.03)
