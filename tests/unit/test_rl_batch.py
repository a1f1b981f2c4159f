"""Shared-prompt collation of online-RL groups (objectives/rl/batch.py): the block layout by hand,
and the same log-probs and gradients as one row per completion on the tiny model."""

import torch
from transformers import AutoModelForCausalLM

from tunesmith.objectives.rl import batch as rl_batch
from tunesmith.objectives.rl.batch import Sample, collate_samples, unflatten
from tunesmith.objectives.rl.policy import CompletionLogps
from tunesmith.train import segment_attention


def test_a_group_is_one_block_with_its_prompt_once():
    rows = [Sample([1, 2, 3], [4, 5], False), Sample([1, 2, 3], [6], True), Sample([7, 8], [9, 10, 11], False)]
    b = collate_samples(rows, pad_id=0)
    assert b["input_ids"].tolist() == [[1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 0]]
    assert b["position_ids"][0].tolist() == [0, 1, 2, 3, 4, 3]  # the second completion restarts after the prompt
    assert b["position_ids"][1, :5].tolist() == [0, 1, 2, 3, 4]
    # completion 0: from prompt's last row (2), then its own rows; completion 1 from the prompt's last row
    assert b["src"].tolist() == [2, 3, 2, 6 + 1, 6 + 2, 6 + 3] and b["tgt"].tolist() == [4, 5, 6, 9, 10, 11]
    assert b["mask"].tolist() == [[True, True, False], [True, False, False], [True, True, True]]
    T = 1
    want = torch.tensor([[T, 0, 0, 0, 0, 0],
                         [T, T, 0, 0, 0, 0],
                         [T, T, T, 0, 0, 0],
                         [T, T, T, T, 0, 0],
                         [T, T, T, T, T, 0],
                         [T, T, T, 0, 0, T]], dtype=torch.bool)  # completion 2 sees the prompt and itself only
    assert torch.equal(b["attention_mask"][0, 0], want)
    assert torch.equal(b["attention_mask"][1, 0, :5, :5], torch.ones(5, 5, dtype=torch.bool).tril())
    assert b["attention_mask"][1, 0, 5].tolist() == [False] * 5 + [True]  # padding sees itself only
    # The same layout as blocks for the CPU's mask-free attention: [prompt | c1] causal, c2 a branch of the prompt.
    assert b["segment_blocks"].tolist() == [[0, 0, 5, 0, 0], [0, 5, 6, 0, 3], [1, 0, 5, 0, 0]]
    # An empty first completion leaves the prompt as the causal block; the next one still branches off it.
    e = collate_samples([Sample([1, 2, 3], [], True), Sample([1, 2, 3], [6, 7], False)], pad_id=0)
    assert e["segment_blocks"].tolist() == [[0, 0, 3, 0, 0], [0, 3, 5, 0, 3]]
    assert segment_attention.SegmentLayout.from_blocks(e["segment_blocks"], 1, 6).rows == [[(0, 3, 0, 0), (3, 5, 0, 3), (5, 6, 5, 5)]]


def test_no_sharing_gives_plain_rows_without_a_mask():
    rows = [Sample([1, 2], [4], False), Sample([3], [5, 6], False)]
    b = collate_samples(rows, pad_id=0)
    assert "attention_mask" not in b and b["input_ids"].tolist() == [[1, 2, 4], [3, 5, 6]]
    assert b["src"].tolist() == [1, 3, 4] and b["position_ids"].tolist() == [[0, 1, 2], [0, 1, 2]]


def test_long_completions_are_not_packed_into_one_block():
    assert rl_batch._share_prompt(30, [16] * 4)
    assert not rl_batch._share_prompt(10, [2000] * 8)  # the block's dense attention would cost more
    rows = [Sample([1] * 10, [2] * 2000, False) for _ in range(8)]
    assert collate_samples(rows, 0)["input_ids"].shape[0] == 8
    # Without the mask (segment attention) a shared block costs less attention than separate rows: always shared.
    assert collate_samples(rows, 0, mask_free=True)["input_ids"].shape[0] == 1


def test_shared_blocks_give_the_logps_and_gradients_of_separate_rows(tiny_dir, monkeypatch):
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    r = lambda n: torch.randint(3, 500, (n,), generator=g).tolist()  # noqa: E731
    p1, p2 = r(9), r(4)
    rows = [Sample(p1, r(5), False), Sample(p1, r(2), False), Sample(p1, r(7), True), Sample(p2, r(3), False), Sample(p2, r(6), False)]
    wrapper = CompletionLogps(model, 1024, 0.9)

    def run(batch, blocks=True):
        model.zero_grad()
        flat, ent = wrapper(batch["input_ids"], batch["position_ids"], batch["src"], batch["tgt"], entropy=True,
                            attention_mask=batch.get("attention_mask"),
                            segment_blocks=batch.get("segment_blocks") if blocks else None)
        (flat * torch.linspace(0.5, 1.5, len(flat))).sum().backward()
        return unflatten(flat.detach(), batch["mask"]), ent, model.model.layers[0].self_attn.q_proj.weight.grad.clone()

    shared = collate_samples(rows, 0)
    assert shared["input_ids"].shape[0] == 2
    apart = collate_samples(rows, 0, share_prompts=False)
    assert apart["input_ids"].shape[0] == 5 and "attention_mask" not in apart
    (a, ea, ga), (b, eb, gb) = run(shared, blocks=False), run(apart)
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(ea, eb, atol=1e-5)
    assert torch.allclose(ga, gb, atol=1e-5, rtol=1e-4) and ga.abs().sum() > 0
    # The CPU's mask-free path over the same blocks (segment attention): the same numbers, and it really ran.
    calls = []
    real = segment_attention._BlockAttention.apply
    monkeypatch.setattr(segment_attention._BlockAttention, "apply", lambda *a: calls.append(a[3]) or real(*a))
    c, ec, gc = run(shared)
    assert calls and all(layout.rows[0][1] == (14, 16, 0, 9) for layout in calls)  # completion 2 branches off the prompt
    assert torch.allclose(c, b, atol=1e-5) and torch.allclose(ec, eb, atol=1e-5)
    assert torch.allclose(gc, gb, atol=1e-5, rtol=1e-4)


def test_flash_attention_2_gets_separate_rows():
    """flash-attention-2 takes no 4D mask (it would read a block as one sequence): no shared blocks."""
    from types import SimpleNamespace

    from tunesmith.objectives.rl.grpo import GRPOObjective

    rows = [Sample([1, 2, 3], [4, 5], False), Sample([1, 2, 3], [6], False)]
    obj = GRPOObjective.__new__(GRPOObjective)
    for attn, n_rows in [("sdpa", 1), ("eager", 1), ("flash_attention_2", 2)]:
        obj.cfg = SimpleNamespace(model=SimpleNamespace(attn_implementation=attn))
        b = obj.collate(rows, 0)
        assert b["input_ids"].shape[0] == n_rows and ("attention_mask" in b) == (n_rows == 1), attn
