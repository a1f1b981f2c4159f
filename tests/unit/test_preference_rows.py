"""Preference / KTO row parsing into the canonical form, and its errors (file:line, what to do)."""

import gzip
import json
from pathlib import Path

import pytest

from tunesmith.data.preference import (KTOExample, PreferencePair, load_preference, parse_hh, parse_kto_row,
                                       parse_preference_row)
from tunesmith.data.readers import Row
from tunesmith.errors import DataError

U = lambda t: {"role": "user", "content": t}  # noqa: E731
A = lambda t: {"role": "assistant", "content": t}  # noqa: E731
HH_DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "hh-rlhf" / "harmless-base-test.jsonl.gz"


def row(data, where="f.jsonl:3"):
    return Row(data, where)


def test_explicit_strings():
    p = parse_preference_row(row({"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."}))
    assert p.to_dict() == {"prompt": [U("Hi?")], "chosen": [A("Hello.")], "rejected": [A("Go away.")]}
    assert p.where == "f.jsonl:3"


def test_explicit_message_lists_and_sharegpt_keys():
    p = parse_preference_row(row({
        "prompt": [{"role": "system", "content": "Be nice."}, {"from": "human", "value": "Hi?"}],
        "chosen": [{"role": "assistant", "content": "Hello."}],
        "rejected": [{"from": "gpt", "value": "No."}],
    }))
    assert p.prompt == [{"role": "system", "content": "Be nice."}, U("Hi?")]
    assert p.chosen == [A("Hello.")] and p.rejected == [A("No.")]


def test_implicit_prompt_is_the_shared_prefix():
    chosen = [U("a"), A("b"), U("c"), A("good")]
    rejected = [U("a"), A("b"), U("c"), A("bad")]
    p = parse_preference_row(row({"chosen": chosen, "rejected": rejected}))
    assert p.prompt == [U("a"), A("b"), U("c")]
    assert p.chosen == [A("good")] and p.rejected == [A("bad")]


def test_hh_transcript_shared_prefix_becomes_prompt():
    chosen = "\n\nHuman: What is 2+2?\n\nAssistant: Four?\n\nHuman: Sure?\n\nAssistant: Yes, 4."
    rejected = "\n\nHuman: What is 2+2?\n\nAssistant: Four?\n\nHuman: Sure?\n\nAssistant: No idea."
    p = parse_preference_row(row({"chosen": chosen, "rejected": rejected}))
    assert p.prompt == [U("What is 2+2?"), A("Four?"), U("Sure?")]
    assert p.chosen == [A("Yes, 4.")] and p.rejected == [A("No idea.")]


def test_hh_merges_repeated_speaker_and_rejects_empty_turn():
    assert parse_hh("\n\nHuman: a\n\nHuman: b\n\nAssistant: c", "x:1") == [U("a\n\nb"), A("c")]
    with pytest.raises(DataError, match=r"x:1: an empty Assistant turn"):
        parse_hh("\n\nHuman: a\n\nAssistant:", "x:1")


def test_hh_that_differs_before_the_last_user_turn_still_splits():
    # Responses may be several turns: the prompt is the shared part up to the last shared user turn.
    p = parse_preference_row(row({"chosen": "\n\nHuman: q\n\nAssistant: x\n\nHuman: ok\n\nAssistant: y",
                                  "rejected": "\n\nHuman: q\n\nAssistant: z"}))
    assert p.prompt == [U("q")]
    assert p.chosen == [A("x"), U("ok"), A("y")] and p.rejected == [A("z")]


@pytest.mark.parametrize("data, message", [
    ({"prompt": "q", "chosen": "a"}, r"f.jsonl:3: missing 'rejected'; expected preference rows"),
    ({"prompt": "q", "chosen": "", "rejected": "b"}, r"f.jsonl:3: empty 'chosen'"),
    ({"prompt": "q", "chosen": "a", "rejected": "a"}, r"f.jsonl:3: chosen and rejected are identical"),
    ({"prompt": 5, "chosen": "a", "rejected": "b"}, r"'prompt' is not a string or message list"),
    ({"chosen": "plain text", "rejected": "other"}, r"strings but there is no 'prompt'"),
    ({"prompt": [A("x")], "chosen": "a", "rejected": "b"}, r"'assistant' turn where 'user' was due"),
    ({"prompt": "q", "chosen": [U("x")], "rejected": "b"}, r"'chosen' starts with a user turn"),
    ({"chosen": [U("a"), A("b")], "rejected": [U("c"), A("d")]}, r"share no prompt ending with a user turn"),
    ({"prompt": "q", "chosen": [{"role": "robot", "content": "x"}], "rejected": "b"}, r"unknown role 'robot'"),
])
def test_bad_pair_rows_name_the_row_and_the_fix(data, message):
    with pytest.raises(DataError, match=message):
        parse_preference_row(row(data))


def test_columns_rename_fields():
    p = parse_preference_row(row({"q": "Hi?", "good": "Yes.", "bad": "No."}),
                             columns={"prompt": "q", "chosen": "good", "rejected": "bad"})
    assert p == PreferencePair([U("Hi?")], [A("Yes.")], [A("No.")], "f.jsonl:3")


@pytest.mark.parametrize("label, expected", [(True, True), (False, False), (1, True), (0, False), ("true", True), ("False", False)])
def test_kto_rows(label, expected):
    k = parse_kto_row(row({"prompt": "q", "completion": "a", "label": label}))
    assert k == KTOExample([U("q")], [A("a")], expected, "f.jsonl:3")
    assert k.to_dict() == {"prompt": [U("q")], "completion": [A("a")], "label": expected}


@pytest.mark.parametrize("data, message", [
    ({"prompt": "q", "completion": "a"}, r"missing 'label'; expected KTO rows"),
    ({"prompt": "q", "completion": "a", "label": "maybe"}, r"'label' is 'maybe'; expected true"),
    ({"prompt": "q", "completion": "a", "label": 2}, r"'label' is 2"),
])
def test_bad_kto_rows(data, message):
    with pytest.raises(DataError, match=message):
        parse_kto_row(row(data))


def test_load_preference_raise_and_skip(tmp_path):
    f = tmp_path / "p.jsonl"
    rows = [{"prompt": "q", "chosen": "a", "rejected": "b"}, {"prompt": "q", "chosen": "a"},
            {"prompt": "r", "chosen": "c", "rejected": "d"}]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=rf"{f}:2: missing 'rejected'"):
        load_preference([str(f)])
    pairs, report = load_preference([str(f)], on_error="skip")
    assert [p.where for p in pairs] == [f"{f}:1", f"{f}:3"]
    assert report.rows == 3 and report.kept == 2 and report.skipped == {"missing 'rejected'": 1}


@pytest.mark.skipif(not HH_DATA.is_file(), reason="../shared/data (HH-RLHF) is not present")
def test_real_hh_rlhf_rows_parse():
    with gzip.open(HH_DATA, "rt") as fh:
        lines = [json.loads(next(fh)) for _ in range(200)]
    ok = 0
    for i, data in enumerate(lines):
        try:
            p = parse_preference_row(row(data, f"hh:{i + 1}"))
        except DataError:
            continue
        ok += 1
        assert p.prompt[-1]["role"] == "user" and p.chosen[0]["role"] == "assistant"
    assert ok >= 180  # a few HH rows have empty or identical responses; they are errors, not silently kept
