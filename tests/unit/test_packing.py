"""Padding-free packing (PITFALLS 2): a packed row computes exactly what its examples compute alone."""

import torch

from tunesmith.data.encode import IGNORE_INDEX, Encoded
from tunesmith.data.packing import collate, count_label_tokens, pack, unpacked
from tunesmith.train.forward import CausalLMLoss


def _examples(n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        L = int(torch.randint(5, 30, (1,), generator=g))
        ids = torch.randint(5, 500, (L,), generator=g).tolist()
        cut = L // 3
        out.append(Encoded(ids, [IGNORE_INDEX] * cut + ids[cut:], f"ex{i}"))
    return out


def test_pack_places_every_example_once_within_max_length():
    exs = _examples(40)
    rows = pack(exs, max_length=64, seed=1)
    assert sorted(s.where for r in rows for s in r.segments) == sorted(e.where for e in exs)
    assert all(len(r) <= 64 for r in rows)
    assert len(rows) < len(exs) / 2  # it actually packs


def test_collate_positions_restart_and_first_label_of_each_segment_is_ignored():
    exs = _examples(3)
    rows = pack(exs, max_length=128)
    assert len(rows) == 1
    b = collate(rows, pad_id=0)
    t = 0
    for seg in rows[0].segments:
        n = len(seg)
        assert b["position_ids"][0, t : t + n].tolist() == list(range(n))
        assert b["labels"][0, t] == IGNORE_INDEX
        t += n
    assert count_label_tokens(b) == sum(e.n_labels - (e.labels[0] != IGNORE_INDEX) for e in exs)


def test_packed_row_loss_and_grads_equal_the_examples_one_by_one(tiny_dir):
    """Sum of token losses of the packed row == sum over examples run alone, to 1e-5 in fp32,
    and so are the gradients: no example attends to another."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    lm = CausalLMLoss(model, chunk_size=16)
    exs = _examples(5)
    packed = collate(pack(exs, max_length=256), pad_id=0)
    loss_packed = lm(**packed)
    loss_packed.backward()
    g_packed = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    loss_alone = sum(lm(**collate(unpacked([e]), pad_id=0)) for e in exs)
    loss_alone.backward()
    assert torch.allclose(loss_packed, loss_alone, rtol=1e-5, atol=1e-5)
    for n, p in model.named_parameters():
        assert torch.allclose(g_packed[n], p.grad, rtol=1e-4, atol=1e-6), n


def test_packed_row_is_contaminated_without_position_restart(tiny_dir):
    """The control: the same row with plain positions attends across examples and the loss differs."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    lm = CausalLMLoss(model)
    packed = collate(pack(_examples(5), max_length=256), pad_id=0)
    plain = dict(packed, position_ids=torch.arange(packed["input_ids"].shape[1]).expand_as(packed["input_ids"]))
    assert not torch.allclose(lm(**packed), lm(**plain), rtol=1e-4)


def test_fused_loss_equals_plain_logits_loss(tiny_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    batch = collate(unpacked(_examples(4)), pad_id=0)
    fused = CausalLMLoss(model, chunk_size=8)(**batch)
    plain = CausalLMLoss(model, chunk_size=0)(**batch)
    logits = model(input_ids=batch["input_ids"], use_cache=False).logits[:, :-1]
    ref = torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch["labels"][:, 1:].flatten(), reduction="sum")
    assert torch.allclose(fused, ref, rtol=1e-5) and torch.allclose(plain, ref, rtol=1e-5)
