"""Rendering and label masks (PITFALLS 3, 4, 5, 8): what the model learns is exactly the assistant text."""

import pytest

from tunesmith.data.encode import IGNORE_INDEX, encode_conversation, encode_text, resolve_chat_template
from tunesmith.data.formats import Conversation, Text
from tunesmith.data.packing import collate, unpacked
from tunesmith.errors import UserError

CONV = Conversation(
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Name a red fruit."},
        {"role": "assistant", "content": "An apple."},
        {"role": "user", "content": "And a yellow one?"},
        {"role": "assistant", "content": "A banana, of course."},
    ],
    where="t.jsonl:1",
)


def _labelled_text(tok, enc) -> list[str]:
    """Decode each maximal run of labelled tokens."""
    runs, cur = [], []
    for tid, lab in zip(enc.input_ids, enc.labels):
        if lab != IGNORE_INDEX:
            assert lab == tid
            cur.append(tid)
        elif cur:
            runs.append(tok.decode(cur))
            cur = []
    if cur:
        runs.append(tok.decode(cur))
    return runs


def test_labels_are_exactly_the_assistant_turns(tok):
    enc = encode_conversation(CONV, tok)
    assert _labelled_text(tok, enc) == ["An apple.<|im_end|>", "A banana, of course.<|im_end|>"]


def test_train_on_prompt_labels_everything(tok):
    enc = encode_conversation(CONV, tok, train_on_prompt=True)
    assert enc.labels == enc.input_ids


def test_exactly_one_bos_and_eos_is_the_last_label(tok):
    enc = encode_conversation(CONV, tok)
    assert enc.input_ids.count(tok.bos_token_id) == 1 and enc.input_ids[0] == tok.bos_token_id
    assert enc.input_ids[-1] == tok.eos_token_id and enc.labels[-1] == tok.eos_token_id
    assert tok.pad_token_id != tok.eos_token_id


def test_collated_last_real_token_is_an_eos_label(tok):
    """PITFALLS 3: padding must never mask the final EOS, even when pad ids fill the row."""
    short = Conversation([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}], "t:2")
    rows = unpacked([encode_conversation(CONV, tok), encode_conversation(short, tok)])
    batch = collate(rows, tok.pad_token_id)
    for b, row in enumerate(rows):
        last = len(row) - 1
        assert batch["input_ids"][b, last] == tok.eos_token_id
        assert batch["labels"][b, last] == tok.eos_token_id
        assert (batch["labels"][b, last + 1 :] == IGNORE_INDEX).all()


def test_template_bos_plus_tokenizer_bos_is_caught(tok):
    """PITFALLS 5: a template whose text already holds BOS, tokenized with special tokens, doubles it."""
    rendered = tok.apply_chat_template(CONV.messages, tokenize=False)
    assert tok(rendered, add_special_tokens=True)["input_ids"][:2] == [tok.bos_token_id] * 2  # the trap is real
    assert tok(rendered, add_special_tokens=False)["input_ids"].count(tok.bos_token_id) == 1


def test_non_prefix_stable_template_is_an_error(tok):
    import copy

    t = copy.deepcopy(tok)
    # Renders the number of messages up front: earlier prefixes are not prefixes of later renders.
    t.chat_template = "{{ messages|length }}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    with pytest.raises(UserError, match="prefix by prefix"):
        encode_conversation(CONV, t)


def test_chat_template_resolution(tok):
    import copy

    t = copy.deepcopy(tok)
    t.chat_template = None
    tmpl = resolve_chat_template(t, "auto")
    assert "<|im_start|>" in tmpl and t.chat_template == tmpl
    with pytest.raises(UserError, match="data.chat_template"):
        resolve_chat_template(t, "not-a-template")


def test_text_gets_bos_and_eos_and_is_split_into_blocks(tok):
    blocks = encode_text(Text("the red fox walks to the market " * 20, "d.txt:1"), tok, max_length=32)
    ids = [i for b in blocks for i in b.input_ids]
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert all(len(b) <= 32 for b in blocks) and len(blocks) > 1
    assert all(b.labels == b.input_ids for b in blocks)
    assert tok.decode(ids[1:-1]) == "the red fox walks to the market " * 20
