"""The shared additive mask for packed rows (train/packed_mask.py): same numbers as transformers'
own mask, no cross-segment attention, and one saved copy for all layers instead of one per layer.
On the CPU packed rows now take the mask-free path (train/segment_attention.py); the tests that pin
the mask's own properties force the mask path, which stays the fallback (eager, GPUs, checkpointing
without its context_fn)."""

import torch
from rows import packed_examples

from tunesmith.data.encode import IGNORE_INDEX
from tunesmith.data.packing import collate, pack, unpacked
from tunesmith.train.forward import CausalLMLoss
from tunesmith.train.packed_mask import packed_additive_mask, segment_ids


def _model(tiny_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32, attn_implementation="sdpa")


def test_mask_is_block_diagonal_causal():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2]])
    assert segment_ids(pos).tolist() == [[0, 0, 0, 1, 1, 2, 2, 2]]
    m = packed_additive_mask(pos, torch.float32)[0, 0]
    allowed = m == 0
    assert allowed[4].tolist() == [False, False, False, True, True, False, False, False]
    assert allowed[7].tolist() == [False] * 5 + [True] * 3
    assert torch.isneginf(m[~allowed]).all()
    assert packed_additive_mask(torch.arange(8)[None].expand(3, 8), torch.float32) is None  # single sequences


def test_loss_and_grads_equal_transformers_own_packed_mask(tiny_dir):
    model = _model(tiny_dir)
    batch = collate(pack(packed_examples(), max_length=256), pad_id=0)
    lm = CausalLMLoss(model, chunk_size=16)
    ours = lm(**batch)
    ours.backward()
    g_ours = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    # transformers' path: attention_mask=None, the block-diagonal mask derived from position_ids
    hidden = model.model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).last_hidden_state
    logits = model.lm_head(hidden)[:, :-1]
    ref = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"][:, 1:].flatten(), reduction="sum")
    ref.backward()
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    for n, p in model.named_parameters():
        torch.testing.assert_close(g_ours[n], p.grad, rtol=1e-4, atol=1e-6, msg=n)


def test_segments_do_not_see_each_other(tiny_dir):
    """Changing the tokens of the first segment leaves the loss of the others unchanged."""
    model = _model(tiny_dir)
    exs = packed_examples(3)
    batch = collate(pack(exs, max_length=256), pad_id=0)
    first = int(segment_ids(batch["position_ids"])[0].eq(0).sum())
    other = dict(batch, input_ids=batch["input_ids"].clone(), labels=batch["labels"].clone())
    other["input_ids"][0, :first] = (other["input_ids"][0, :first] + 7) % 500
    other["labels"][0, :first] = IGNORE_INDEX
    base = dict(batch, labels=other["labels"])
    lm = CausalLMLoss(model, chunk_size=16)
    with torch.no_grad():
        torch.testing.assert_close(lm(**base), lm(**other), rtol=1e-6, atol=1e-6)


def _mask_path(monkeypatch):
    import tunesmith.train.forward as forward

    monkeypatch.setattr(forward, "segment_layout_for", lambda *a, **k: None)


def test_one_mask_saved_for_all_layers(tiny_dir, monkeypatch):
    """Before: torch's sdpa turned the boolean mask into a new float tensor at each layer, and each
    was saved for backward (n_layers copies of (B, 1, T, T)); now every layer saves the same one."""
    _mask_path(monkeypatch)
    model = _model(tiny_dir)
    batch = collate(pack(packed_examples(), max_length=256), pad_id=0)
    B, T = batch["input_ids"].shape
    masks = set()

    def pack_hook(t):
        if t.dim() == 4 and t.shape[1] == 1 and t.shape[-2:] == (T, T):
            masks.add(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack_hook, lambda t: t):
        CausalLMLoss(model, chunk_size=16)(**batch)
    assert model.config.num_hidden_layers > 1
    assert len(masks) == 1


def test_unpacked_rows_pass_no_mask(tiny_dir):
    model = _model(tiny_dir)
    from tunesmith.train.packed_mask import shared_mask_for

    batch = collate(unpacked(packed_examples(3)), pad_id=0)
    assert shared_mask_for(model.model, batch["position_ids"], torch.float32) is None


def test_grouped_kv_saved_at_their_own_head_count_on_cpu(tiny_dir, monkeypatch):
    """With the mask, transformers would repeat k and v to every query head and autograd would save
    the copies (4 head-sized tensors a layer: q, k, v, out); the CPU flash kernel takes them grouped,
    so only q and the output are saved with all heads, and the env switch is put back afterwards."""
    from tunesmith.train.packed_mask import FORCE_GQA_ENV, _cpu_flash_takes_gqa_with_mask

    _mask_path(monkeypatch)
    model = _model(tiny_dir)
    cfg = model.config
    assert cfg.num_key_value_heads < cfg.num_attention_heads
    batch = collate(pack(packed_examples(), max_length=256), pad_id=0)
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    full_heads = set()

    def pack_hook(t):
        if t.dim() == 4 and t.shape[1] == cfg.num_attention_heads and t.shape[-1] == head_dim:
            full_heads.add(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack_hook, lambda t: t):
        CausalLMLoss(model, chunk_size=16)(**batch)
    per_layer = 2 if _cpu_flash_takes_gqa_with_mask() else 4
    assert len(full_heads) == per_layer * cfg.num_hidden_layers
    import os

    assert FORCE_GQA_ENV not in os.environ


def test_packed_rows_with_gradient_checkpointing(tiny_dir):
    """Checkpointing recomputes the layers in backward, outside the forward's context: the grouped-k/v
    switch must stay off there (it raised a CheckpointError on SmolLM2), and the gradients are those
    of the run without checkpointing."""
    model = _model(tiny_dir).train()
    batch = collate(pack(packed_examples(), max_length=256), pad_id=0)
    lm = CausalLMLoss(model, chunk_size=16)
    lm(**batch).backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad(set_to_none=True)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    lm(**batch).backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, want[n], rtol=1e-4, atol=1e-6, msg=n)
