"""Scoring helpers: batched left-padded generation answers as one-by-one generation does, exact match
strips whitespace only, and the answer loss is the per-label-token cross-entropy computed by hand."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from tunesmith.config import DataConfig
from tunesmith.data.encode import IGNORE_INDEX, encode_conversation
from tunesmith.data.formats import Conversation
from tunesmith.evaluate.generation import chat_prompt, greedy_answers
from tunesmith.evaluate.loglik import answer_loss
from tunesmith.evaluate.metrics import exact_match

# Prompts of very different token lengths, so a batch of them is mostly left padding.
PROMPTS = ["Hi", "Sort these words: red, blue, green, moon, sun, tree, cloud, stone.", "Add 3 and 4.",
           "Repeat the words.\n\nriver light tree"]


@pytest.fixture(scope="module")
def model(tiny_dir):
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(tiny_dir).eval()


def test_batched_generation_matches_one_by_one(model, tok):
    """Left padding with an attention mask must not change any answer: each prompt's greedy
    tokens are the same alone (no padding) and in a batch padded to the longest prompt."""
    lengths = {len(tok(chat_prompt(tok, p), add_special_tokens=False)["input_ids"]) for p in PROMPTS}
    assert len(lengths) == len(PROMPTS)  # the batch really is padded
    batched = greedy_answers(model, tok, PROMPTS, max_new_tokens=12, batch_size=len(PROMPTS))
    alone = [greedy_answers(model, tok, [p], max_new_tokens=12)[0] for p in PROMPTS]
    assert batched == alone
    assert all(a for a in batched)  # an untrained model rarely emits EOS first; empty would hide a bug
    assert tok.padding_side == "right"  # restored for training


def test_generation_prompt_is_chatml_with_one_bos(tok):
    text = chat_prompt(tok, "Add 3 and 4.")
    assert text == "<s><|im_start|>user\nAdd 3 and 4.<|im_end|>\n<|im_start|>assistant\n"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert ids.count(tok.bos_token_id) == 1


def test_exact_match_strips_whitespace_only():
    """3 of 4 match: the trailing newline and leading space are stripped; case and the full stop count."""
    assert exact_match([" Emma bought a cup.\n", "Emma bought a cup", "emma bought a cup.", "x"],
                       ["Emma bought a cup.", "Emma bought a cup", "Emma bought a cup.", "x"]) == 0.75
    with pytest.raises(ValueError):
        exact_match(["a"], ["a", "b"])


def test_answer_loss_is_mean_cross_entropy_over_answer_tokens(model, tok, tmp_path):
    """Two rows: sum -log p(label) over every assistant token of both, divided by their count,
    computed here from plain logits, one row at a time."""
    rows = [{"instruction": "Add 3 and 4.", "input": "", "output": "3 plus 4 is 7."},
            {"instruction": "Repeat the words.", "input": "red sun", "output": "red sun"}]
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    total, count = 0.0, 0
    for r in rows:
        user = f"{r['instruction']}\n\n{r['input']}" if r["input"] else r["instruction"]
        conv = Conversation([{"role": "user", "content": user}, {"role": "assistant", "content": r["output"]}], "x")
        enc = encode_conversation(conv, tok)
        ids, labels = torch.tensor([enc.input_ids]), torch.tensor(enc.labels[1:])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1], dim=-1)  # (T-1, V)
        keep = labels != IGNORE_INDEX
        total += -logp[keep].gather(1, labels[keep, None]).sum().item()
        count += int(keep.sum())
    data = DataConfig(train=[str(path)], format="alpaca", max_length=256, packing=True)
    assert answer_loss(model, tok, data) == pytest.approx(total / count, rel=1e-5)
    assert answer_loss(model, tok, data.model_copy(update={"packing": False}), batch_size=1) == pytest.approx(total / count, rel=1e-5)
