"""Each format gives exact canonical messages; each bad row is reported at its file:line with a reason."""

import json
from pathlib import Path

import pytest

from tunesmith.data.formats import Conversation, Text, detect_format, load_examples, to_example
from tunesmith.data.readers import Row
from tunesmith.errors import ConfigError, DataError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def user(c):
    return {"role": "user", "content": c}


def bot(c):
    return {"role": "assistant", "content": c}


def system(c):
    return {"role": "system", "content": c}


def jsonl(path: Path, *records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


# --- each format, exactly ---------------------------------------------------------------------------

def test_alpaca_joins_instruction_and_input_and_keeps_system():
    p = ASSETS / "alpaca.jsonl"
    examples, report = load_examples([str(p)])
    assert examples == [
        Conversation([user("Give three primary colors."), bot("Red, yellow and blue.")], f"{p}:1"),
        Conversation([user("Translate to French.\n\nGood morning"), bot("Bonjour")], f"{p}:2"),
        Conversation([system("Answer tersely."), user("Name a prime."), bot("7")], f"{p}:4"),
    ]
    assert (report.rows, report.kept, report.skipped, report.formats) == (3, 3, {}, {str(p): "alpaca"})


def test_sharegpt_maps_from_value_to_roles():
    p = ASSETS / "sharegpt.json"
    examples, _ = load_examples([str(p)])
    assert examples == [
        Conversation([system("You are helpful."), user("Hi!"), bot("Hello. How can I help?")], f"{p}:[0]"),
        Conversation([user("2+2?"), bot("4"), user("And 3+3?"), bot("6")], f"{p}:[1]"),
    ]


def test_sharegpt_also_takes_role_content_turns_and_other_speaker_names():
    row = Row({"conversations": [{"role": "User", "content": "hi"}, {"from": "model", "value": "yo"}]}, "f:1")
    assert to_example(row, "sharegpt") == Conversation([user("hi"), bot("yo")], "f:1")


def test_messages_join_text_parts():
    p = ASSETS / "messages.jsonl"
    examples, _ = load_examples([str(p)], fmt="messages")
    assert examples == [
        Conversation([user("What is the capital of Italy?"), bot("Rome.")], f"{p}:1"),
        Conversation([system("Be brief."), user("Describe\nthe sky."), bot("Blue.")], f"{p}:2"),
    ]


def test_text_from_txt_and_jsonl(tmp_path):
    p = ASSETS / "text.txt"
    examples, _ = load_examples([str(p)])
    assert examples[0] == Text("The first paragraph\nspans two lines.", f"{p}:1")
    assert [e.where for e in examples] == [f"{p}:1", f"{p}:5", f"{p}:8"]
    q = jsonl(tmp_path / "t.jsonl", {"text": "hello"})
    assert load_examples([q])[0] == [Text("hello", f"{q}:1")]


def test_several_files_each_detected():
    paths = [str(ASSETS / "alpaca.jsonl"), str(ASSETS / "messages.jsonl")]
    examples, report = load_examples(paths)
    assert report.formats == {paths[0]: "alpaca", paths[1]: "messages"}
    assert (report.rows, report.kept, len(examples)) == (5, 5, 5)


# --- column mapping ---------------------------------------------------------------------------------

def test_columns_rename_csv_fields_to_alpaca():
    p = ASSETS / "qa.csv"
    examples, _ = load_examples([str(p)], columns={"instruction": "question", "output": "answer"})
    assert examples[1] == Conversation(
        [user("Write a haiku\nabout rain"), bot('Soft rain on the roof,\ndrops count the hours, "slowly".')], f"{p}:3"
    )


def test_dotted_columns_reach_into_nested_lists(tmp_path):
    p = jsonl(
        tmp_path / "seed.jsonl",
        {"instruction": "Antonym?", "instances": [{"input": "hot", "output": "cold"}, {"input": "x", "output": "y"}]},
        {"instruction": "Say hi.", "instances": [{"input": "", "output": "Hi."}]},
    )
    cols = {"input": "instances.0.input", "output": "instances.0.output"}
    examples, _ = load_examples([p], columns=cols)
    assert [e.messages for e in examples] == [[user("Antonym?\n\nhot"), bot("cold")], [user("Say hi."), bot("Hi.")]]
    second = to_example(Row({"instruction": "i", "instances": [{}, {"output": "o2"}]}, "f:9"), "alpaca", {"output": "instances.1.output"})
    assert second.messages == [user("i"), bot("o2")]


def test_mapped_column_missing_names_column_and_row(tmp_path):
    p = jsonl(tmp_path / "q.jsonl", {"question": "a", "answer": "b"}, {"question": "c", "solution": "d"})
    with pytest.raises(DataError, match=rf"^{p}:2: column 'answer' \(mapped to 'output'\) not found; .*this row has: question, solution"):
        load_examples([p], columns={"instruction": "question", "output": "answer"})


def test_dotted_column_out_of_range(tmp_path):
    row = Row({"instruction": "i", "instances": []}, "s.jsonl:4")
    with pytest.raises(DataError, match=r"^s.jsonl:4: column 'instances.0.output' \(mapped to 'output'\) not found"):
        to_example(row, "alpaca", {"output": "instances.0.output"})


# --- detection --------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "data, fmt",
    [
        ({"instruction": "i", "input": "", "output": "o"}, "alpaca"),
        ({"conversations": []}, "sharegpt"),
        ({"messages": [], "id": 3}, "messages"),
        ({"text": "t", "meta": {}}, "text"),
    ],
)
def test_detect_format(data, fmt):
    assert detect_format(Row(data, "f:1"), {}) == fmt


def test_detect_after_mapping():
    assert detect_format(Row({"question": "q", "answer": "a"}, "f:1"), {"instruction": "question", "output": "answer"}) == "alpaca"


def test_detect_unknown_lists_what_each_format_needs():
    message = (
        r"^f:1: the first row \(fields: question, answer\) fits no known format\. Set `data\.format`"
        r".*alpaca: 'instruction' and 'output'.*sharegpt: 'conversations'.*messages: 'messages'.*text: 'text'"
    )
    with pytest.raises(DataError, match=message):
        detect_format(Row({"question": "q", "answer": "a"}, "f:1"), {})


def test_detect_ambiguous():
    with pytest.raises(DataError, match=r"^f:1: .* fits several formats \(messages, text\)"):
        detect_format(Row({"messages": [], "text": "t"}, "f:1"), {})


# --- validation errors in raise mode, with exact locations --------------------------------------------

TURN = {"from": "human", "value": "hi"}
REPLY = {"from": "gpt", "value": "hello"}


@pytest.mark.parametrize(
    "fmt, data, message",
    [
        ("alpaca", {"instruction": "i"}, "missing 'output'; expected alpaca rows to have 'instruction' and 'output'"),
        ("alpaca", {"instruction": "  ", "output": "o"}, "empty 'instruction'; expected non-empty text"),
        ("alpaca", {"instruction": "i", "output": 42}, "'output' is not a string; expected text, got int"),
        ("text", {"text": ""}, "empty 'text'"),
        ("sharegpt", {"conversations": []}, r"'conversations' is empty or not a list"),
        ("sharegpt", {"conversations": [TURN, {"from": "gpt", "value": ""}]}, r"conversations\[1\]: empty 'value'; expected text in every turn"),
        ("sharegpt", {"conversations": [TURN, REPLY, {"from": "human"}]}, r"conversations\[2\]: turn has no 'value'"),
        ("sharegpt", {"conversations": [TURN, {"from": "robot", "value": "x"}]}, r"conversations\[1\]: unknown from 'robot'; expected one of system, user"),
        ("sharegpt", {"conversations": [TURN, TURN, REPLY]}, r"conversations\[1\]: 'user' turn where 'assistant' was due; expected turns alternating"),
        ("sharegpt", {"conversations": [REPLY]}, r"conversations\[0\]: 'assistant' turn where 'user' was due"),
        ("sharegpt", {"conversations": [TURN, REPLY, {"from": "system", "value": "s"}]}, r"conversations\[2\]: a system turn after the start"),
        ("sharegpt", {"conversations": [{"from": "system", "value": "s"}, TURN]}, "no assistant turn; expected at least one assistant reply"),
        ("sharegpt", {"conversations": [TURN, REPLY, TURN]}, "ends with a user turn; expected an assistant reply as the last turn"),
        ("messages", {"messages": [{"role": "user", "content": "q"}, {"role": "tool", "content": "r"}]}, r"messages\[1\]: unsupported role 'tool' \(tool calls are not supported yet\)"),
        ("messages", {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, r"messages\[0\]: non-text parts in 'content'"),
        ("messages", {"messages": [{"role": "user", "content": None}]}, r"messages\[0\]: 'content' is not a string"),
        ("messages", {"messages": ["hi"]}, r"messages\[0\]: turn is not an object"),
        ("messages", {"conversations": []}, "missing 'messages'"),
    ],
)
def test_bad_rows_raise_at_their_line(tmp_path, fmt, data, message):
    p = jsonl(tmp_path / "bad.jsonl", data)
    with pytest.raises(DataError, match=rf"^{p}:1: {message}"):
        load_examples([p], fmt=fmt)


def test_first_bad_row_raises_after_good_ones(tmp_path):
    good = {"conversations": [TURN, REPLY]}
    p = jsonl(tmp_path / "c.jsonl", good, good, {"conversations": [TURN, {"from": "gpt", "value": " "}, TURN, REPLY]})
    with pytest.raises(DataError, match=rf"^{p}:3: conversations\[1\]: empty 'value'"):
        load_examples([p])


def test_invalid_json_line_stops_load_at_its_line(tmp_path):
    p = tmp_path / "broken.jsonl"
    p.write_text('{"text": "a"}\n{"text": "b"\n')
    with pytest.raises(DataError, match=rf"^{p}:2: invalid JSON"):
        load_examples([str(p)], on_error="raise")
    # issue 16: under skip an unreadable line is a skipped row like any other (it used to stop the load)
    examples, report = load_examples([str(p)], on_error="skip")
    assert len(examples) == 1 and report.skipped == {"invalid JSON": 1}


# --- skip mode --------------------------------------------------------------------------------------

def test_skip_mode_counts_each_reason(tmp_path):
    good = {"instruction": "i", "output": "o"}
    p = jsonl(
        tmp_path / "a.jsonl",
        good, {"instruction": "i"}, good, {"instruction": "i", "output": ""}, {"instruction": "j"}, good,
    )
    examples, report = load_examples([p], on_error="skip")
    assert [e.where for e in examples] == [f"{p}:1", f"{p}:3", f"{p}:6"]
    assert (report.rows, report.kept) == (6, 3)
    assert report.skipped == {"missing 'output'": 2, "empty 'output'": 1}
    assert report.first_skipped == [f"{p}:2: missing 'output'", f"{p}:4: empty 'output'", f"{p}:5: missing 'output'"]
    assert report.summary().splitlines()[:2] == [f"read 6 rows from {p} (alpaca): kept 3, skipped 3", "  2 x missing 'output'"]


def test_skip_mode_keeps_only_five_examples_but_counts_all(tmp_path):
    p = jsonl(tmp_path / "m.jsonl", {"text": "ok"}, *[{"text": ""}] * 7)
    _, report = load_examples([p], on_error="skip")
    assert report.skipped == {"empty 'text'": 7}
    assert report.first_skipped == [f"{p}:{i}: empty 'text'" for i in range(2, 7)]


def test_skip_mode_with_every_row_bad_is_an_error(tmp_path):
    p = jsonl(tmp_path / "all.jsonl", {"text": ""}, {"text": " "})
    with pytest.raises(DataError, match=rf"^all 2 rows were skipped as invalid; first problems:\n  {p}:1: empty 'text'\n  {p}:2: empty 'text'"):
        load_examples([p], on_error="skip")


# --- nothing to load / bad arguments ----------------------------------------------------------------

def test_no_files_and_empty_files(tmp_path):
    with pytest.raises(DataError, match=r"no data files given; set `data.train`"):
        load_examples([])
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(DataError, match=rf"^{empty}: no rows found"):
        load_examples([str(empty)])


def test_unknown_format_and_on_error_are_config_errors():
    with pytest.raises(ConfigError, match=r"`data.format` is 'chatml'"):
        load_examples([str(ASSETS / "alpaca.jsonl")], fmt="chatml")
    with pytest.raises(ConfigError, match=r"`data.on_error` is 'ignore'"):
        load_examples([str(ASSETS / "alpaca.jsonl")], on_error="ignore")


# --- the real data sets, when this checkout has them ------------------------------------------------

@pytest.mark.skipif(not (SHARED_DATA / "gsm8k").is_dir(), reason="shared/data/gsm8k not present")
def test_gsm8k_loads_as_alpaca():
    p = SHARED_DATA / "gsm8k" / "train.jsonl"
    examples, report = load_examples([str(p)], columns={"instruction": "question", "output": "answer"})
    assert (report.rows, report.kept, report.formats) == (7473, 7473, {str(p): "alpaca"})
    assert examples[0].messages[0]["content"].startswith("Natalia sold clips to 48 of her friends")
    assert examples[0].messages[1]["content"].endswith("#### 72")


@pytest.mark.skipif(not (SHARED_DATA / "self-instruct-seed").is_dir(), reason="shared/data/self-instruct-seed not present")
def test_self_instruct_seed_loads_with_dotted_columns():
    p = SHARED_DATA / "self-instruct-seed" / "seed_tasks.jsonl"
    cols = {"input": "instances.0.input", "output": "instances.0.output"}
    examples, report = load_examples([str(p)], fmt="alpaca", columns=cols)
    assert (report.rows, report.kept) == (175, 175)
    assert examples[1].messages[0]["content"] == "What is the relation between the given pairs?\n\nNight : Day :: Right : Left"
