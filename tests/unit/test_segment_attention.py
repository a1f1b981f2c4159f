"""Packed rows without a (T, T) mask (train/segment_attention.py): loss and gradients equal the
masked path and the unpacked rows (PITFALLS 2), with and without GQA, under gradient
checkpointing, with LoRA; DPO's shared prompt gives the log-probs of separate rows; the fallbacks
keep today's path, and the model is left as it was."""

import pytest
import torch
from rows import packed_examples
from transformers import AttentionInterface, AutoConfig, AutoModelForCausalLM

import tunesmith.train.forward as forward
from tunesmith.data.encode import resolve_chat_template
from tunesmith.data.packing import collate, pack, unpacked
from tunesmith.data.preference import PreferencePair
from tunesmith.data.preference_encode import collate_pairs, encode_pair
from tunesmith.objectives.logps import SequenceLogps, SequenceScores, sequence_logps
from tunesmith.train.forward import CausalLMLoss
from tunesmith.train.segment_attention import (ATTN_NAME, CHECKPOINT_KWARGS, SegmentLayout, segment_attention,
                                               segment_layout_for)

U = lambda t: {"role": "user", "content": t}  # noqa: E731
A = lambda t: {"role": "assistant", "content": t}  # noqa: E731
PAIRS = [PreferencePair([U("Add 2 and 3.")], [A("2 plus 3 is 5.")], [A("It is 7, I think.")], "t:1"),
         PreferencePair([U("Spell cat.")], [A("c-a-t")], [A("k-a-t-t")], "t:2"),
         PreferencePair([U("Hi")], [A("yes")], [A("no")], "t:3"), PreferencePair([U("Go")], [A("ok")], [A("never")], "t:4")]


def _model(tiny_dir, gqa=True, dtype=torch.float64, attn="sdpa"):
    cfg = AutoConfig.from_pretrained(tiny_dir)
    if not gqa:
        cfg.num_key_value_heads = cfg.num_attention_heads
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn).to(dtype)
    assert (model.config.num_key_value_heads < model.config.num_attention_heads) == gqa
    return model


@pytest.fixture
def calls(monkeypatch):
    """Counts the attention calls that went through the segment path (with a layout)."""
    fn = AttentionInterface._global_mapping[ATTN_NAME]
    seen = []

    def counting(*a, segment_layout=None, **kw):
        seen.append(segment_layout is not None)
        return fn(*a, segment_layout=segment_layout, **kw)

    monkeypatch.setitem(AttentionInterface._global_mapping, ATTN_NAME, counting)
    return seen


def _masked_path(monkeypatch):
    """Today's path: the dense additive mask (packed_mask.py) or the collator's 4D mask."""
    monkeypatch.setattr(forward, "segment_layout_for", lambda *a, **k: None)


def _loss_and_grads(model, batch, **kw):
    model.zero_grad(set_to_none=True)
    loss = CausalLMLoss(model, **kw)(**batch)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(a, b, tol=1e-6):
    """fp64 models, but transformers' RMSNorm computes in fp32: a different summation order upstream can
    flip an fp32 rounding there, so agreement is to ~1e-7 relative, not 1e-15 (a leak is ~1e-2)."""
    (la, ga), (lb, gb) = a, b
    torch.testing.assert_close(la.double(), lb.double(), rtol=tol, atol=tol)
    assert ga.keys() == gb.keys() and ga
    for n in ga:
        torch.testing.assert_close(ga[n], gb[n], rtol=tol, atol=tol, msg=n)


def test_layout_blocks():
    pos = torch.tensor([[0, 1, 2, 0, 1, 0, 1, 2], [0, 1, 2, 3, 4, 5, 6, 7]])
    assert SegmentLayout.from_position_ids(pos).rows == [[(0, 3, 0, 0), (3, 5, 3, 3), (5, 8, 5, 5)], [(0, 8, 0, 0)]]
    # DPO: pair (row 0, offset 0, P=2, C=3, R=1) then padding; row 1 holds two pairs exactly.
    spans = torch.tensor([[0, 0, 2, 3, 1], [1, 0, 1, 1, 1], [1, 3, 2, 2, 1]])
    assert SegmentLayout.from_pair_spans(spans, 2, 8).rows == [
        [(0, 5, 0, 0), (5, 6, 0, 2), (6, 8, 6, 6)], [(0, 2, 0, 0), (2, 3, 0, 1), (3, 7, 3, 3), (7, 8, 3, 5)]]
    assert SegmentLayout.from_pair_spans(torch.tensor([[0, 0, 2, 3, 0]]), 1, 6).rows == [[(0, 5, 0, 0), (5, 6, 5, 5)]]
    with pytest.raises(ValueError, match="tile"):
        SegmentLayout([[(0, 3, 0, 0)]], 4)
    m = SegmentLayout([[(0, 4, 0, 0)]], 4).branch_mask(2, 3, torch.float32, torch.device("cpu"))
    assert (m == 0).tolist() == [[True, True, True, False, False], [True, True, True, True, False], [True] * 5]


@pytest.mark.parametrize("gqa", [True, False])
def test_packed_equals_masked_path_and_unpacked_rows(tiny_dir, gqa, calls, monkeypatch):
    """fp64: the segment path gives the masked path's loss and gradients, and those of the same
    examples one per row (padded, no packing)."""
    model = _model(tiny_dir, gqa)
    exs = packed_examples()
    packed = collate(pack(exs, max_length=256), pad_id=0)
    assert segment_layout_for(model.model, packed["position_ids"]) is not None
    new = _loss_and_grads(model, packed, chunk_size=16)
    assert calls and all(calls) and len(calls) == model.config.num_hidden_layers
    alone = _loss_and_grads(model, collate(unpacked(exs), pad_id=0), chunk_size=16)
    _assert_same(new, alone)
    _masked_path(monkeypatch)
    n_calls = len(calls)
    _assert_same(new, _loss_and_grads(model, packed, chunk_size=16))
    assert len(calls) == n_calls  # the masked path did not go through the segment function
    assert model.config._attn_implementation == "sdpa"


def test_plain_logits_path_uses_segments_too(tiny_dir, calls, monkeypatch):
    """chunk_size 0 (no fused head): the whole model is called, and still with the layout."""
    model = _model(tiny_dir)
    packed = collate(pack(packed_examples(), max_length=256), pad_id=0)
    new = _loss_and_grads(model, packed, chunk_size=0)
    assert calls and all(calls)
    _masked_path(monkeypatch)
    _assert_same(new, _loss_and_grads(model, packed, chunk_size=0))


def test_no_row_sized_mask_and_no_repeated_kv_saved(tiny_dir):
    model = _model(tiny_dir, dtype=torch.float32)
    batch = collate(pack(packed_examples(), max_length=256), pad_id=0)
    T, cfg = batch["input_ids"].shape[1], model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    saved = []

    def hook(t):
        saved.append(t.shape)
        return t

    with torch.autograd.graph.saved_tensors_hooks(hook, lambda t: t):
        CausalLMLoss(model, chunk_size=16)(**batch)
    assert not [s for s in saved if len(s) >= 2 and s[-2:] == (T, T)]
    # per layer: q (B, H, T, D), k and v at the kv head count (no copies repeated to H heads), and one
    # attention output (B, T, H, D): the one o_proj reads, not per-block pieces beside a concatenated copy
    B, L = batch["input_ids"].shape[0], cfg.num_hidden_layers
    assert saved.count((B, cfg.num_attention_heads, T, head_dim)) == L
    assert saved.count((B, cfg.num_key_value_heads, T, head_dim)) == 2 * L
    assert not [s for s in saved if len(s) == 4 and s[-1] == head_dim and T not in (s[1], s[2])]  # no per-block pieces
    outs = [s for s in saved if s == (B, T, cfg.num_attention_heads, head_dim)]
    assert len(outs) == cfg.num_hidden_layers


@pytest.mark.parametrize("gqa", [True, False])
def test_gradient_checkpointing(tiny_dir, gqa, calls, monkeypatch):
    """The recomputation in backward runs after the forward's context has ended: with
    CHECKPOINT_KWARGS it re-enters the segment path (gradients equal the run without checkpointing);
    checkpointed without them, the decoder keeps the masked path."""
    model = _model(tiny_dir, gqa).train()
    batch = collate(pack(packed_examples(), max_length=256), pad_id=0)
    want = _loss_and_grads(model, batch, chunk_size=16)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=CHECKPOINT_KWARGS)
    del calls[:]
    _assert_same(_loss_and_grads(model, batch, chunk_size=16), want)
    assert len(calls) == 2 * model.config.num_hidden_layers and all(calls)  # forward + recomputation
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    assert segment_layout_for(model.model, batch["position_ids"]) is None
    del calls[:]
    _assert_same(_loss_and_grads(model, batch, chunk_size=16), want)
    assert not calls
    assert model.config._attn_implementation == "sdpa"


def test_lora_and_bf16_autocast(tiny_dir, monkeypatch):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(_model(tiny_dir, dtype=torch.float32), LoraConfig(r=4, target_modules="all-linear"))
    for n, p in model.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.05)
    batch = collate(pack(packed_examples(), max_length=256), pad_id=0)
    new = _loss_and_grads(model, batch, chunk_size=16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        new_bf16 = _loss_and_grads(model, batch, chunk_size=16)
    _masked_path(monkeypatch)
    _assert_same(new, _loss_and_grads(model, batch, chunk_size=16), tol=2e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        old_bf16 = _loss_and_grads(model, batch, chunk_size=16)
    torch.testing.assert_close(new_bf16[0], old_bf16[0], rtol=2e-2, atol=0)
    for n in new_bf16[1]:
        g_new, g_old = new_bf16[1][n], old_bf16[1][n]
        assert (g_new - g_old).norm() <= 0.05 * g_old.norm() + 1e-6, n


def test_fallbacks_and_model_left_as_it_was(tiny_dir):
    pos = collate(pack(packed_examples(), max_length=256), pad_id=0)["position_ids"]
    assert segment_layout_for(_model(tiny_dir, attn="eager").model, pos) is None
    model = _model(tiny_dir)
    assert segment_layout_for(model.model, pos) is not None
    assert segment_layout_for(model.model, torch.arange(8)[None].expand(2, 8)) is None  # single sequences
    model.config.sliding_window = 4
    assert segment_layout_for(model.model, pos) is None
    model.config.sliding_window = None
    # Outside a training forward the model is plain sdpa, also after a forward that raised.
    ids = torch.randint(5, 500, (1, 12))
    before = model(input_ids=ids).logits
    with pytest.raises(RuntimeError, match="boom"), segment_attention(model.model, SegmentLayout.from_position_ids(pos)):
        assert model.config._attn_implementation == ATTN_NAME
        raise RuntimeError("boom")
    CausalLMLoss(model, chunk_size=16)(**collate(pack(packed_examples(), max_length=256), pad_id=0))
    assert model.config._attn_implementation == "sdpa"
    torch.testing.assert_close(model(input_ids=ids).logits, before, rtol=0, atol=0)


def _dpo(tiny_dir, tok, gqa):
    resolve_chat_template(tok, "auto")
    rows = [encode_pair(p, tok) for p in PAIRS]
    return _model(tiny_dir, gqa), rows, collate_pairs(rows, tok.pad_token_id)


def _logps_and_grads(model, batch, chunk):
    model.zero_grad(set_to_none=True)
    sums, _ = sequence_logps(SequenceLogps(model, chunk), batch)
    (sums * torch.linspace(1, 2, len(sums), dtype=sums.dtype)).sum().backward()
    return sums.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("gqa,chunk", [(True, 3), (False, 3), (True, 0)])
def test_dpo_shared_prompt_equals_masked_path_and_separate_rows(tiny_dir, tok, gqa, chunk, calls):
    """Several pairs share a row; rejected sees its prompt and itself, never chosen nor the other pairs."""
    model, rows, batch = _dpo(tiny_dir, tok, gqa)
    assert batch["input_ids"].shape[0] < len(rows)
    new = _logps_and_grads(model, batch, chunk)
    assert calls and all(calls)
    seqs = [p + r for row in rows for p, r in row.sequences()]
    model.zero_grad(set_to_none=True)
    alone = []
    for (p, r), w in zip([s for row in rows for s in row.sequences()], torch.linspace(1, 2, len(seqs), dtype=torch.float64)):
        ids = torch.tensor([p + r])
        lp = model(input_ids=ids).logits[0, :-1].log_softmax(-1).gather(1, ids[0, 1:, None]).squeeze(1)[len(p) - 1:].sum()
        (lp * w).backward()
        alone.append(lp.detach())
    alone = (torch.stack(alone), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    _assert_same(new, alone, tol=1e-6 if chunk else 1e-4)  # chunk 0: the plain path's logits are fp32
    del batch["pair_spans"]  # without it: the collator's 4D mask
    n_calls = len(calls)
    _assert_same(new, _logps_and_grads(model, batch, chunk))
    assert len(calls) == n_calls


def test_reward_scores_equal_masked_path(tiny_dir, tok, calls):
    from transformers import AutoModelForSequenceClassification

    resolve_chat_template(tok, "auto")
    batch = collate_pairs([encode_pair(p, tok) for p in PAIRS], tok.pad_token_id)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_dir, num_labels=1, attn_implementation="sdpa",
                                                               dtype=torch.float64)
    args = (batch["input_ids"], batch["position_ids"], batch["ends"], batch["attention_mask"])
    new = SequenceScores(model)(*args, batch["pair_spans"])
    assert calls and all(calls)
    n_calls = len(calls)
    torch.testing.assert_close(new, SequenceScores(model)(*args), rtol=1e-6, atol=1e-6)  # no spans: the 4D mask
    assert len(calls) == n_calls


@pytest.mark.parametrize("kv_heads", [1, 3])
def test_block_function_equals_per_block_sdpa(kv_heads):
    """The autograd Function (CPU flash kernel per block, one output) against F.sdpa per block + cat,
    which the dropout fallback uses: the same output and gradients, SFT and DPO layouts."""
    from tunesmith.train.segment_attention import _BlockAttention, _per_block_sdpa

    torch.manual_seed(0)
    B, T, H, D = 2, 40, 3, 8
    q = torch.randn(B, T, H, D, dtype=torch.float64).transpose(1, 2).requires_grad_()
    k, v = (torch.randn(B, T, kv_heads, D, dtype=torch.float64).transpose(1, 2).requires_grad_() for _ in range(2))
    g = torch.randn(B, T, H, D, dtype=torch.float64)
    layouts = [SegmentLayout.from_position_ids(torch.tensor([list(range(15)) + list(range(25)), list(range(40))])),
               SegmentLayout.from_pair_spans(torch.tensor([[0, 0, 5, 6, 7], [0, 18, 4, 3, 9], [1, 0, 10, 12, 14]]), B, T)]
    for layout in layouts:
        got = []
        for fn in (lambda: _BlockAttention.apply(q, k, v, layout, 0.3), lambda: _per_block_sdpa(q, k, v, layout, 0.0, 0.3)):
            q.grad = k.grad = v.grad = None
            out = fn()
            out.backward(g)
            got.append([out.detach(), q.grad, k.grad, v.grad])
        for a, b in zip(*got):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_dpo_shared_prompt_under_bf16_autocast(tiny_dir, tok, calls):
    """The rejected block's (R, P + R) mask is built in the dtype autocast gives the attention."""
    model, rows, batch = _dpo(tiny_dir, tok, True)
    model.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        new = sequence_logps(SequenceLogps(model, 3), batch)[0]
        assert calls and all(calls)
        masked = sequence_logps(SequenceLogps(model, 3), {k: v for k, v in batch.items() if k != "pair_spans"})[0]
    torch.testing.assert_close(new, masked, rtol=2e-2, atol=0.5)
