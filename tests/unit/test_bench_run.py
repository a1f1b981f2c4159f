"""bench/run.py (the one entry point) and the table scripts' argument handling, without running a bench."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import run as bench_run  # noqa: E402
import sft_vs_trl  # noqa: E402
import sft_workers  # noqa: E402


def test_every_readme_block_has_a_table_entry():
    """Each generated block of bench/README.md (`<!-- name:begin -->`) is reproducible through run.py."""
    text = (BENCH / "README.md").read_text()
    blocks = {line[5:].split(":begin", 1)[0] for line in text.splitlines() if line.startswith("<!-- ") and ":begin -->" in line}
    assert blocks and blocks <= set(bench_run.TABLES), blocks - set(bench_run.TABLES)
    for name, table in bench_run.TABLES.items():
        assert (BENCH / table.script).is_file(), name


def test_command_fills_placeholders_and_quick_variants(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_run, "SMOLLM2_DIR", "/models/smol")
    t = bench_run.TABLES["memory_real"]
    cmd = bench_run.command("memory_real", t, quick=False, repeats=5, work=tmp_path)
    assert cmd[1].endswith("bench/memory_real.py") and cmd[2:] == ["--model", "/models/smol", "--steps", "3", "--repeats", "5"]
    assert bench_run.command("memory_real", t, quick=True, repeats=5, work=tmp_path)[2:] == ["--model", "/models/smol", "--quick"]
    assert bench_run.command("prepare_scale", bench_run.TABLES["prepare_scale"], True, 3, tmp_path) is None


def test_missing_smollm2_skips_the_table_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(bench_run, "SMOLLM2_DIR", str(tmp_path / "nowhere"))
    reason = bench_run.missing(bench_run.TABLES["sft_vs_trl_smollm2"])
    assert reason and "nowhere" in reason and "TUNESMITH_SMOLLM2" in reason
    assert bench_run.missing(bench_run.TABLES["sft_vs_trl"]) is None
    out = bench_run.run_table("sft_vs_trl_smollm2", bench_run.TABLES["sft_vs_trl_smollm2"],
                              bench_run.argparse.Namespace(quick=True, repeats=3, threads=1, no_bound=True))
    assert out.status.startswith("skipped (no SmolLM2")


def test_unknown_table_is_refused(capsys):
    with pytest.raises(SystemExit):
        bench_run.main(["no_such_table"])
    assert "unknown table" in capsys.readouterr().err


def test_attach_adds_provenance_only_to_a_file_this_run_wrote(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps({"results": 1}))
    since = time.time()
    os.utime(path, (since - 60, since - 60))  # written before the run: left alone
    assert not bench_run.attach(path, {"x": 1}, since)
    assert json.loads(path.read_text()) == {"results": 1}
    path.write_text(json.dumps([{"old": 1}, {"new": 2}]))  # memory_real's history: the last record gets it
    assert bench_run.attach(path, {"x": 1}, since - 1)
    assert json.loads(path.read_text()) == [{"old": 1}, {"new": 2, "run_py": {"x": 1}}]


def test_sft_methods_default_and_quick_plan():
    a = sft_vs_trl.parse_args(["--configs", "smollm2"])
    assert a.method_list == ["lora", "qlora", "full"] and a.repeats == 3
    plan = sft_vs_trl.plans_of(a)["smollm2"]
    assert (plan["steps"], plan["micro_batch_size"], plan["max_length"]) == (10, 4, 512)  # issue 17's setup
    quick = sft_vs_trl.plans_of(sft_vs_trl.parse_args(["--configs", "smollm2", "--quick"]))["smollm2"]
    assert (quick["steps"], quick["max_length"]) == (4, 256)
    assert sft_vs_trl.parse_args([]).method_list == ["lora"]
    with pytest.raises(SystemExit):
        sft_vs_trl.parse_args(["--methods", "lora,dora"])


def test_sft_configs_per_method():
    spec = {"model_dir": "m", "data": "d.jsonl", "max_length": 64, "packing": True, "steps": 3, "micro_batch_size": 1,
            "grad_accum_steps": 1, "device": "cpu", "run_dir": "r"}
    full = sft_workers.tunesmith_config({**spec, "method": "full"})
    assert full["adapter"] == {"type": "none"} and full["train"]["lr"] == 2e-5
    q = sft_workers.tunesmith_config({**spec, "method": "qlora"})
    assert q["model"]["quantization"] == "nf4" and q["model"]["double_quant"] and q["adapter"]["type"] == "lora"
    assert "quantization" not in sft_workers.tunesmith_config(spec)["model"]


def test_steady_state_windows():
    times, tokens = [1.0, 2.0, 4.0, 6.0], [10, 20, 40, 60]
    s = sft_workers.steady_state(times, tokens, [4.0, 3.0, 2.0, 1.0])
    assert s["tokens_per_s"] == pytest.approx(40 / 4) and s["steady_steps"] == 2
    assert s["final_loss"] == pytest.approx(2.5)  # fewer steps than the window: all of them
    long = sft_workers.steady_state(list(range(1, 9)), list(range(1, 9)), [9, 9, 9, 5, 4, 3, 2, 1])
    assert long["final_loss"] == pytest.approx(3.0)  # the last 5


def _run(tps: float, peak: float, loss: float) -> dict:
    return {"tokens_per_s": tps, "peak_mb": peak, "peak_abs_mb": peak + 500, "baseline_mb": 500, "final_loss": loss,
            "s_per_step": 1000 / tps, "label_tokens": 10, "examples": 4, "rows": 2}


def test_sft_summary_table_and_bound_fraction():
    """The driver's post-processing on made-up runs: median per framework, ratios, % of the bound."""
    shape = {"h": 4, "I": 8, "layers": 2, "heads": 2, "kv_heads": 1, "head_dim": 2, "vocab": 10}
    info = {"attention_context": 10 / 3, "label_fraction": 0.5}
    bound = {"gflops": 4.32e-3, "before": {"n": 1024, "gflops": 0.004}, "after": {"gflops": 0.005}}
    ours = [sft_vs_trl.with_fraction(_run(t, 100, 1.0), shape, "lora", info, bound) for t in (3.0, 1.0, 2.0)]
    theirs = [{**_run(t, 200, 1.1), "bound_fraction": None} for t in (0.5, 1.0, 0.25)]
    r = sft_vs_trl.summarise({"tunesmith": ours, "trl": theirs})
    assert r["tunesmith"]["tokens_per_s"] == 2.0 and r["trl"]["tokens_per_s"] == 0.5
    per_token = 4 * 288 + 6 * (2 * 64 * 16) + 160 + 80  # test_bench_common's hand-computed shape at LoRA r 16
    assert r["tunesmith"]["bound_fraction"] == pytest.approx(per_token * 2.0 / 4.32e6)  # FLOPs/token x tok/s / bound
    assert r["ratio"]["speed"] == 4.0 and r["ratio"]["memory"] == 0.5
    plans = {"smollm2": {"steps": 10, "micro_batch_size": 4, "grad_accum_steps": 1}}
    table = sft_vs_trl.fmt_table({"smollm2/lora": r}, plans)
    assert "| smollm2 | lora | 10 x 4x1 | tunesmith | 2 (3, 1, 2) |" in table
    assert "| 0.6% |" in table and "| n/a |" in table and "**4.00x**" in table


def test_dpo_setup_gives_trl_the_pairs_in_tunesmith_order(tmp_path):
    """dpo_vs_trl's setup worker on the tiny model: the pairs file, and the same pairs in the order tunesmith's
    step sampler draws them (it broke when prepare_preference_data gained its `encode` argument)."""
    import dpo_vs_trl

    spec = {"work": str(tmp_path), "n_pairs": 6, "steps": 3, "micro_batch_size": 2, "max_length": 384,
            "max_prompt_length": 256, "config": "small"}
    made = dpo_vs_trl.worker_setup(spec)
    kept = [json.loads(x) for x in Path(made["data"]).read_text().splitlines()]
    ordered = [json.loads(x) for x in Path(made["trl_data"]).read_text().splitlines()]
    assert len(kept) == 6 and len(ordered) == 6  # 3 steps x 2 pairs
    assert sorted(map(json.dumps, ordered)) == sorted(map(json.dumps, kept))  # a permutation of the same pairs
    assert made["info"]["pairs"] == 6 and made["info"]["tokens_per_pair_mean"] > 0


def test_sft_vs_trl_still_exports_what_other_scripts_import():
    """bench/step_cpu.py (issue 17's speed work) and older scripts call these through sft_vs_trl."""
    for name in ("prepare_data", "smollm2_dir", "worker_tunesmith", "worker_trl", "steady_state", "LORA"):
        assert hasattr(sft_vs_trl, name), name
