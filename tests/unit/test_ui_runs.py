"""The dashboard's reading of run directories: metrics.jsonl with bad lines, the status rules,
scanning, and the config diff of compare. Run directories come from train's own writers (tests/ui_runs.py)."""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ui_runs import curve  # noqa: E402
from ui_runs import write_run as _write_run  # noqa: E402

from tunesmith.ui.compare_api import config_diff, flatten  # noqa: E402
from tunesmith.ui.metrics import curve_keys, parse_metrics, summarise  # noqa: E402
from tunesmith.ui.runs import ACTIVE_S, describe, find_runs, resolve_run  # noqa: E402


def write_run(runs, name, **kw):
    return _write_run(runs, name, full_report=False, **kw)


def test_bad_lines_are_skipped_and_named_with_their_line_number():
    text = ('{"step": 1, "loss": 2.0}\n'
            '{"step": 2, "loss": \n'  # truncated in the middle of the file
            '[1, 2]\n'  # JSON, but not a record
            '{"step": 3, "loss": "nan", "lr": "inf"}\n'
            '{"step": 4, "lo')  # torn last line: a write in progress
    m = parse_metrics(text)
    assert [r["step"] for r in m.records] == [1, 3]
    assert math.isnan(m.records[1]["loss"]) and m.records[1]["lr"] == math.inf
    assert [p.split(":")[1] for p in m.problems] == ["2", "3"]
    assert "not JSON" in m.problems[0] and "integer 'step'" in m.problems[1]
    assert m.torn_tail


def test_summary_numbers():
    records = curve(20)
    s = summarise(records)
    evals = [(r["eval_loss"], r["step"]) for r in records if "eval_loss" in r]
    assert s["steps"] == 20 and s["last_loss"] == records[-1]["loss"]
    assert (s["best_eval_loss"], s["best_eval_step"]) == min(evals) and s["best_eval_step"] == 20
    assert s["tokens_per_s"] == sorted(r["tokens_per_s"] for r in records)[10]  # median of the (last 20) steps
    assert s["wall_s"] == pytest.approx(12.0)
    assert curve_keys(records) == ["loss", "lr", "grad_norm", "tokens_per_s", "eval_loss"]


def test_status_rules(tmp_path):
    runs = tmp_path / "runs"
    done = write_run(runs, "done")
    live = write_run(runs, "live", finished=False)
    old = write_run(runs, "old", finished=False)
    stale = time.time() - 2 * ACTIVE_S
    for p in [old, *old.rglob("*")]:
        os.utime(p, (stale, stale))
    diverged = write_run(runs, "nan", finished=False, records=curve(3) + [{"step": 4, "loss": float("nan")}])
    got = {i.name: (i.status, i.status_reason) for i in (describe(p, runs) for p in (done, live, old, diverged))}
    assert got["done"] == ("finished", "report.md and adapter/ written")
    assert got["live"][0] == "running"
    assert got["old"][0] == "interrupted" and "--resume" in got["old"][1]
    assert got["nan"][0] == "failed" and "nan" in got["nan"][1]
    # a launch record decides over the files: exit code, and whether the user stopped it
    assert describe(done, runs, job={"returncode": 1, "log": str(tmp_path / "none.log")}).status == "failed"
    assert describe(live, runs, job={"returncode": -2, "stopped": True}).status == "interrupted"
    assert describe(old, runs, job={"returncode": 0}).status == "finished"


def test_damaged_runs_are_described_not_raised(tmp_path):
    runs = tmp_path / "runs"
    run = write_run(runs, "torn", finished=False)
    (run / "config.yaml").write_text("model: [unclosed\n")
    (run / "metrics.jsonl").write_bytes(b'{"step": 1, "loss": 1.0}\n\xff\xfe garbage\n{"step": 2, "loss": 0.5}\n')
    bare = runs / "bare"
    bare.mkdir()
    (bare / ".tunesmith.json").write_text(json.dumps({"stage": "train"}))
    info = describe(run, runs)
    assert info.steps == 2 and info.method is None
    assert any(p.startswith("config.yaml: not valid YAML") for p in info.problems)
    assert any(p.startswith("metrics.jsonl:2: not JSON") for p in info.problems)
    assert describe(bare, runs).problems[0].startswith("config.yaml is missing")


def test_scan_finds_runs_two_deep_and_nothing_else(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "a")
    write_run(runs, "quickstart/sft")
    (runs / "notes").mkdir()
    (runs / "notes" / "x.txt").write_text("not a run")
    (runs / "prepared").mkdir()
    (runs / "prepared" / ".tunesmith.json").write_text(json.dumps({"stage": "prepare"}))
    write_run(runs, ".hidden")
    assert [p.relative_to(runs).as_posix() for p in find_runs(runs)] == ["a", "quickstart/sft"]


def test_run_names_cannot_leave_the_runs_directory(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "a")
    write_run(tmp_path, "outside")
    assert resolve_run(runs, "a") == (runs / "a").resolve()
    for name in ("../outside", "a/../../outside", "/etc", "", "a/./", str(tmp_path / "outside")):
        assert resolve_run(runs, name) is None, name
    (runs / "link").symlink_to(tmp_path / "outside")
    assert resolve_run(runs, "link") is None


def test_config_diff_lists_only_differing_keys():
    a = {"method": "sft", "train": {"lr": 1e-3, "seed": 1}, "output_dir": "runs/a", "adapter": {"type": "lora"}}
    b = {"method": "sft", "train": {"lr": 5e-4, "seed": 1}, "output_dir": "runs/b"}
    c = {"method": "dpo", "train": {"lr": 1e-3, "seed": 1}, "output_dir": "runs/c", "adapter": {"type": "lora"}}
    assert flatten(a) == {"method": "sft", "train.lr": 1e-3, "train.seed": 1, "output_dir": "runs/a", "adapter.type": "lora"}
    assert config_diff([a, b, c]) == [
        {"key": "adapter.type", "values": ["lora", "(not set)", "lora"]},
        {"key": "method", "values": ["sft", "sft", "dpo"]},
        {"key": "train.lr", "values": [1e-3, 5e-4, 1e-3]},
    ]
    assert config_diff([a, a]) == []


def test_metrics_are_reread_only_when_the_file_changes(tmp_path):
    from tunesmith.ui.metrics import read_run_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n')
    first = read_run_metrics(path)
    assert read_run_metrics(path) is first  # unchanged: the parsed copy
    with open(path, "a") as f:
        f.write('{"step": 2, "loss": 1.5}\n')
    assert [r["step"] for r in read_run_metrics(path).records] == [1, 2]
    path.unlink()
    assert read_run_metrics(path).records == []


def test_log_tail_keeps_the_last_state_of_each_progress_line(tmp_path):
    from tunesmith.ui.jobs import job_status, tail

    log = tmp_path / "train.log"
    log.write_text("$ tunesmith train c.yaml\ntrain: 1/9\rtrain: 5/9\rtrain: 9/9\ndone: reached 9 steps\n\n")
    assert tail({"log": str(log)}) == ["$ tunesmith train c.yaml", "train: 9/9", "done: reached 9 steps"]
    assert tail({"log": str(log)}, 1) == ["done: reached 9 steps"]
    # Stop that came after the end: the exit code says it finished
    assert job_status({"returncode": 0, "stopped": True, "log": str(log)})[0] == "finished"
    assert job_status({"returncode": 2, "log": str(log)}) == ("failed", "tunesmith train exited 2; last log line: done: reached 9 steps")
