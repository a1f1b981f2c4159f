"""What a run shows a person: metrics.jsonl, report.md + loss.png, trackers, progress bar."""

import json
import math
import sys
import types

import pytest

from tunesmith.errors import UserError
from tunesmith.train.metrics import MetricsLog, Progress, fmt_count, fmt_duration, read_metrics
from tunesmith.train.report import plot_curves, write_report
from tunesmith.train.trackers import Trackers

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _records(n_steps=60, eval_every=10):
    """A plausible run: loss decays from ~4 to ~1.5 with noise, cosine lr, evals every 10 steps."""
    out = []
    for step in range(1, n_steps + 1):
        loss = 1.5 + 2.5 * math.exp(-step / 12) + 0.15 * math.sin(step * 1.7)
        lr = 1e-4 * 0.5 * (1 + math.cos(math.pi * step / n_steps))
        rec = {"step": step, "epoch": step / n_steps, "loss": loss, "lr": lr, "grad_norm": 0.8,
               "tokens": 512 * step, "tokens_per_s": 2000.0 + step, "elapsed_s": 0.25 * step}
        if step % eval_every == 0:
            rec["eval_loss"] = 1.8 + 2.0 * math.exp(-step / 15) + (0.3 if step == 60 else 0)
            rec["eval_tokens"] = 900
        out.append(rec)
    return out


def _write_log(path, records):
    with MetricsLog(path) as log:
        for r in records:
            log.log(r)


# ---- metrics.jsonl ----------------------------------------------------------------------------

def test_metrics_roundtrip_keeps_full_float_precision(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write_log(path, [{"step": 1, "loss": 2.3148234567890123, "lr": 1e-4}])
    assert read_metrics(path) == [{"step": 1, "loss": 2.3148234567890123, "lr": 1e-4}]


def test_metrics_log_requires_step(tmp_path):
    with MetricsLog(tmp_path / "m.jsonl") as log, pytest.raises(ValueError, match="step"):
        log.log({"loss": 1.0})


def test_truncate_on_resume_keeps_exactly_steps_up_to_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write_log(path, [{"step": s, "loss": 1.0 / s} for s in range(1, 11)])
    with MetricsLog(path, truncate_after_step=6) as log:  # resumed from the step-6 checkpoint
        for s in range(7, 9):
            log.log({"step": s, "loss": 9.0})
    steps = [r["step"] for r in read_metrics(path)]
    assert steps == [1, 2, 3, 4, 5, 6, 7, 8]
    assert read_metrics(path)[6]["loss"] == 9.0  # the re-run step, not the orphaned old one
    assert not [p for p in tmp_path.iterdir() if p.name != "metrics.jsonl"]  # no tmp file left


def test_torn_final_line_is_ignored(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write_log(path, [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.9}])
    with open(path, "a") as f:
        f.write('{"step": 3, "lo')  # killed mid-write
    assert [r["step"] for r in read_metrics(path)] == [1, 2]


def test_appending_after_a_torn_line_drops_it_first(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo')
    with MetricsLog(path) as log:
        log.log({"step": 2, "loss": 1.9})
    assert read_metrics(path) == [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.9}]


def test_torn_middle_line_raises_with_line_number(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "lo\n{"step": 3, "loss": 1.8}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
        read_metrics(path)


def test_nan_loss_is_logged_as_a_valid_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    _write_log(path, [{"step": 1, "loss": float("nan")}, {"step": 2, "loss": 1.0}])
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]
    assert read_metrics(path)[0]["loss"] == "nan"


# ---- report -----------------------------------------------------------------------------------

def test_human_formats():
    assert fmt_count(4_194_304) == "4.19M"
    assert fmt_count(1_100_048_384) == "1.1B"
    assert fmt_count(1_200_000) == "1.2M"
    assert fmt_count(512) == "512"
    assert fmt_count(999_999) == "1M"
    assert fmt_duration(192) == "3m 12s"
    assert fmt_duration(42.34) == "42.3s"
    assert fmt_duration(3725) == "1h 02m"


def test_plot_curves_writes_a_real_png(tmp_path):
    out = plot_curves(_records(), tmp_path / "loss.png")
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 5_000


def test_plot_curves_without_loss_returns_none(tmp_path):
    assert plot_curves([{"step": 1, "lr": 1e-4}], tmp_path / "loss.png") is None
    assert not (tmp_path / "loss.png").exists()


def test_report_states_the_numbers(tmp_path):
    records = _records()
    _write_log(tmp_path / "metrics.jsonl", records)
    (tmp_path / "config.yaml").write_text("model: tiny\n")
    (tmp_path / "adapter").mkdir()
    (tmp_path / "checkpoints" / "step-30").mkdir(parents=True)
    summary = {
        "name": "tiny-lora", "method": "sft", "model": "tiny-llama", "adapter": "lora",
        "trainable_params": 4_194_304, "total_params": 1_100_048_384, "steps": 60,
        "max_steps": 100, "tokens": 1_234_567, "duration_s": 192.0, "peak_memory_bytes": 3 * 2**30,
        "stop_reason": "eval loss stopped improving", "output": str(tmp_path / "adapter"),
        "notes": ["skipped 3 rows longer than max_seq_len"],
        "sections": [(
            "Before / after", "| metric | before | after |\n|---|---|---|\n| ppl | 9 | 5 |"
        )],
    }
    md = write_report(tmp_path, summary).read_text()

    final = records[-1]["loss"]
    best_eval = min(r["eval_loss"] for r in records if "eval_loss" in r)
    assert md.startswith("# Run report: tiny-lora\n")
    assert f"to {final:.4g}" in md  # final train loss, 4 significant digits
    assert f"best eval loss was {best_eval:.4g} at step 50" in md
    assert "4.19M of 1.1B (0.381%)" in md
    assert "1.23M" in md and "3m 12s" in md and "3.0 GiB" in md
    assert "60 of 100 steps" in md and "eval loss stopped improving" in md
    assert "![loss](loss.png)" in md
    assert "- skipped 3 rows longer than max_seq_len" in md
    assert "## Before / after" in md and "| ppl | 9 | 5 |" in md
    files = md.split("## Files")[1]
    assert "`config.yaml`" in files and "`adapter/`" in files and "(1 saved)" in files
    assert "`model/`" not in files
    png = (tmp_path / "loss.png").read_bytes()
    assert png[:8] == PNG_MAGIC and len(png) > 5_000


def test_report_sets_the_estimated_step_time_beside_the_measured_one(tmp_path):
    """60 steps logged, the loop's elapsed_s reaching 0.25 x 60 = 15 s: 0.25 s/step measured; 0.30 predicted = +20%."""
    _write_log(tmp_path / "metrics.jsonl", _records())
    md = write_report(tmp_path, {"name": "r", "steps": 60, "predicted_step_seconds": 0.30}).read_text()
    assert "| Time per step: estimate vs measured | 0.30 s vs 0.25 s (+20.0%; wall clock of the loop) |" in md


def test_loss_table_has_ten_evenly_spaced_rows_snapped_to_evals(tmp_path):
    _write_log(tmp_path / "metrics.jsonl", _records(n_steps=200, eval_every=50))
    md = write_report(tmp_path, {"name": "r"}).read_text()
    table = md.split("## Loss by step")[1].split("##")[0]
    steps = [int(line.split("|")[1]) for line in table.splitlines() if line.startswith("| ") and
             line.split("|")[1].strip().isdigit()]
    assert steps[0] == 1 and steps[-1] == 200
    assert {50, 100, 150}.issubset(steps)
    assert len(steps) == 10


def test_empty_metrics_report_says_nothing_was_logged(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("")
    md = write_report(tmp_path, {"name": "empty"}).read_text()
    assert "No training steps were logged" in md
    assert "loss.png" not in md and not (tmp_path / "loss.png").exists()


# ---- trackers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tensorboard", "wandb", "mlflow"])
def test_missing_tracker_package_names_it(tmp_path, monkeypatch, name):
    monkeypatch.setitem(sys.modules, name, None)  # makes `import name` raise ImportError
    with pytest.raises(UserError, match=rf"lists '{name}'.*pip install 'tunesmith\[{name}\]'"):
        Trackers([name], tmp_path, {}, "run")


def test_unknown_tracker_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="unknown tracker"):
        Trackers(["comet"], tmp_path, {}, "run")


def test_trackers_log_only_numbers(tmp_path, monkeypatch):
    calls = []

    class Run:
        def log(self, metrics, step):
            calls.append(("log", metrics, step))

        def finish(self):
            calls.append(("finish",))

    fake = types.SimpleNamespace(init=lambda **kw: calls.append(("init", kw)) or Run())
    monkeypatch.setitem(sys.modules, "wandb", fake)
    trackers = Trackers(["wandb"], tmp_path, {"train": {"lr": 1e-4}}, "run-1")
    trackers.log({"step": 3, "loss": 2.5, "lr": 1e-4, "stage": "sft", "bad": float("nan")}, step=3)
    trackers.close()
    assert calls[0] == ("init", {"project": "tunesmith", "name": "run-1",
                                 "config": {"train": {"lr": 1e-4}}, "dir": str(tmp_path)})
    assert calls[1] == ("log", {"loss": 2.5, "lr": 1e-4}, 3)
    assert calls[2] == ("finish",)


def test_no_trackers_is_a_noop(tmp_path):
    trackers = Trackers([], tmp_path, {}, "run")
    trackers.log({"loss": 1.0}, step=1)
    trackers.close()
    assert list(tmp_path.iterdir()) == []


# ---- progress ---------------------------------------------------------------------------------

def test_progress_disabled_prints_nothing_but_write_lines(capsys):
    bar = Progress(total=10, enabled=False)
    bar.update(1, loss=2.0)
    bar.write("eval loss 1.9")
    bar.close()
    assert capsys.readouterr().err == "eval loss 1.9\n"


def test_progress_shows_steps_and_postfix(capsys):
    bar = Progress(total=10, initial=4)
    bar.update(1, loss=2.3148, lr=1e-4, tok_s=2100.5)
    bar.close()
    err = capsys.readouterr().err
    assert "5/10" in err and "loss=2.315" in err and "lr=1.0e-04" in err and "tok_s=2.1K" in err
