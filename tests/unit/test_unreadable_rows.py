"""Issue 16: `data.on_error: skip` skips (and counts, with its line) every row the reader cannot read
-- invalid JSON, bad encoding, a value that is not an object, a ragged CSV row -- while `raise` stops
at it as before; a bad byte is reported on its own line; dropped eval rows are counted."""

import json
from pathlib import Path

import pytest

from tunesmith.config import DataConfig
from tunesmith.data.formats import load_examples
from tunesmith.data.pipeline import prepare_data
from tunesmith.data.readers import UnreadableRow, read_rows
from tunesmith.errors import DataError

TRUNCATED = '{"question": "broken row", "answer": '


def qa_file(path: Path, n: int, last: str = "") -> Path:
    lines = [json.dumps({"instruction": f"q{i}", "output": f"a{i}"}) for i in range(n)]
    path.write_text("\n".join(lines + ([last] if last else [])) + "\n", encoding="utf-8")
    return path


def test_truncated_last_line_is_skipped_and_counted_under_skip(tmp_path):
    p = qa_file(tmp_path / "t.jsonl", 370, TRUNCATED)
    with pytest.raises(DataError, match=rf"^{p}:371: invalid JSON"):
        load_examples([str(p)], on_error="raise")
    examples, report = load_examples([str(p)], on_error="skip")
    assert len(examples) == 370 and report.rows == 371 and report.kept == 370
    assert report.skipped == {"invalid JSON": 1} and report.first_skipped == [f"{p}:371: invalid JSON"]


def test_each_kind_of_unreadable_jsonl_line_is_skipped_with_its_line(tmp_path):
    p = tmp_path / "mixed.jsonl"
    good = json.dumps({"instruction": "q", "output": "a"}).encode()
    p.write_bytes(b"\n".join([good, b'{"instruction": "caf\xe9", "output": "a"}', b"[1, 2]", good, b"{nope", good]) + b"\n")
    examples, report = load_examples([str(p)], on_error="skip")
    assert [e.where for e in examples] == [f"{p}:1", f"{p}:4", f"{p}:6"]
    assert report.skipped == {"not UTF-8 text": 1, "not a JSON object": 1, "invalid JSON": 1}
    assert report.first_skipped == [f"{p}:2: not UTF-8 text", f"{p}:3: not a JSON object", f"{p}:5: invalid JSON"]


def test_latin1_error_names_the_line_of_the_bad_byte(tmp_path):
    """Before: 'not UTF-8 text after line 0' (the decoder reads ahead of the lines handed out)."""
    p = tmp_path / "latin1.jsonl"
    rows = [json.dumps({"text": f"row {i}"}) for i in range(9)] + ['{"text": "caf\u00e9"}']
    p.write_bytes("\n".join(rows).encode("latin-1") + b"\n")
    with pytest.raises(DataError, match=rf"^{p}:10: not UTF-8 text \(byte 0xe9 at column 14\); re-save the file as UTF-8"):
        list(read_rows(p))


def test_latin1_csv_and_txt_name_their_line(tmp_path):
    csv = tmp_path / "a.csv"
    csv.write_bytes(b"instruction,output\nq,a\nq2,caf\xe9\n")
    with pytest.raises(DataError, match=rf"^{csv}:3: not UTF-8 text"):
        list(read_rows(csv))
    seen: list[UnreadableRow] = []
    assert [r.where for r in read_rows(csv, on_bad=seen.append)] == [f"{csv}:2"]
    assert [e.short for e in seen] == [f"{csv}:3: not UTF-8 text"]
    txt = tmp_path / "a.txt"
    txt.write_bytes(b"first para\n\nsecond\nbad \xff here\n\nthird\n")
    with pytest.raises(DataError, match=rf"^{txt}:3: not UTF-8 text \(line 4: byte 0xff at column 5\)"):
        list(read_rows(txt))
    assert [r.data["text"] for r in read_rows(txt, on_bad=seen.append)] == ["first para", "third"]


def test_ragged_csv_row_and_non_object_json_element_skip(tmp_path):
    csv = tmp_path / "r.csv"
    csv.write_text("instruction,output\nq,a\nq,a,extra\nq3,a3\n")
    with pytest.raises(DataError, match=rf"^{csv}:3: 3 fields but the header \(line 1\) has 2"):
        load_examples([str(csv)])
    ex, report = load_examples([str(csv)], on_error="skip")
    assert [e.where for e in ex] == [f"{csv}:2", f"{csv}:4"] and report.skipped == {"wrong number of fields": 1}
    js = tmp_path / "a.json"
    js.write_text(json.dumps([{"instruction": "q", "output": "a"}, 3]))
    ex, report = load_examples([str(js)], on_error="skip")
    assert len(ex) == 1 and report.first_skipped == [f"{js}:[1]: not a JSON object"]


def test_skipped_and_dropped_eval_rows_are_counted(tmp_path, tok):
    """Before: the eval file's skipped rows and its over-length drops went into throwaway counters."""
    train = qa_file(tmp_path / "train.jsonl", 8)
    ev = tmp_path / "eval.jsonl"
    rows = [{"instruction": "q", "output": "a"}, {"instruction": "long " * 200, "output": "a"}, {"instruction": "q"}]
    ev.write_text("".join(json.dumps(r) + "\n" for r in rows) + TRUNCATED + "\n")
    cfg = DataConfig(train=[str(train)], eval=[str(ev)], max_length=64, on_error="skip")
    data = prepare_data(cfg, tok)
    assert data.stats["eval_examples"] == 1
    assert data.stats["eval_dropped"] == {"longer than max_length 64": 1}
    assert data.stats["eval_skipped"] == {"missing 'output'": 1, "invalid JSON": 1}
    assert any(n.startswith("eval: skipped 2 of 4 rows") and f"{ev}:4: invalid JSON" in n for n in data.notes)
    assert "eval: dropped after tokenization: 1 longer than max_length 64" in data.notes
