"""Generation in the loop on the tiny model: the training forward's log-probs equal the sampler's,
sampling is seeded, EOS / truncation end completions and the masks follow them."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from tunesmith.objectives.rl.data import prompt_ids
from tunesmith.objectives.rl.batch import Sample, collate_samples, unflatten
from tunesmith.objectives.rl.grpo import GRPOObjective
from tunesmith.objectives.rl.policy import CompletionLogps, score_tokens
from tunesmith.objectives.rl.rollout.generation import sample

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model(tiny_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)


def _prompts(tok):
    texts = ["Add 3 and 4.", "Spell the word tree, please, letter by letter."]  # different lengths: left padding matters
    return [prompt_ids(tok, [{"role": "user", "content": t}]) for t in texts]


def _sample(model, tok, prompts, **kw):
    args = dict(tokenizer=tok, eos_ids=[tok.eos_token_id], pad_id=tok.pad_token_id, max_new_tokens=12, temperature=0.7,
                top_p=1.0, stop=[], seed=5)
    return sample(model, prompts, **{**args, **kw})


@pytest.mark.parametrize("chunk", [1024, 3])
def test_recomputed_logps_equal_the_samplers(model, tok, chunk):
    prompts = [p for p in _prompts(tok) for _ in range(2)]  # groups of two: their prompts are shared in the forward
    done = _sample(model, tok, prompts, return_logps=True)
    rows = [Sample(p, c.ids, c.truncated) for p, c in zip(prompts, done)]
    batch = collate_samples(rows, tok.pad_token_id)
    wrapper = CompletionLogps(model, chunk, 0.7)
    with torch.no_grad():
        flat = wrapper(batch["input_ids"], batch["position_ids"], batch["src"], batch["tgt"], attention_mask=batch.get("attention_mask"))
        scored, entropy, _ = score_tokens(wrapper, batch)
        again, fused_entropy = wrapper(batch["input_ids"], batch["position_ids"], batch["src"], batch["tgt"], entropy=True,
                                       attention_mask=batch.get("attention_mask"))
    got = unflatten(flat, batch["mask"])
    # the training forward's entropy (from its chunked logits) is the rollout pass's
    assert torch.equal(again, flat) and torch.allclose(fused_entropy, entropy, atol=1e-5)
    for b, c in enumerate(done):
        assert got[b, : len(c.ids)].tolist() == pytest.approx(c.sampler_logps, abs=2e-5)
    assert torch.allclose(scored, flat, atol=2e-5) and (entropy > 0).all()


def test_sampling_is_seeded_and_leaves_the_rng_alone(model, tok):
    prompts = _prompts(tok)
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = [c.ids for c in _sample(model, tok, prompts)]
    assert torch.equal(torch.get_rng_state(), before)  # the training RNG stream is not consumed
    assert a == [c.ids for c in _sample(model, tok, prompts)]
    assert a != [c.ids for c in _sample(model, tok, prompts, seed=6)]


def test_eos_and_truncation(model, tok):
    prompts = _prompts(tok)
    # every token is an end token: each completion is one token long and not truncated
    ended = _sample(model, tok, prompts, eos_ids=list(range(len(tok))))
    assert all(len(c.ids) == 1 and not c.truncated for c in ended)
    # an end token that is never sampled: every completion runs to max_new_tokens and is truncated
    cut = _sample(model, tok, prompts, eos_ids=[tok.pad_token_id], max_new_tokens=5)
    assert all(len(c.ids) == 5 and c.truncated for c in cut)
    rows = [Sample(prompts[0], [7], False), Sample(prompts[1], [7, 8, 9, 10, 11], True)]
    batch = collate_samples(rows, tok.pad_token_id)
    assert batch["mask"].sum(1).tolist() == [1, 5] and batch["truncated"].tolist() == [0.0, 1.0]
    # mask_truncated: the truncated row leaves the dapo token count and contributes no loss
    rows[1].train = False
    obj = GRPOObjective.__new__(GRPOObjective)
    obj.rl = type("RL", (), {"loss_type": "dapo"})()
    assert obj.loss_units(collate_samples(rows, tok.pad_token_id)) == 1


def test_stop_strings_cut_the_completion(model, tok):
    prompts = _prompts(tok)
    free = _sample(model, tok, prompts, max_new_tokens=8)
    text = tok.decode(free[0].ids[:3])
    stop = text[-1] if text.strip() else None
    if stop is None:
        pytest.skip("first tokens decode to whitespace")
    done = _sample(model, tok, prompts, max_new_tokens=8, stop=[stop])
    first = done[0]
    assert stop in tok.decode(first.ids) and stop not in tok.decode(first.ids[:-1]) and not first.truncated


def test_lora_policy_and_its_reference(tiny_dir, tok):
    """With LoRA the sampler and the training forward see the adapter; the reference is the same
    module with the adapter disabled, which computes exactly what the base model computes."""
    from peft import LoraConfig, get_peft_model

    from tunesmith.objectives.reference import adapter_disabled

    base = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    plain = CompletionLogps(AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32), 1024, 1.0)
    torch.manual_seed(0)
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    prompts = _prompts(tok)
    done = _sample(peft, tok, prompts, temperature=1.0, return_logps=True)
    batch = collate_samples([Sample(p, c.ids, c.truncated) for p, c in zip(prompts, done)], tok.pad_token_id)
    wrapper = CompletionLogps(peft, 1024, 1.0)
    with torch.no_grad():
        got = unflatten(wrapper(batch["input_ids"], batch["position_ids"], batch["src"], batch["tgt"],
                                attention_mask=batch.get("attention_mask")), batch["mask"])
        with adapter_disabled(wrapper):
            ref = score_tokens(wrapper, batch)[0]
        base_logps = score_tokens(plain, batch)[0]
    for b, c in enumerate(done):
        assert got[b, : len(c.ids)].tolist() == pytest.approx(c.sampler_logps, abs=2e-5)
    assert torch.allclose(ref, base_logps, atol=1e-6)
    assert not torch.allclose(got[batch["mask"]], ref, atol=1e-3)  # the adapter does change the policy


def test_a_row_samples_the_same_however_the_step_is_split(model, tok):
    """Each row has its own generator seeded by its position in the step's global batch: the rows
    2..3 of one batch of 4 are what a second process (first_row=2) samples for its 2 rows."""
    prompts = [_prompts(tok)[0]] * 4
    whole = [c.ids for c in _sample(model, tok, prompts, temperature=1.0, step=3)]
    halves = [c.ids for c in _sample(model, tok, prompts[:2], temperature=1.0, step=3)] + \
             [c.ids for c in _sample(model, tok, prompts[2:], temperature=1.0, step=3, first_row=2)]
    assert whole == halves
    assert len({tuple(x) for x in whole}) > 1  # the rows of one prompt differ
    assert whole != [c.ids for c in _sample(model, tok, prompts, temperature=1.0, step=4)]


def test_the_row_sampler_draws_from_softmax_over_the_nucleus():
    """Gumbel-max: argmax(z / T + Gumbel) is a sample of softmax(z / T); with top-p the tokens outside
    the nucleus are never drawn. Frequencies over 20,000 draws are within 0.015 of the probabilities."""
    from tunesmith.objectives.rl.rollout.generation import _RowSampler

    z = torch.tensor([[2.0, 1.0, 0.5, -1.0, -3.0]])
    for T, top_p in [(1.0, 1.0), (0.7, 1.0), (1.0, 0.8)]:
        p = torch.softmax(z[0] / T, -1)
        if top_p < 1.0:  # the nucleus: the most likely tokens whose mass first reaches top_p
            keep = (p.cumsum(-1) - p) < top_p
            p = torch.where(keep, p, torch.zeros_like(p))
            p = p / p.sum()
        rows = _RowSampler(list(range(20_000)), T, top_p)
        picks = rows(None, z.expand(20_000, -1)).argmax(-1)
        freq = torch.bincount(picks, minlength=5).float() / 20_000
        assert torch.allclose(freq, p, atol=0.015), (T, top_p, freq, p)
        assert (freq[p == 0] == 0).all()
