"""Log-likelihood scoring and generation options on the tiny model: a choice's score equals the
log-probabilities summed by hand from one unpadded forward pass, padding a batch changes nothing,
stop strings cut answers, and sampling is reproducible by seed."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from tunesmith.evaluate.generation import chat_prompt, generate
from tunesmith.evaluate.loglik import continuation_logprobs, split_pair
from tunesmith.evaluate.runner import GenOptions, run_task
from tunesmith.evaluate.tasks import Example, Task

PAIRS = [("Question: What is red?\nAnswer:", " a colour"), ("The cat", " sat on the mat and slept all day long"),
         ("Hi", " there")]


@pytest.fixture(scope="module")
def model(tiny_dir):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_dir).eval()


def test_choice_logprob_by_hand(model, tok):
    """sum over continuation tokens of log_softmax(logits[t-1])[token t], from a single unpadded row."""
    for ctx, cont in PAIRS:
        c, x = split_pair(tok, ctx, cont)
        ids = torch.tensor([c + x])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0], -1)
        by_hand = sum(logp[len(c) + i - 1, t].item() for i, t in enumerate(x))
        assert continuation_logprobs(model, tok, [(ctx, cont)], batch_size=1)[0] == pytest.approx(by_hand, abs=1e-4)


def test_batching_with_padding_changes_nothing(model, tok):
    alone = [continuation_logprobs(model, tok, [p], batch_size=1)[0] for p in PAIRS]
    batched = continuation_logprobs(model, tok, PAIRS, batch_size=3)
    assert batched == pytest.approx(alone, abs=1e-4)


def test_context_is_tokenized_once_for_every_choice(tok):
    """Trailing space moves to the continuation, so both choices share the identical context ids."""
    a, _ = split_pair(tok, "Answer: ", "yes")
    b, _ = split_pair(tok, "Answer: ", "no")
    assert a == b and a[0] == tok.bos_token_id and a.count(tok.bos_token_id) == 1


def test_stop_strings_cut_the_answer(model, tok):
    texts = [chat_prompt(tok, "Repeat the words.\n\nred blue")]
    full = generate(model, tok, texts, max_new_tokens=16)[0]
    assert len(full) > 3
    stop = full[2:4]  # a string the greedy answer is known to contain
    cut = generate(model, tok, texts, max_new_tokens=16, stop=[stop])[0]
    assert cut == full[: full.find(stop)]


def test_sampling_is_reproducible_by_seed(model, tok):
    texts = [chat_prompt(tok, p) for p in ("Add 3 and 4.", "Spell the word sun.")]
    a = generate(model, tok, texts, max_new_tokens=12, do_sample=True, temperature=1.5, seed=7)
    b = generate(model, tok, texts, max_new_tokens=12, do_sample=True, temperature=1.5, seed=7)
    c = generate(model, tok, texts, max_new_tokens=12, do_sample=True, temperature=1.5, seed=8)
    assert a == b and a != c


def test_multiple_choice_task_picks_the_likeliest_choice(model, tok):
    """Gold is whichever choice the model itself scores higher, so acc must be 1 for every example;
    a task whose gold is the other choice must score 0."""
    pairs = [("The cat", [" sat", " zzqx"]), ("Hi", [" there", " 123 456"])]
    lps = [continuation_logprobs(model, tok, [(c, x) for x in xs]) for c, xs in pairs]
    gold = [int(lp[1] > lp[0]) for lp in lps]
    task = Task("t", "multiple_choice", "acc", [Example(str(i), c, choices=xs, gold=g) for i, ((c, xs), g) in enumerate(zip(pairs, gold))])
    assert run_task(model, tok, task, GenOptions(progress=False))["scores"]["acc"] == 1.0
    for ex in task.examples:
        ex.gold = 1 - ex.gold
    assert run_task(model, tok, task, GenOptions(progress=False))["scores"]["acc"] == 0.0


def test_one_token_choices_share_a_row_and_score_as_alone(model, tok):
    """Single-token choices after one question have the same input (the question) and share one
    row; each must still score exactly as when run alone."""
    ctx = "The cat sat on"
    words = [w for w in (" the", " a", " it", " and", " of", " to", " in", " is", " red", " dog") if len(split_pair(tok, ctx, w)[1]) == 1]
    assert len(words) >= 3
    pairs = [(ctx, w) for w in words] + [("Hi", " there")]
    together = continuation_logprobs(model, tok, pairs, batch_size=8)
    alone = [continuation_logprobs(model, tok, [p], batch_size=1)[0] for p in pairs]
    assert together == pytest.approx(alone, abs=1e-4)
    assert len(set(round(x, 4) for x in together[: len(words)])) == len(words)  # different scores, not one copied
