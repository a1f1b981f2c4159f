"""Every reader yields the exact records with a location a person can find: file:line or file:row i."""

import gzip
import json
from pathlib import Path

import pytest

from tunesmith.data import readers
from tunesmith.data.readers import Row, read_rows
from tunesmith.errors import DataError

ASSETS = Path(__file__).resolve().parents[1] / "assets"
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def rows_of(path):
    return [(r.data, r.where) for r in read_rows(path)]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# --- JSONL ------------------------------------------------------------------------------------------

def test_jsonl_rows_and_physical_line_numbers_skipping_blank_lines():
    p = ASSETS / "alpaca.jsonl"
    got = rows_of(p)
    assert [w for _, w in got] == [f"{p}:1", f"{p}:2", f"{p}:4"]  # line 3 is blank
    assert got[1][0] == {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"}


def test_jsonl_gz_and_ndjson_read_the_same_rows(tmp_path):
    lines = '{"text": "a"}\n  \n{"text": "b\\nc"}\n'
    gz = tmp_path / "t.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as f:
        f.write(lines)
    nd = write(tmp_path / "t.ndjson", lines)
    assert rows_of(gz) == [({"text": "a"}, f"{gz}:1"), ({"text": "b\nc"}, f"{gz}:3")]
    assert [d for d, _ in rows_of(nd)] == [{"text": "a"}, {"text": "b\nc"}]


def test_jsonl_invalid_json_names_the_physical_line(tmp_path):
    p = write(tmp_path / "bad.jsonl", '{"text": "ok"}\n\n{"text": "cut off\n')
    it = read_rows(p)
    assert next(it).data == {"text": "ok"}  # rows before the bad line still stream
    with pytest.raises(DataError, match=rf"^{p}:3: invalid JSON \(Unterminated string .* at column 10\)"):
        next(it)


def test_jsonl_non_object_line_is_an_error(tmp_path):
    p = write(tmp_path / "list.jsonl", '{"text": "ok"}\n["text", "x"]\n')
    with pytest.raises(DataError, match=rf"^{p}:2: expected a JSON object {{...}} on each line, got an array"):
        rows_of(p)


def test_jsonl_with_byte_order_mark_and_crlf(tmp_path):
    p = tmp_path / "bom.jsonl"
    p.write_bytes(b'\xef\xbb\xbf{"text": "a"}\r\n{"text": "b"}\r\n')
    assert rows_of(p) == [({"text": "a"}, f"{p}:1"), ({"text": "b"}, f"{p}:2")]


def test_non_utf8_text_is_a_data_error(tmp_path):
    p = tmp_path / "latin1.jsonl"
    p.write_bytes('{"text": "caf\u00e9"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match=rf"^{p}:1: not UTF-8 text .*re-save the file as UTF-8"):
        rows_of(p)


# --- JSON -------------------------------------------------------------------------------------------

def test_json_array_elements_are_indexed_from_zero():
    p = ASSETS / "sharegpt.json"
    got = rows_of(p)
    assert [w for _, w in got] == [f"{p}:[0]", f"{p}:[1]"]
    assert got[1][0]["conversations"][3] == {"from": "gpt", "value": "6"}


def test_json_object_with_one_list_of_records(tmp_path):
    p = tmp_path / "wrapped.json.gz"
    with gzip.open(p, "wt", encoding="utf-8") as f:
        json.dump({"version": 2, "data": [{"text": "a"}, {"text": "b"}]}, f)
    assert rows_of(p) == [({"text": "a"}, f"{p}:data[0]"), ({"text": "b"}, f"{p}:data[1]")]


def test_json_syntax_error_gives_line_and_column(tmp_path):
    p = write(tmp_path / "bad.json", '[\n  {"text": "a"},\n  {"text" "b"}\n]\n')
    with pytest.raises(DataError, match=rf"^{p}:3:11: invalid JSON \(Expecting ':' delimiter\)"):
        rows_of(p)


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"a": [1], "b": [2]}, "found an object with keys holding lists: a, b"),
        ({"name": "x"}, "found an object with keys: name"),
        ("just a string", r"expected a JSON array of records \[{...}, ...\], got a string"),
        ({"conversations": [{"from": "human", "value": "hi"}]}, r'looks like a single record \({"conversations": \[...\]}\)'),
    ],
)
def test_json_without_a_list_of_records_explains(tmp_path, doc, message):
    p = write(tmp_path / "odd.json", json.dumps(doc))
    with pytest.raises(DataError, match=rf"^{p}: .*{message}"):
        rows_of(p)


def test_json_array_element_that_is_not_an_object(tmp_path):
    p = write(tmp_path / "mixed.json", '[{"text": "a"}, 3]')
    with pytest.raises(DataError, match=rf"^{p}:\[1\]: expected a JSON object {{...}} for each record, got a number"):
        rows_of(p)


# --- CSV / TSV --------------------------------------------------------------------------------------

def test_csv_rows_start_at_their_physical_line_with_multiline_quoted_fields():
    p = ASSETS / "qa.csv"
    assert rows_of(p) == [
        ({"question": "What is 2+2?", "answer": "4"}, f"{p}:2"),
        ({"question": "Write a haiku\nabout rain", "answer": 'Soft rain on the roof,\ndrops count the hours, "slowly".'}, f"{p}:3"),
        ({"question": "Capital of Peru?", "answer": "Lima"}, f"{p}:6"),  # the record above spans lines 3-5
    ]


def test_tsv_with_blank_line_keeps_line_numbers(tmp_path):
    p = write(tmp_path / "t.tsv", "text\tlabel\nhello, world\t1\n\nbye\t0\n")
    assert rows_of(p) == [({"text": "hello, world", "label": "1"}, f"{p}:2"), ({"text": "bye", "label": "0"}, f"{p}:4")]


def test_csv_ragged_row_is_an_error_at_its_line(tmp_path):
    p = write(tmp_path / "r.csv", "question,answer\nok,1\n3, 4, or 5?,5\n")
    with pytest.raises(DataError, match=rf"^{p}:3: 4 fields but the header \(line 1\) has 2; quote fields"):
        rows_of(p)


def test_csv_repeated_header_name_is_an_error(tmp_path):
    p = write(tmp_path / "h.csv", "text,text\na,b\n")
    with pytest.raises(DataError, match=rf"^{p}:1: the header row has repeated column names \['text'\]"):
        rows_of(p)


# --- TXT --------------------------------------------------------------------------------------------

def test_txt_paragraphs_are_rows_at_their_first_line():
    p = ASSETS / "text.txt"
    assert rows_of(p) == [
        ({"text": "The first paragraph\nspans two lines."}, f"{p}:1"),
        ({"text": "The second paragraph."}, f"{p}:5"),  # the whitespace-only line 4 separates too
        ({"text": "Third, after two blank lines."}, f"{p}:8"),
    ]


# --- Parquet and saved datasets ---------------------------------------------------------------------

def test_parquet_streams_in_batches_with_row_indices(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = tmp_path / "d.parquet"
    pq.write_table(pa.table({"text": [f"t{i}" for i in range(5)], "n": list(range(5))}), p, row_group_size=2)
    monkeypatch.setattr(readers, "_BATCH", 2)  # several batches, so the index must carry across them
    got = rows_of(p)
    assert got[0] == ({"text": "t0", "n": 0}, f"{p}:row 0")
    assert got[4] == ({"text": "t4", "n": 4}, f"{p}:row 4")
    assert len(got) == 5


def test_not_a_parquet_file(tmp_path):
    p = write(tmp_path / "fake.parquet", "not parquet")
    with pytest.raises(DataError, match=rf"^{p}: not a readable Parquet file"):
        rows_of(p)


def test_saved_dataset_directory_and_its_splits(tmp_path):
    import datasets

    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_list([{"text": "a", "k": 1}, {"text": "b", "k": 2}]),
        "test": datasets.Dataset.from_list([{"text": "c", "k": 3}]),
    })
    dd.save_to_disk(str(tmp_path / "ds"))
    train = tmp_path / "ds" / "train"
    assert rows_of(train) == [({"text": "a", "k": 1}, f"{train}:row 0"), ({"text": "b", "k": 2}, f"{train}:row 1")]
    with pytest.raises(DataError, match=rf"^{tmp_path / 'ds'}: holds several splits \(train, test\); point at one of them: .*ds/train"):
        read_rows(tmp_path / "ds")


def test_plain_directory_is_not_a_dataset(tmp_path):
    with pytest.raises(DataError, match=rf"^{tmp_path}: a directory, but not one written by `datasets.save_to_disk`"):
        read_rows(tmp_path)


# --- paths that are not data ------------------------------------------------------------------------

def test_missing_file_fails_at_the_call_and_lists_supported_kinds(tmp_path):
    with pytest.raises(DataError, match=rf"^{tmp_path / 'nope.jsonl'}: no such file. Supported: .*\.jsonl.*\.parquet"):
        read_rows(tmp_path / "nope.jsonl")


def test_unknown_extension(tmp_path):
    p = write(tmp_path / "data.xlsx", "x")
    with pytest.raises(DataError, match=rf"^{p}: unknown kind of data file '.xlsx'. Supported: "):
        read_rows(p)


def test_missing_path_under_an_existing_folder_is_not_taken_for_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    with pytest.raises(DataError, match=r"^data/train: no such file"):
        read_rows("data/train")


def test_hub_ids_go_to_load_dataset_with_their_split(monkeypatch, tmp_path):
    import datasets

    calls = []

    def fake_load_dataset(name, split):
        calls.append((name, split))
        return datasets.Dataset.from_list([{"text": "hub"}])

    monkeypatch.chdir(tmp_path)  # no local "openai" folder
    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert rows_of("openai/gsm8k:test") == [({"text": "hub"}, "hf://openai/gsm8k:test:row 0")]
    assert rows_of("hf://org/name") == [({"text": "hub"}, "hf://org/name:train:row 0")]
    assert calls == [("openai/gsm8k", "test"), ("org/name", "train")]


def test_hub_failure_is_a_data_error(monkeypatch, tmp_path):
    import datasets

    def offline(name, split):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"^hf://org/x:train: cannot load from the Hugging Face Hub \(ConnectionError: no network\)"):
        rows_of("hf://org/x")


def test_row_is_immutable():
    row = Row({"text": "a"}, "f:1")
    with pytest.raises(AttributeError):
        row.where = "g:2"


# --- the real data sets, when this checkout has them ------------------------------------------------

@pytest.mark.skipif(not (SHARED_DATA / "hh-rlhf").is_dir(), reason="shared/data/hh-rlhf not present")
def test_reads_hh_rlhf_gz():
    p = SHARED_DATA / "hh-rlhf" / "harmless-base-test.jsonl.gz"
    n, last = 0, None
    for last in read_rows(p):
        n += 1
    assert n == 2312
    assert set(last.data) == {"chosen", "rejected"} and last.where == f"{p}:2312"
