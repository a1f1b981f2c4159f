"""Preference tokenization and batching: PITFALLS 6 (shared prompt ids), keep-end truncation,
the packed layout, KTO's mismatched pairs and its batch-size rule (PITFALLS 10)."""

import pytest

from tunesmith.config import load_config
from tunesmith.data.encode import IGNORE_INDEX, resolve_chat_template
from tunesmith.data.preference import KTOExample, PreferencePair
from tunesmith.data.preference_encode import (EncodedKTO, EncodedPair, collate_kto, collate_pairs, encode_kto,
                                              encode_pair, pack_sequences, pack_shared_prompt, truncate)
from tunesmith.errors import ConfigError, DataError

U = lambda t: {"role": "user", "content": t}  # noqa: E731
A = lambda t: {"role": "assistant", "content": t}  # noqa: E731


@pytest.fixture()
def chat_tok(tok):
    resolve_chat_template(tok, "auto")
    return tok


def test_chosen_and_rejected_share_identical_prompt_ids(chat_tok):
    """PITFALLS 6: the responses start with different characters that BPE could merge with the
    prompt's last characters; the prompt is tokenized once, so both sequences begin with the same ids,
    and those ids are exactly the tokenized prompt rendered with the generation prompt."""
    pair = PreferencePair([U("Say it")], [A("yes.")], [A("Nope, never.")], "t:1")
    enc = encode_pair(pair, chat_tok)
    prompt_text = chat_tok.apply_chat_template([U("Say it")], tokenize=False, add_generation_prompt=True)
    assert enc.prompt_ids == chat_tok(prompt_text, add_special_tokens=False)["input_ids"]
    (p1, c), (p2, r) = enc.sequences()
    assert p1 == p2 == enc.prompt_ids
    # Each response is the continuation of the prompt and ends with the end-of-turn token (a label).
    eot = chat_tok.convert_tokens_to_ids("<|im_end|>")
    assert c[-1] == eot and r[-1] == eot
    assert chat_tok.decode(c).startswith("yes.") and chat_tok.decode(r).startswith("Nope, never.")


def test_kto_encoding_matches_pair_encoding(chat_tok):
    pair = encode_pair(PreferencePair([U("q")], [A("good")], [A("bad")], "t:1"), chat_tok)
    k = encode_kto(KTOExample([U("q")], [A("good")], True, "t:2"), chat_tok)
    assert k.prompt_ids == pair.prompt_ids and k.completion_ids == pair.chosen_ids and k.label is True


def test_truncation_keeps_the_end_of_prompt_and_responses():
    """prompt [1..6] with max_prompt_length 4 -> [3, 4, 5, 6]; max_length 7 leaves 3 tokens per
    response: [10..14] -> [12, 13, 14] (its end, with the EOS), [20, 21] fits unchanged."""
    prompt, (a, b) = truncate([1, 2, 3, 4, 5, 6], [[10, 11, 12, 13, 14], [20, 21]], 4, 7, "truncate", "t:1")
    assert prompt == [3, 4, 5, 6] and a == [12, 13, 14] and b == [20, 21]
    assert truncate([1, 2, 3, 4, 5, 6], [[10, 11, 12, 13, 14]], 4, 7, "drop", "t:1") is None
    with pytest.raises(DataError, match=r"t:1: 9 tokens \(prompt cut to 4\) > data.max_length 7"):
        truncate([1, 2, 3, 4, 5, 6], [[10, 11, 12, 13, 14]], 4, 7, "error", "t:1")
    assert truncate([1, 2], [[3]], 4, 7, "error", "t:1") == ([1, 2], [[3]])


def test_pack_sequences_layout():
    """Two sequences (prompt [5, 6] + [7], prompt [5, 6] + [8, 9]) -> one row of 5 tokens padded to 8:
    positions restart at each sequence, only response tokens are labels, ends = [2, 6]."""
    b = pack_sequences([([5, 6], [7]), ([5, 6], [8, 9])], pad_id=0)
    assert b["input_ids"].tolist() == [[5, 6, 7, 5, 6, 8, 9, 0]]
    assert b["labels"].tolist() == [[IGNORE_INDEX, IGNORE_INDEX, 7, IGNORE_INDEX, IGNORE_INDEX, 8, 9, IGNORE_INDEX]]
    assert b["position_ids"].tolist() == [[0, 1, 2, 0, 1, 2, 3, 4]]
    assert b["seq_index"].tolist() == [[0, 0, 0, 1, 1, 1, 1, 1]]
    assert b["ends"].tolist() == [2, 6]


def test_collate_pairs_shares_the_prompt():
    """Pair a: prompt [1, 2], chosen [3], rejected [4, 5]; pair b: prompt [6], chosen [7, 8], rejected [9].
    One row per pair, padded to 8; rejected positions restart where the prompt ends (a: 2, 3; b: 1);
    the first token of each response is predicted from the prompt's last row (a: row 1, b: row 8 + 0),
    later ones from the row before them; rejected never attends to chosen."""
    rows = [EncodedPair([1, 2], [3], [4, 5], "a"), EncodedPair([6], [7, 8], [9], "b", id=7)]
    b = collate_pairs(rows, pad_id=0)
    assert b["input_ids"].tolist() == [[1, 2, 3, 4, 5, 0, 0, 0], [6, 7, 8, 9, 0, 0, 0, 0]]
    assert b["position_ids"][0, :5].tolist() == [0, 1, 2, 2, 3] and b["position_ids"][1, :4].tolist() == [0, 1, 2, 1]
    assert b["src"].tolist() == [1, 1, 3, 8, 9, 8]
    assert b["tgt"].tolist() == [3, 4, 5, 7, 8, 9]
    assert b["seq"].tolist() == [0, 1, 1, 2, 2, 3]
    assert b["ends"].tolist() == [2, 4, 10, 11]
    m = b["attention_mask"][0, 0]
    assert m[2].nonzero().flatten().tolist() == [0, 1, 2]  # chosen: prompt + itself
    assert m[3].nonzero().flatten().tolist() == [0, 1, 3]  # rejected's first token: prompt, not chosen
    assert m[4].nonzero().flatten().tolist() == [0, 1, 3, 4]
    assert m[6].nonzero().flatten().tolist() == [6]  # padding sees only itself (no all-masked row)
    assert b["row_ids"].tolist() == [-1, 7]  # the rows of a precomputed reference table


def test_short_pairs_share_a_row():
    """Pair lengths 6, 3, 3, capacity 6 (the longest): first-fit decreasing puts pair a alone in
    row 0 and pairs b and c together in row 1 (c at offset 3, flat 8 + 3 = 11); positions restart
    per pair, and c attends only to itself."""
    b = pack_shared_prompt([([1, 2], [3, 4], [5, 6]), ([7], [8], [9]), ([10], [11], [12])], pad_id=0)
    assert b["input_ids"].tolist() == [[1, 2, 3, 4, 5, 6, 0, 0], [7, 8, 9, 10, 11, 12, 0, 0]]
    assert b["position_ids"][1, :6].tolist() == [0, 1, 1, 0, 1, 1]
    assert b["src"].tolist() == [1, 2, 1, 4, 8, 8, 11, 11]
    assert b["tgt"].tolist() == [3, 4, 5, 6, 8, 9, 11, 12]
    assert b["seq"].tolist() == [0, 0, 1, 1, 2, 3, 4, 5]
    assert b["ends"].tolist() == [3, 5, 9, 10, 12, 13]
    m = b["attention_mask"][1, 0]
    assert m[3].nonzero().flatten().tolist() == [3] and m[5].nonzero().flatten().tolist() == [3, 5]


def test_kto_collate_builds_mismatched_pairs():
    """Examples (x0, y0), (x1, y1), (x2, y2) -> KL sequences (x0, y1), (x1, y2), (x2, y0)."""
    rows = [EncodedKTO([10 * i], [10 * i + 1], i % 2 == 0, f"r{i}") for i in range(3)]
    b = collate_kto(rows, pad_id=0)
    assert b["input_ids"][0, :12].tolist() == [0, 1, 10, 11, 20, 21, 0, 11, 10, 21, 20, 1]
    assert b["kto_labels"].tolist() == [True, False, True]


def test_kto_batch_of_one_is_an_error(tiny_dir):
    """PITFALLS 10: the KL estimate needs mismatched pairs, so a per-device batch of 1 is refused
    in the config (before anything loads) and in the collator."""
    with pytest.raises(ConfigError, match=r"`train.micro_batch_size` must be >= 2 \(PITFALLS 10\)"):
        load_config(None, [f"model.path={tiny_dir}", "method=kto", "train.micro_batch_size=1"])
    with pytest.raises(DataError, match="at least 2 examples per micro-batch"):
        collate_kto([EncodedKTO([1], [2], True, "r")], pad_id=0)


def test_preference_config_errors(tiny_dir):
    base = [f"model.path={tiny_dir}", "method=dpo"]
    # The default prompt budget follows data.max_length (issue 16); only an explicit one can be too long.
    assert load_config(None, base + ["data.max_length=256"]).prompt_length() == 128
    with pytest.raises(ConfigError, match=r"`preference.max_prompt_length` \(512\) must be < `data.max_length` \(256\)"):
        load_config(None, base + ["data.max_length=256", "preference.max_prompt_length=512"])
    with pytest.raises(ConfigError, match=r"set `data.format: auto`"):
        load_config(None, base + ["data.format=alpaca"])
    with pytest.raises(ConfigError, match=r"preference.loss"):
        load_config(None, base + ["preference.loss=dpo2"])
    assert load_config(None, base + ["preference.loss=ipo"]).preference.loss == "ipo"
