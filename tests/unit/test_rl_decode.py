"""The rollout's decode loop (objectives/rl/rollout/decode.py) against a full forward and against
transformers' `generate`, which the sampler used before: the same logits at every cached step
(left padding and a shared-prompt prefill included), the same greedy tokens, and the same seeded
sampled tokens (EOS, stop strings and truncation ending rows at different steps)."""

import pytest
import torch
from transformers import AutoModelForCausalLM, LogitsProcessorList

from tunesmith.objectives.rl.data import prompt_ids
from tunesmith.objectives.rl.rollout.decode import _PreallocatedLayer, decode, left_pad
from tunesmith.objectives.rl.rollout.generation import _cut_at_stop, _RowSampler, sample, step_seed


@pytest.fixture(scope="module")
def model(tiny_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()


def _prompts(tok):
    texts = ["Add 3 and 4.", "Spell the word tree, please, letter by letter.", "Hi"]
    p = [prompt_ids(tok, [{"role": "user", "content": t}]) for t in texts]
    return [p[0], p[0], p[1], p[1], p[1], p[2]]  # groups of a prompt (one prefill each) of different lengths


def _greedy(logits, rows):
    return logits.argmax(-1)


def test_cached_decode_logits_equal_a_full_forward(model, tok):
    prompts = _prompts(tok)
    toks, logits = decode(model, prompts, pad_id=tok.pad_token_id, max_new_tokens=6, pick=_greedy,
                          ended=lambda r, t: False, keep_logits=True)
    assert [len(t) for t in toks] == [6] * len(prompts)
    with torch.no_grad():
        for r, p in enumerate(prompts):
            full = model(input_ids=torch.tensor([p + toks[r][:-1]])).logits[0, len(p) - 1 :].float()  # no padding
            assert torch.allclose(torch.stack(logits[r]), full, atol=1e-5), r


def _generate(model, tok, prompts, max_new_tokens, eos_ids, processor=None, stop=()):
    """What the sampler did before (transformers' generate, one logits processor for the noise)."""
    ids, mask = left_pad(prompts, tok.pad_token_id, "cpu")
    kw = dict(stop_strings=list(stop), tokenizer=tok) if stop else {}
    gen = model.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=max_new_tokens,
                         eos_token_id=eos_ids, pad_token_id=tok.pad_token_id,
                         logits_processor=LogitsProcessorList([processor] if processor else []), **kw)
    out = []
    for toks in gen[:, ids.shape[1]:].tolist():
        end = next((k + 1 for k, t in enumerate(toks) if t in eos_ids), None)
        cut = _cut_at_stop(toks[: end or len(toks)], list(stop), tok)
        out.append(toks[: cut or end or max_new_tokens])
    return out


def test_greedy_tokens_equal_generates(model, tok):
    prompts = _prompts(tok)
    eos = list(range(3, len(tok), 7))  # many end tokens: rows end at different steps
    toks, _ = decode(model, prompts, pad_id=tok.pad_token_id, max_new_tokens=10, pick=_greedy,
                     ended=lambda r, t: t[-1] in eos)
    assert toks == _generate(model, tok, prompts, 10, eos)
    assert len({len(t) for t in toks}) > 1  # some rows did end early


@pytest.mark.parametrize("top_p", [1.0, 0.9])
def test_seeded_sampling_gives_generates_tokens(model, tok, top_p):
    """The same per-row streams as before: a row's generator draws once per token of its own
    completion, so rows that end early (skipped from then on) change nothing for the others."""
    prompts = _prompts(tok)
    eos = list(range(3, len(tok), 13))
    seeds = [step_seed(7, 2, i) for i in range(len(prompts))]
    old = _generate(model, tok, prompts, 12, eos, _RowSampler(seeds, 0.8, top_p))
    new = sample(model, prompts, tokenizer=tok, eos_ids=eos, pad_id=tok.pad_token_id, max_new_tokens=12,
                 temperature=0.8, top_p=top_p, stop=[], seed=7, step=2)
    assert [c.ids for c in new] == old
    assert len({len(t) for t in old}) > 1 and any(len(t) == 12 for t in old)  # EOS and truncation both happen
    assert [c.truncated for c in new] == [not (t[-1] in eos) for t in old]


def test_stop_strings_end_a_row_as_before(model, tok):
    prompts = _prompts(tok)
    free = sample(model, prompts, tokenizer=tok, eos_ids=[tok.pad_token_id], pad_id=tok.pad_token_id, max_new_tokens=10,
                  temperature=1.0, top_p=1.0, stop=[], seed=3)
    text = tok.decode(free[2].ids[:4])
    stop = next(c for c in reversed(text) if c.strip())  # a character the third row produces early
    seeds = [step_seed(3, 0, i) for i in range(len(prompts))]
    old = _generate(model, tok, prompts, 10, [tok.pad_token_id], _RowSampler(seeds, 1.0, 1.0), stop=[stop])
    new = sample(model, prompts, tokenizer=tok, eos_ids=[tok.pad_token_id], pad_id=tok.pad_token_id, max_new_tokens=10,
                 temperature=1.0, top_p=1.0, stop=[stop], seed=3)
    assert [c.ids for c in new] == old
    assert stop in tok.decode(new[2].ids) and stop not in tok.decode(new[2].ids[:-1]) and not new[2].truncated
    assert all(c.truncated == (stop not in tok.decode(c.ids)) for c in new)


def test_the_preallocated_cache_writes_in_place_and_refuses_to_overflow():
    k, v = torch.randn(2, 1, 3, 4), torch.randn(2, 1, 3, 4)
    layer = _PreallocatedLayer(k, v, capacity=5)
    buf = layer.kbuf.data_ptr()
    nk, nv = torch.randn(2, 1, 2, 4), torch.randn(2, 1, 2, 4)
    keys, values = layer.update(nk, nv)
    assert torch.equal(keys, torch.cat([k, nk], 2)) and torch.equal(values, torch.cat([v, nv], 2))
    assert keys.data_ptr() == buf and layer.get_seq_length() == 5
    with pytest.raises(RuntimeError, match="cache full"):
        layer.update(nk[:, :, :1], nv[:, :, :1])


def test_the_loop_stops_when_every_row_has_ended(model, tok):
    """Rows ended by a stop string (or EOS) are not decoded further: when all end at their first
    token the model runs once (the prefill)."""
    every_text = sorted({tok.decode([i]) for i in range(len(tok))} - {""})  # any token's text is a stop string
    calls = []
    hook = model.register_forward_pre_hook(lambda mod, args: calls.append(1))
    try:
        done = sample(model, _prompts(tok), tokenizer=tok, eos_ids=[tok.pad_token_id], pad_id=tok.pad_token_id,
                      max_new_tokens=8, temperature=1.0, top_p=1.0, stop=every_text, seed=0)
        assert all(len(c.ids) == 1 and not c.truncated for c in done) and len(calls) == 1
        calls.clear()
        sample(model, _prompts(tok), tokenizer=tok, eos_ids=list(range(len(tok))), pad_id=tok.pad_token_id,
               max_new_tokens=8, temperature=1.0, top_p=1.0, stop=[], seed=0)
        assert len(calls) == 1
    finally:
        hook.remove()


def test_the_noise_stream_is_fixed():
    """Each row's perturbation is z / T + Gumbel from its own generator's fp64 uniforms, drawn in
    row order, one (V,) vector per call: the stream resume and the 2-process split rely on."""
    z = torch.randn(3, 11)
    rs = _RowSampler([5, 6, 7], 0.7, 1.0)
    got = [rs.perturb(z[[0, 2]], [0, 2]), rs.perturb(z[[2]], [2])]
    gens = [torch.Generator().manual_seed(s) for s in (5, 6, 7)]
    def want(rows, zz):
        u = torch.stack([torch.rand(11, generator=gens[r], dtype=torch.float64) for r in rows])
        return zz / 0.7 + (-torch.log(-torch.log(u.clamp(min=1e-300)))).float()
    assert torch.equal(got[0], want([0, 2], z[[0, 2]])) and torch.equal(got[1], want([2], z[[2]]))
