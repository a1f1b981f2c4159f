"""bench/common.py and bench/flops.py: run order, median, README blocks, provenance, the FLOP formula."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402
import flops  # noqa: E402


def test_alternating_is_strict_t_p_t_p():
    order = common.alternating(("tunesmith", "trl"), 3)
    assert [fw for _, fw in order] == ["tunesmith", "trl"] * 3
    assert [rep for rep, _ in order] == [0, 0, 1, 1, 2, 2]
    with pytest.raises(ValueError, match="repeats"):
        common.alternating(("a", "b"), 0)


def test_schedule_runs_each_cells_pair_back_to_back():
    order = common.schedule(["lora", "full"], ("t", "p"), 2)
    assert order == [(0, "lora", "t"), (0, "lora", "p"), (0, "full", "t"), (0, "full", "p"),
                     (1, "lora", "t"), (1, "lora", "p"), (1, "full", "t"), (1, "full", "p")]
    per_cell = [fw for _, cell, fw in order if cell == "full"]
    assert per_cell == ["t", "p", "t", "p"]


def test_median_run_is_the_middle_run_with_its_own_numbers():
    runs = [{"tps": 30.0, "peak": 3}, {"tps": 10.0, "peak": 1}, {"tps": 20.0, "peak": 2}]
    m = common.median_run(runs, "tps")
    assert (m["tps"], m["peak"]) == (20.0, 2)  # memory comes from the same run as the speed
    assert m["tps_all"] == [30.0, 10.0, 20.0]  # every run, in run order
    even = common.median_run([{"tps": 4.0}, {"tps": 1.0}, {"tps": 3.0}, {"tps": 2.0}], "tps")
    assert even["tps"] == 2.0  # the lower middle one: a real run, never an average of two
    with pytest.raises(ValueError):
        common.median_run([], "tps")


README = """# Benchmarks

## one
<!-- one:begin -->
old one
<!-- one:end -->
text between, kept  \t
<!-- two:begin -->
old two
<!-- two:end -->
tail without a newline"""


def test_replace_block_keeps_everything_outside_the_markers():
    new = common.replace_block(README, "one", ["", "| a |", ""])
    assert new == README.replace("old one", "\n| a |\n")
    assert "old two" in new and new.endswith("tail without a newline")
    again = common.replace_block(new, "one", ["", "| a |", ""])
    assert again == new  # idempotent


def test_replace_block_appends_a_missing_block_under_its_heading():
    new = common.replace_block(README, "three", ["x"], heading="## three")
    assert new.startswith(README)
    assert new.endswith("\n\n## three\n\n<!-- three:begin -->\nx\n<!-- three:end -->\n")


@pytest.mark.parametrize("broken", ["<!-- one:begin -->\nno end", "<!-- one:end -->\n<!-- one:begin -->",
                                    "<!-- one:begin --><!-- one:end --><!-- one:begin --><!-- one:end -->"])
def test_replace_block_refuses_broken_markers(broken):
    with pytest.raises(ValueError, match="one"):
        common.replace_block(broken, "one", ["x"])


def test_update_readme_writes_atomically(tmp_path):
    path = tmp_path / "README.md"
    path.write_text(README)
    common.update_readme("two", ["new two"], path=path)
    assert path.read_text() == README.replace("old two", "new two")
    assert [p.name for p in tmp_path.iterdir()] == ["README.md"]  # no temporary left behind


def test_cpu_model_and_machine_and_versions():
    assert common.cpu_model("processor\t: 0\nmodel name\t: Example CPU @ 2.0GHz\nflags\t: x") == "Example CPU @ 2.0GHz"
    m = common.machine()
    assert m["cpus"] >= 1 and len(m["load_avg"]) == 3
    v = common.versions()
    assert v["torch"] and v["tunesmith"]  # the commit of this tree (or says it is not a checkout)
    assert "Example CPU" in common.machine_line({**m, "cpu": "Example CPU"}, [1.0, 1.0, 1.0])


def test_measure_matmul_reports_a_positive_rate():
    r = common.measure_matmul(threads=1, n=64, trials=3, min_s=0.01)
    assert r["gflops"] > 0 and len(r["gflops_trials"]) == 3 and r["threads"] == 1
    both = common.combined_bound({"gflops_trials": [1.0, 2.0, 9.0]}, {"gflops_trials": [3.0, 4.0, 5.0]})
    assert both["gflops"] == 3.5  # median of all six trials


TINY = {"hidden_size": 4, "intermediate_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2,
        "num_key_value_heads": 1, "vocab_size": 10}


def test_flops_on_a_hand_computed_case():
    s = flops.shape_of(TINY)
    assert s["head_dim"] == 2
    # per layer: q 4x4, k 4x2, v 4x2, o 4x4, gate 4x8, up 4x8, down 8x4 = 16+8+8+16+32+32+32 = 144
    assert flops.linear_params(s) == 2 * 144
    # LoRA r=1: (4+4) + (4+2) + (4+2) + (4+4) + (4+8) + (4+8) + (8+4) = 64 per layer
    assert flops.lora_params(s, 1) == 2 * 64
    context = flops.context_of([2, 4])  # (4 + 16) / 6
    assert context == pytest.approx(10 / 3)
    lora = flops.flops_per_token(s, "lora", context, label_fraction=0.5, lora_r=1)
    assert lora["linear"] == 4 * 288 + 6 * 128  # 1,920
    assert lora["attention"] == pytest.approx(6 * (10 / 3) * 4 * 2)  # 160: 6 c D L with D = 2 heads x 2
    assert lora["head"] == pytest.approx(4 * 4 * 10 * 0.5)  # 80
    assert lora["total"] == pytest.approx(2160)
    full = flops.flops_per_token(s, "full", context, label_fraction=0.5, lora_r=1)
    assert full["total"] == pytest.approx(6 * 288 + 160 + 6 * 40 * 0.5)  # 2,008
    assert flops.flops_per_token(s, "qlora", context, 0.5, 1) == lora  # same matmuls on dequantized weights
    assert flops.bound_fraction(2160, 1e6, 4.32) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="method"):
        flops.flops_per_token(s, "dora", context, 0.5)


def test_linear_params_match_a_real_llama():
    """The formula's N against the decoder Linear weights of a transformers model of the same shape."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = {**TINY, "hidden_size": 32, "intermediate_size": 48, "num_attention_heads": 4, "num_key_value_heads": 2,
           "vocab_size": 64}
    model = LlamaForCausalLM(LlamaConfig(**cfg))
    n = sum(m.weight.numel() for m in model.model.layers.modules() if isinstance(m, torch.nn.Linear))
    assert flops.linear_params(flops.shape_of(cfg)) == n


def test_publish_writes_the_results_and_the_readme_block(tmp_path, monkeypatch):
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results")
    monkeypatch.setattr(common, "README", tmp_path / "README.md")
    monkeypatch.setattr(common, "REPO", tmp_path)
    (tmp_path / "results").mkdir()
    (tmp_path / "README.md").write_text("# Benchmarks\n\nkept\n")
    payload = {"command": "python bench/x.py", "date": "2026-11-29 12:00:00", "elapsed_s": 90.0, "results": [1]}
    common.publish("x", payload, "| a |\n|---|", "Footer `bench/results/x.json`.", heading="## X")
    assert (tmp_path / "results" / "x.json").read_text().startswith("{")
    text = (tmp_path / "README.md").read_text()
    assert "kept" in text and "## X" in text
    block = text[text.index("<!-- x:begin -->"):text.index("<!-- x:end -->")]
    assert "Latest run (2026-11-29 12:00:00, 1.5 min):" in block and "python bench/x.py" in block
    assert block.index("| a |") < block.index("Footer")


def test_tunesmith_worker_gets_the_malloc_tunesmith_train_picks(monkeypatch):
    """The bench's tunesmith worker calls train() in-process (no re-exec), so the driver gives it the
    environment `tunesmith train` would re-exec with; a user's own allocator variables stand."""
    from tunesmith.train import allocator

    je = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    monkeypatch.setattr(allocator, "find_library", lambda lib, dirs=None: je if lib.name == "jemalloc" else None)
    env = common.tunesmith_malloc({"PATH": "/bin"})
    assert env["LD_PRELOAD"] == str(je) and env["MALLOC_CONF"] == "dirty_decay_ms:-1,muzzy_decay_ms:-1"
    assert common.tunesmith_malloc({"PATH": "/bin", "LD_PRELOAD": "/mine.so"}) == {"PATH": "/bin", "LD_PRELOAD": "/mine.so"}
    assert common.tunesmith_malloc({"PATH": "/bin", allocator.CHOICE_ENV: "system"}) == {"PATH": "/bin", allocator.CHOICE_ENV: "system"}
