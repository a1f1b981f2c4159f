"""Per-sequence log-probs and reward scores on the tiny model: packed = one by one, padding does not
move the reward (PITFALLS 11), and DPO with LoRA starts at ln 2 with the adapter-disabled base as
its reference (PITFALLS 9)."""

import contextlib
import math

import pytest
import torch

from tunesmith.config import load_config
from tunesmith.data.encode import resolve_chat_template
from tunesmith.data.preference import PreferencePair
from tunesmith.data.preference_encode import collate_pairs, encode_pair
from tunesmith.data.pipeline import PreparedData
from tunesmith.objectives import SetupContext, get_objective
from tunesmith.objectives.logps import SequenceLogps, SequenceScores, sequence_logps
from tunesmith.score import score_ids
from tunesmith.train.run import build_model

U = lambda t: {"role": "user", "content": t}  # noqa: E731
A = lambda t: {"role": "assistant", "content": t}  # noqa: E731
PAIRS = [PreferencePair([U("Add 2 and 3.")], [A("2 plus 3 is 5.")], [A("It is 7, I think.")], "t:1"),
         PreferencePair([U("Spell cat.")], [A("c-a-t")], [A("k-a-t-t")], "t:2"),
         # Two short pairs that first-fit packs into one row: blocks must not see each other.
         PreferencePair([U("Hi")], [A("yes")], [A("no")], "t:3"), PreferencePair([U("Go")], [A("ok")], [A("never")], "t:4")]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cfg(tiny_dir, *extra):
    return load_config(None, [f"model.path={tiny_dir}", "method=dpo", "train.precision=fp32", "adapter.dropout=0",
                              "data.max_length=128", "dpo.max_prompt_length=64", *extra])


def _rows(tok):
    resolve_chat_template(tok, "auto")
    return [encode_pair(p, tok) for p in PAIRS]


def _ctx(wrapper, rows, tok) -> SetupContext:
    data = PreparedData(rows, [])
    return SetupContext(wrapper, data, tok.pad_token_id, tok, torch.device("cpu"), 0, 1, lambda t: t, contextlib.nullcontext, print)


def _alone_logps(model, prompt, response):
    """Reference computation: the plain HF forward of one unpadded sequence, full logits."""
    ids = torch.tensor([prompt + response])
    logits = model(input_ids=ids).logits[0, :-1].float()
    lp = logits.log_softmax(-1).gather(1, ids[0, 1:, None]).squeeze(1)
    return lp[len(prompt) - 1 :].sum()


@pytest.mark.parametrize("chunk", [0, 3])
def test_packed_sequence_logps_equal_one_by_one(tiny_dir, tok, chunk):
    """chunk 3: the fused chunked head path; chunk 0: the plain logits path. Log-probs and the
    gradients of the LoRA weights match running each sequence alone."""
    torch.manual_seed(0)
    model = build_model(_cfg(tiny_dir), torch.device("cpu"))
    for n, p in model.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.05)  # a non-trivial adapter
    rows = _rows(tok)
    batch = collate_pairs(rows, tok.pad_token_id)
    assert batch["input_ids"].shape[0] < len(rows)  # some pairs share a row
    sums, counts = sequence_logps(SequenceLogps(model, chunk), batch)
    sums.sum().backward()
    packed_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    alone = torch.stack([_alone_logps(model, p, r) for row in rows for p, r in row.sequences()])
    alone.sum().backward()
    assert counts.tolist() == [len(r) for row in rows for _, r in row.sequences()]
    torch.testing.assert_close(sums, alone, rtol=1e-5, atol=1e-4)
    for n, p in model.named_parameters():
        if p.requires_grad:
            torch.testing.assert_close(packed_grads[n], p.grad, rtol=1e-4, atol=1e-5)


def test_reward_does_not_depend_on_padding(tiny_dir, tok):
    """PITFALLS 11: the score of each sequence is the same packed (training), right-padded,
    left-padded and with 5 extra pads (scoring), because it is read at the last real token."""
    torch.manual_seed(0)
    cfg = _cfg(tiny_dir, "method=reward")
    model = build_model(cfg, torch.device("cpu"), head="score")
    model.eval()
    rows = _rows(tok)
    batch = collate_pairs(rows, tok.pad_token_id)
    packed = SequenceScores(model)(batch["input_ids"], batch["position_ids"], batch["ends"], batch["attention_mask"]).detach()
    seqs = [p + r for row in rows for p, r in row.sequences()]
    for side, extra in [("right", 0), ("left", 0), ("right", 5), ("left", 5)]:
        torch.testing.assert_close(score_ids(model, seqs, tok.pad_token_id, side, extra), packed, rtol=1e-4, atol=1e-5)
    assert packed.unique().numel() == len(seqs)  # different sequences, different scores


def test_dpo_with_lora_starts_at_ln2_without_a_model_copy(tiny_dir, tok):
    """PITFALLS 9: at step 0 the LoRA policy equals its base, so the loss is ln 2 = 0.693147 and
    every reward and margin is 0; the reference is the same module with the adapter disabled."""
    cfg = _cfg(tiny_dir)
    model = build_model(cfg, torch.device("cpu"))
    wrapper = SequenceLogps(model, 1024)
    objective = get_objective("dpo", cfg)
    rows = _rows(tok)
    objective.setup(_ctx(wrapper, rows, tok))
    assert objective.reference.frozen is None  # no second copy of the weights
    batch = collate_pairs(rows, tok.pad_token_id)
    loss_sum, metrics = objective.step(wrapper, batch)
    assert loss_sum.item() / objective.loss_units(batch) == pytest.approx(math.log(2), abs=1e-6)
    assert metrics["rewards/margin"] == (0.0, 4) and metrics["rewards/accuracy"] == (0.0, 4)
    # Move the adapter: the policy changes, the reference (the base) does not.
    ref_before = objective.reference.logps(wrapper, batch)
    for n, p in model.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.05)
    torch.testing.assert_close(objective.reference.logps(wrapper, batch), ref_before)
    assert objective.step(wrapper, batch)[0].item() / 4 != pytest.approx(math.log(2), abs=1e-4)


def test_full_finetuning_reference_is_a_frozen_copy(tiny_dir, tok):
    cfg = _cfg(tiny_dir, "adapter.type=none")
    model = build_model(cfg, torch.device("cpu"))
    wrapper = SequenceLogps(model, 1024)
    objective = get_objective("dpo", cfg)
    objective.setup(_ctx(wrapper, _rows(tok), tok))
    frozen = objective.reference.frozen
    assert frozen is not None and not any(p.requires_grad for p in frozen.parameters())
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(frozen.parameters(), wrapper.parameters()))


@pytest.mark.parametrize("head_trains", [False, True])
def test_fused_token_logps_match_full_logits(head_trains):
    """fp64, chunks of 10 over 37 rows: values and gradients (hidden; weight and bias when the head
    trains, which takes the recompute-in-backward path) equal log_softmax over the full logits."""
    from tunesmith.objectives.logps import fused_linear_token_logps

    torch.manual_seed(0)
    h = torch.randn(37, 8, dtype=torch.float64, requires_grad=True)
    w = torch.randn(50, 8, dtype=torch.float64, requires_grad=head_trains)
    b = torch.randn(50, dtype=torch.float64, requires_grad=head_trains)
    t, g = torch.randint(0, 50, (37,)), torch.randn(37, dtype=torch.float64)
    out = fused_linear_token_logps(h, w, t, b, chunk_size=10)
    (out * g).sum().backward()
    params = [h, w, b] if head_trains else [h]
    got = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    ref = (h @ w.T + b).log_softmax(-1).gather(1, t[:, None]).squeeze(1)
    (ref * g).sum().backward()
    torch.testing.assert_close(out, ref)
    for a, p in zip(got, params):
        torch.testing.assert_close(a, p.grad)


def test_token_logps_chunks_follow_the_logits_budget(monkeypatch):
    """Preference log-probs share the SFT loss's CHUNK_ELEMENTS cap: with the budget at 3 x V and
    chunk_size 1000, rows go through in chunks of 3, and the values still equal log_softmax."""
    import tunesmith.objectives.logps as logps
    import tunesmith.train.losses as losses

    n, h, v = 10, 8, 13
    g = torch.Generator().manual_seed(0)
    hidden, weight = torch.randn(n, h, generator=g), torch.randn(v, h, generator=g)
    targets = torch.randint(0, v, (n,), generator=g)
    monkeypatch.setattr(losses, "CHUNK_ELEMENTS", 3 * v)
    seen = []
    real = logps._TokenLogps.apply
    monkeypatch.setattr(logps._TokenLogps, "apply", lambda *a: seen.append(a[4]) or real(*a))
    got = logps.fused_linear_token_logps(hidden, weight, targets, chunk_size=1000)
    assert seen == [3]
    want = torch.log_softmax(hidden @ weight.T, dim=-1).gather(1, targets[:, None]).squeeze(1)
    torch.testing.assert_close(got, want)
