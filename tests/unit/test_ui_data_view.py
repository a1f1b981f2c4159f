"""The Data page's backend: rows as training encodes them (the highlighted tokens are exactly the
labels), the length histogram, prepare's drop reasons, and clear errors for bad sources."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tunesmith.data.encode import IGNORE_INDEX, encode_conversation
from tunesmith.data.formats import load_examples
from tunesmith.errors import UserError
from tunesmith.ui.data_view import PAGE_MAX, DataView, histogram, resolve_source


def _config(tmp_path: Path, tiny_dir: Path, train: list[str], **data) -> Path:
    cfg = {"model": {"path": str(tiny_dir)}, "data": {"train": train, "max_length": 128, **data}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_highlighted_tokens_are_exactly_the_labels(tmp_path, tiny_dir, tok, alpaca64):
    view = DataView(resolve_source(_config(tmp_path, tiny_dir, [str(alpaca64)])), tok)
    page = view.page(0, 8)
    examples, _ = load_examples([str(alpaca64)])
    assert page["total"] == 64 and [r["index"] for r in page["rows"]] == list(range(8))
    for row, ex in zip(page["rows"], examples[:8]):
        enc = encode_conversation(ex, tok)
        (seg,) = row["segments"]
        assert [on for _, on in seg["tokens"]] == [lab != IGNORE_INDEX for lab in enc.labels]
        assert [t for t, _ in seg["tokens"]] == [tok.decode([i]) for i in enc.input_ids]
        # independent of the mask code: the labelled text is the answer and its end-of-turn token
        assert "".join(t for t, on in seg["tokens"] if on) == ex.messages[-1]["content"] + "<|im_end|>"
        assert seg["n_labels"] == sum(on for _, on in seg["tokens"]) > 0


def test_inspect_data_prints_the_same_mask(tmp_path, tiny_dir, tok, alpaca64):
    from tunesmith.api import inspect_data
    from tunesmith.data.inspect import bracketed

    config = _config(tmp_path, tiny_dir, [str(alpaca64)])
    printed = inspect_data(config, show=1)
    view = DataView(resolve_source(config), tok)
    # unpacked, training keeps the file's order: inspect-data's first row is the page's first row
    first = view.page(0, 1)["rows"][0]["segments"][0]["tokens"]
    assert "\n" + bracketed([tuple(t) for t in first]) in printed and "[[" in printed


def test_overlong_example_is_dropped_with_the_pipelines_reason(tmp_path, tiny_dir, tok, alpaca64):
    examples, _ = load_examples([str(alpaca64)])
    lengths = [len(encode_conversation(e, tok)) for e in examples]
    cut = sorted(lengths)[len(lengths) // 2]  # about half are longer
    view = DataView(resolve_source(_config(tmp_path, tiny_dir, [str(alpaca64)], max_length=cut)), tok)
    rows = view.page(0, PAGE_MAX)["rows"]
    for row, n in zip(rows, lengths):
        if n > cut:
            assert row["dropped"] == f"longer than max_length {cut}" and row["segments"] == []
        else:
            assert row["dropped"] is None and row["segments"][0]["n_tokens"] == n
    stats = view.lengths()
    assert stats["dropped"] == {f"longer than max_length {cut}": sum(n > cut for n in lengths)}
    assert stats["stats"]["count"] == sum(n <= cut for n in lengths)


def test_histogram_counts_every_length_once():
    lengths = [3, 3, 4, 10, 12, 40]
    bins = histogram(lengths, bins=4)  # width ceil((40 - 3 + 1) / 4) = 10: [3,13) [13,23) [23,33) [33,43)
    assert [(b["lo"], b["hi"], b["count"]) for b in bins] == [(3, 13, 5), (13, 23, 0), (23, 33, 0), (33, 43, 1)]
    assert histogram([]) == []
    assert histogram([7, 7]) == [{"lo": 7, "hi": 8, "count": 2}]


def test_lengths_match_the_pipeline(tmp_path, tiny_dir, tok, alpaca64):
    from tunesmith.data.pipeline import prepare_data
    from tunesmith.config import load_config

    config = _config(tmp_path, tiny_dir, [str(alpaca64)])
    want = prepare_data(load_config(config).data, tok).stats["examples"]
    got = DataView(resolve_source(config), tok).lengths()
    assert got["stats"] == want and got["sampled"] == got["of"] == 64
    assert sum(b["count"] for b in got["bins"]) == 64


def test_paging_is_bounded_and_checked(tmp_path, tiny_dir, tok, alpaca64):
    view = DataView(resolve_source(_config(tmp_path, tiny_dir, [str(alpaca64)])), tok)
    assert len(view.page(0, 10_000)["rows"]) == PAGE_MAX
    assert view.page(60, 10)["rows"][-1]["index"] == 63 and view.page(64, 10)["rows"] == []
    with pytest.raises(UserError, match="offset must be >= 0"):
        view.page(-1, 10)
    with pytest.raises(UserError, match="`data.eval` is empty"):
        view.page(0, 10, split="eval")


def test_bad_rows_are_shown_as_skips_not_a_crash(tmp_path, tiny_dir, tok):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"instruction": "Say hi.", "output": "hi"}) + "\n" + json.dumps({"instruction": "no output"}) + "\n")
    view = DataView(resolve_source(_config(tmp_path, tiny_dir, [str(data)])), tok)
    assert view.page(0, 10)["total"] == 1
    drops = view.drops()
    assert sum(drops["skipped_on_read"].values()) == 1 and "d.jsonl:2" in drops["first_skipped"][0]


@pytest.fixture
def prepared(tmp_path, tiny_dir):
    from tunesmith.api import prepare

    rows = [{"instruction": f"Say {w}.", "output": f"{w} {w}."} for w in ("red", "blue", "green", "cat", "dog", "sun")]
    rows += [rows[0], {"instruction": "What?", "output": "N/A"}]  # an exact duplicate and a placeholder
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "prepared"
    prepare(input=[str(src)], out=out, tokenizer=str(tiny_dir), overrides=["prepare.progress=false"])
    return out


def test_prepared_directory_rows_and_drop_reasons(prepared, tok):
    source = resolve_source(prepared)
    assert source.kind == "prepared" and source.manifest is not None
    view = DataView(source, tok)
    page = view.page(0, 10)
    assert page["total"] == source.manifest["splits"]["train"] == 6
    for row in page["rows"]:
        assert "".join(t for t, on in row["segments"][0]["tokens"] if on) == row["messages"][-1]["content"] + "<|im_end|>"
    drops = view.drops()
    reasons = {r: n for s in drops["prepare_steps"] for r, n in s["dropped"].items()}
    assert sum(reasons.values()) == 2 and drops["has_report"] is True
    examples = [x for s in drops["prepare_steps"] for xs in s["examples"].values() for x in xs]
    assert any("in.jsonl:7" in x for x in examples) and any("in.jsonl:8" in x for x in examples)


def test_prepared_directory_without_its_report(prepared):
    (prepared / "manifest.json").unlink()
    with pytest.raises(UserError, match=r"manifest.json: missing.*rerun `tunesmith prepare"):
        resolve_source(prepared)


def test_corrupt_manifest_names_the_file(prepared):
    (prepared / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match=r"manifest.json: not readable JSON.*--overwrite"):
        resolve_source(prepared)


def test_prepared_without_tokenizer_asks_for_one(prepared, tiny_dir):
    m = json.loads((prepared / "manifest.json").read_text())
    m["tokenizer"] = "whitespace words"
    (prepared / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match="prepared without a tokenizer"):
        resolve_source(prepared)
    assert resolve_source(prepared, tokenizer=str(tiny_dir)).tokenizer == str(tiny_dir)


def test_bad_paths_say_what_to_give(tmp_path):
    with pytest.raises(UserError, match="no such file or directory"):
        resolve_source(tmp_path / "nope")
    (tmp_path / "x.jsonl").write_text("{}\n")
    with pytest.raises(UserError, match="not a YAML config or a prepared directory"):
        resolve_source(tmp_path / "x.jsonl")
    with pytest.raises(UserError, match="neither a directory written by `tunesmith prepare`"):
        resolve_source(tmp_path)


def test_preference_rows_are_refused_with_the_reason(prepared):
    m = json.loads((prepared / "manifest.json").read_text())
    m["inputs"][0]["format"] = "preference"
    (prepared / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match="holds preference rows; the Data page shows SFT data"):
        resolve_source(prepared)
