"""`tunesmith prepare` end to end: a file with planted problems goes in, every problem is counted
with its reason, the output is deterministic, the inputs are untouched, and `tunesmith train`
trains on the prepared directory."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
import yaml

from tunesmith.api import prepare
from tunesmith.cli import main
from tunesmith.data.formats import load_examples
from tunesmith.data.readers import read_rows
from tunesmith.errors import DataError, UserError

pytestmark = pytest.mark.integration
pytest.importorskip("datasketch")

WORDS = ("apple river stone cloud light tree sun moon green blue red dog cat bird fish road city hill lake sea "
         "wind rain snow fire gold iron salt milk bread house door key lamp book song ship star wolf bear").split()


def story(i: int, n: int = 40) -> str:
    rng = random.Random(i)
    return " ".join(rng.choice(WORDS) for _ in range(n)) + "."


def rows_with_problems() -> list[dict]:
    """16 good rows, then one of each problem, in a known order (line numbers below are 1-based)."""
    rows = [{"instruction": f"Tell story {i}.", "output": story(i)} for i in range(16)]
    rows += [
        {"instruction": "Tell story 3.", "output": story(3)},  # 17: exact duplicate of line 4
        {"instruction": "Tell story 5!", "output": story(5) + " Indeed, the end."},  # 18: near duplicate of line 6
        {"instruction": "What is it?", "output": "N/A"},  # 19: placeholder
        {"instruction": "Contact?", "output": "Mail me at jane.doe@example.com or call +1 415 555 0132."},  # 20: PII, redacted
        {"instruction": "Count.", "output": "Janet has sixteen ducks that lay eggs every day and she eats three of them for breakfast."},  # 21: benchmark
        {"instruction": "Broken row without output"},  # 22: malformed
    ]
    return rows


@pytest.fixture
def problem_file(tmp_path) -> Path:
    p = tmp_path / "in" / "train.jsonl"
    p.parent.mkdir()
    p.write_text("".join(json.dumps(r) + "\n" for r in rows_with_problems()), encoding="utf-8")
    return p


@pytest.fixture
def bench_file(tmp_path) -> Path:
    p = tmp_path / "in" / "bench.jsonl"
    p.write_text(json.dumps({"question": "Janet has sixteen ducks that lay eggs every day and she eats three of them", "answer": "#### 13"}) + "\n")
    return p


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): sha(p) for p in sorted(root.rglob("*")) if p.is_file()}


def run(problem_file, bench_file, out, *overrides, **kw):
    return prepare(None, ["data.on_error=skip", "prepare.progress=false", *overrides], input=[str(problem_file)],
                   out=out, benchmarks=[str(bench_file)], **kw)


def test_every_problem_counted_with_reason(problem_file, bench_file, tmp_path):
    before = sha(problem_file)
    m = run(problem_file, bench_file, tmp_path / "out", "prepare.dedup.threshold=0.7")
    steps = {s["step"]: s for s in m["steps"]}
    assert steps["read + normalise"]["dropped"] == {"malformed row: missing 'output'": 1}
    assert steps["read + normalise"]["examples"]["malformed row: missing 'output'"] == [f"{problem_file}:22"]
    assert steps["quality filters"]["dropped"] == {"placeholder response": 1}
    assert steps["exact dedup"]["dropped"] == {"exact duplicate": 1}
    assert steps["exact dedup"]["examples"]["exact duplicate"] == [f"{problem_file}:17: same text as {problem_file}:4"]
    assert steps["near dedup"]["dropped"] == {"near duplicate": 1}
    assert f"{problem_file}:6" in steps["near dedup"]["examples"]["near duplicate"][0]
    assert steps["PII"]["counts"] == {"email found": 1, "phone found": 1, "rows with PII": 1}
    assert steps["contamination"]["dropped"] == {"contaminated": 1}
    assert [(r["row"], r["benchmark"]) for r in m["contaminated_rows"]] == [(f"{problem_file}:21", f"{bench_file}:1")]
    assert m["splits"] == {"train": 17, "eval": 0}  # 16 good + the redacted one
    # the input is untouched and its hash is in the manifest
    assert sha(problem_file) == before == m["inputs"][0]["sha256"]
    out = tmp_path / "out"
    assert {p.name for p in out.iterdir()} == {".tunesmith.json", "train", "manifest.json", "prepare_report.md", "lengths.png"}
    train_rows = [r.data for r in read_rows(out)]  # the reader takes the prepared directory itself
    contact = next(r for r in train_rows if r["messages"][0]["content"] == "Contact?")
    assert contact["messages"][1]["content"] == "Mail me at <EMAIL> or call <PHONE>."
    report = (out / "prepare_report.md").read_text()
    for needle in ("| exact dedup | 20 | 19 | 1 |", "placeholder response", "contaminated", "sha256", "padding waste"):
        assert needle in report, needle


def test_malformed_row_names_file_and_line(problem_file, bench_file, tmp_path, capsys):
    with pytest.raises(DataError, match=rf"{problem_file}:22: missing 'output'.*data.on_error: skip"):
        prepare(None, ["prepare.progress=false"], input=[str(problem_file)], out=tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written
    assert not list(tmp_path.glob(".out.tmp-*"))
    code = main(["prepare", "prepare.progress=false", "--input", str(problem_file), "--out", str(tmp_path / "out")])
    assert code == 2 and f"{problem_file}:22" in capsys.readouterr().err


def test_same_input_and_seed_give_byte_identical_output(problem_file, bench_file, tmp_path):
    args = ("prepare.eval_fraction=0.25", "prepare.seed=7")
    run(problem_file, bench_file, tmp_path / "a", *args, jsonl=True)
    run(problem_file, bench_file, tmp_path / "b", *args, jsonl=True)
    a, b = tree(tmp_path / "a"), tree(tmp_path / "b")
    assert a == b and "train/data-00000-of-00001.arrow" in a and "eval.jsonl" in a
    run(problem_file, bench_file, tmp_path / "c", "prepare.eval_fraction=0.25", "prepare.seed=8", jsonl=True)
    assert tree(tmp_path / "c")["eval.jsonl"] != a["eval.jsonl"]  # the seed matters


def test_existing_output_needs_overwrite(problem_file, bench_file, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="--overwrite"):
        run(problem_file, bench_file, out)
    assert (out / "keep.txt").read_text() == "mine"
    # --overwrite replaces only what tunesmith wrote: a folder of the user's files is kept (issue 16).
    with pytest.raises(UserError, match="tunesmith did not write"):
        run(problem_file, bench_file, out, overwrite=True)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    prepared = tmp_path / "prepared"
    run(problem_file, bench_file, prepared)
    (prepared / "stale.txt").write_text("from an older prepare")
    run(problem_file, bench_file, prepared, overwrite=True)
    assert not (prepared / "stale.txt").exists() and (prepared / "manifest.json").exists()


def test_mix_and_stratified_split_of_two_sources(tmp_path):
    a, b = tmp_path / "domain.jsonl", tmp_path / "general.jsonl"
    a.write_text("".join(json.dumps({"instruction": f"Domain {i}?", "output": story(i)}) + "\n" for i in range(40)))
    b.write_text("".join(json.dumps({"instruction": f"General {i}?", "output": story(100 + i, 30)}) + "\n" for i in range(40)))
    m = prepare(None, ["prepare.progress=false", "prepare.eval_fraction=0.25", "prepare.weights=[0.8,0.2]",
                       "prepare.dedup.near=false"], input=[str(a), str(b)], out=tmp_path / "out")
    # 30 train rows per source after the 25% stratified hold-out; 0.8/0.2 -> 30 domain + 8 general (30/0.8*0.2 = 7.5 -> 8)
    assert [(s["kept"], s["train"], s["eval"]) for s in m["sources"]] == [(40, 30, 10), (40, 8, 10)]
    assert m["splits"] == {"train": 38, "eval": 20}
    with pytest.raises(UserError, match=r"prepare\.weights.*one per file"):
        prepare(None, ["prepare.weights=[1.0]"], input=[str(a), str(b)], out=tmp_path / "out2")


def test_hh_preference_rows_go_through_the_steps(tmp_path):
    def hh(q, a, r):
        return {"chosen": f"\n\nHuman: {q}\n\nAssistant: {a}", "rejected": f"\n\nHuman: {q}\n\nAssistant: {r}"}

    rows = [hh(f"Question {i}: {story(i, 12)}", story(i + 50, 20), story(i + 80, 20)) for i in range(6)]
    rows += [rows[2], hh("Email?", "Write to bob@example.org.", "I won't say."), hh("Same?", "Yes.", "Yes.")]
    p = tmp_path / "hh.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    m = prepare(None, ["prepare.progress=false", "data.on_error=skip"], input=[str(p)], out=tmp_path / "out", jsonl=True)
    assert m["inputs"][0]["format"] == "preference"
    steps = {s["step"]: s for s in m["steps"]}
    assert steps["read + normalise"]["dropped"] == {"malformed row: chosen and rejected are identical": 1}
    assert steps["exact dedup"]["dropped"] == {"exact duplicate": 1}
    out = [json.loads(x) for x in (tmp_path / "out" / "train.jsonl").read_text().splitlines()]
    assert len(out) == 7
    assert out[-1]["prompt"] == [{"role": "user", "content": "Email?"}]
    assert out[-1]["chosen"] == [{"role": "assistant", "content": "Write to <EMAIL>."}]
    assert m["stats"]["rows"] == 7


def test_token_stats_with_the_target_tokenizer(problem_file, bench_file, tmp_path, tiny_dir, tok):
    """The statistics count what training will see: encode_conversation's tokens and labels."""
    from tunesmith.data.encode import encode_conversation, resolve_chat_template

    m = run(problem_file, bench_file, tmp_path / "out", "data.max_length=60", tokenizer=str(tiny_dir))
    st = m["stats"]
    resolve_chat_template(tok)
    examples, _ = load_examples([str(tmp_path / "out")])
    enc = [encode_conversation(e, tok) for e in examples]
    assert st["unit"] == "tokens" and st["rows"] == len(enc) == 17
    assert st["over_max_length"] == sum(1 for e in enc if len(e) > 60) >= 1
    assert (st["total"]["max"], st["total"]["sum"]) == (max(map(len, enc)), sum(map(len, enc)))
    assert st["response"]["sum"] == sum(e.n_labels for e in enc)
    assert set(st["padding_waste"]) == {"pad_to_max_length", "pad_to_longest_batch_of_4", "packed"}
    assert 0 <= st["padding_waste"]["packed"] <= st["padding_waste"]["pad_to_max_length"] < 1


def test_train_accepts_the_prepared_directory(problem_file, bench_file, tmp_path, tiny_dir):
    from tunesmith.train.run import train

    run(problem_file, bench_file, tmp_path / "prep")
    examples, report = load_examples([str(tmp_path / "prep")])
    assert len(examples) == 17 and report.formats[str(tmp_path / "prep")] == "messages"
    cfg = {
        "model": {"path": str(tiny_dir), "dtype": "fp32"},
        "data": {"train": [str(tmp_path / "prep")], "max_length": 128},
        "adapter": {"type": "lora", "r": 4, "alpha": 8, "dropout": 0.0},
        "train": {"precision": "fp32", "max_steps": 2, "micro_batch_size": 4, "save_every": 0, "progress": False},
        "output_dir": str(tmp_path / "run"),
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    summary = train(path)
    assert (tmp_path / "run" / "adapter").is_dir()
    assert summary is not None


def test_dpo_trains_on_a_prepared_preference_directory(tmp_path, tiny_dir):
    """HH transcripts -> prepare -> canonical {prompt, chosen, rejected} messages -> `method: dpo` reads them."""
    from tunesmith.train.run import train

    rows = [{"chosen": f"\n\nHuman: Say word {i}.\n\nAssistant: {story(i, 6)}", "rejected": f"\n\nHuman: Say word {i}.\n\nAssistant: {story(i + 99, 6)}"}
            for i in range(8)]
    src = tmp_path / "hh.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prepare(None, ["prepare.progress=false"], input=[str(src)], out=tmp_path / "prep")
    ov = [f"model.path={tiny_dir}", f"data.train={tmp_path / 'prep'}", "method=dpo", "data.max_length=64", "dpo.max_prompt_length=32",
          "train.micro_batch_size=4", "train.precision=fp32", "train.progress=false", "train.max_steps=2", "train.save_every=0",
          "adapter.dropout=0", f"output_dir={tmp_path / 'run'}", f"dpo.ref_cache_dir={tmp_path / 'cache'}"]
    train(None, ov)
    metrics = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    first = next(m for m in metrics if "loss" in m)
    assert abs(first["loss"] - 0.693147) < 1e-3  # DPO at step 0 with the adapter's reference = the policy: ln 2
