"""Every table of bench/README.md from one command: `python bench/run.py [TABLE ...] [--repeats N] [--quick]`.

    python bench/run.py --list                       the tables, their commands and rough wall times
    python bench/run.py sft_vs_trl_smollm2 dpo_vs_trl_smollm2 --repeats 3
    python bench/run.py --quick                      every table that has a smoke variant (writes nothing)
    make bench BENCH_ARGS="sft_vs_trl_smollm2"

Each table is its own script (bench/<script>.py) run as a subprocess from the repository root with this
tree's src/ first on PYTHONPATH; the script writes bench/results/<json> and its README block. Around each
table this runner records the machine (bench/common.py: CPU model, cores, memory, load average before and
after), the versions (torch, transformers, peft, trl, bitsandbytes, llama-cpp, the tunesmith commit) and,
for scripts that do not measure it themselves, the fp32 matmul bound before and after; that provenance is
added to the table's JSON under "run_py" (and printed). The comparison scripts (sft_vs_trl, dpo_vs_trl,
peft_methods, memory_real) run their frameworks in strict alternation and report the median of
`--repeats` (default 3); the others measure one tool and have no peer to alternate with (their own
repeat options are noted in the registry). A table that needs what this machine lacks (a GPU, llama.cpp,
the SmolLM2 directory) is skipped with the reason, and the run goes on; the exit status is 1 if any
table failed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import common
from sft_setup import SMOLLM2_DIR


@dataclass(frozen=True)
class Table:
    script: str
    args: tuple[str, ...]  # {repeats}, {smollm2} and {work} are filled in
    results: str  # bench/results/<results>.json
    minutes: str  # rough wall time of the full run (3 repeats) on a quiet 2-core CPU, 1 thread: a guess from earlier runs
    quick: tuple[str, ...] | None = None  # a smoke variant that writes nothing; None: no such variant
    needs: tuple[str, ...] = ()  # "cuda", "llama_cpp", "smollm2"
    prepare: tuple[tuple[str, ...], ...] = ()  # commands run first (in the table's work directory)
    own_bound: bool = False  # the script measures the matmul bound itself
    note: str = ""


TINY = ("-m", "tunesmith.cli", "init-model", "--out", "{work}/small", "--size", "small")
TABLES: dict[str, Table] = {
    "sft_vs_trl": Table("sft_vs_trl.py", ("--repeats", "{repeats}"), "sft_vs_trl", "15-25", ("--quick",), own_bound=True),
    "sft_vs_trl_smollm2": Table(
        "sft_vs_trl.py", ("--configs", "smollm2", "--repeats", "{repeats}"), "sft_vs_trl_smollm2", "120-180",
        ("--configs", "smollm2", "--quick"), needs=("smollm2",), own_bound=True,
        note="issue 17: LoRA, QLoRA, full; 10 steps x 4 packed rows x 512 tokens"),
    "sft_vs_trl_cuda": Table(
        "sft_vs_trl.py", ("--device", "cuda", "--steps", "30", "--steps-128k", "20", "--micro-batch-size", "16",
                          "--grad-accum-steps-128k", "2", "--repeats", "{repeats}"), "sft_vs_trl_cuda", "8 (H100)",
        ("--device", "cuda", "--quick"), needs=("cuda",), own_bound=True),
    "dpo_vs_trl": Table("dpo_vs_trl.py", ("--repeats", "{repeats}"), "dpo_vs_trl", "5-8", ("--quick",), own_bound=True),
    "dpo_vs_trl_smollm2": Table(
        "dpo_vs_trl.py", ("--config", "smollm2", "--repeats", "{repeats}", "--steps", "8", "--micro-batch-size", "1",
                          "--max-length", "320", "--max-prompt-length", "160"), "dpo_vs_trl_smollm2", "11-20",
        ("--config", "smollm2", "--quick", "--micro-batch-size", "1", "--max-length", "320", "--max-prompt-length", "160"),
        needs=("smollm2",), own_bound=True),
    "memory_real": Table(
        "memory_real.py", ("--model", "{smollm2}", "--steps", "3", "--repeats", "{repeats}"), "memory_real",
        "15-30", ("--model", "{smollm2}", "--quick"), needs=("smollm2",),
        note="appends a record to its JSON; its README table (before/after rows) is edited by hand"),
    "peft_methods": Table("peft_methods.py", ("--repeats", "{repeats}"), "peft_methods", "15-25", ("--quick",)),
    "eval_vs_lm_eval": Table("eval_vs_lm_eval.py", ("--questions", "100", "--repeats", "{repeats}"), "eval_vs_lm_eval",
                             "3-5", note="best of --repeats alternating runs (the script's own measure)"),
    "gguf_quants": Table("gguf_quants.py", ("--steps", "200", "--threads", "1"), "gguf_quants", "20",
                         needs=("llama_cpp",), note="median of 3 timings per type inside the script"),
    "gguf_quants_real": Table(
        "gguf_quants.py", ("--model", "{smollm2}", "--eval-file", "{work}/heldout.txt", "--quants",
                           "F16,Q8_0,Q6_K,Q5_K_M,Q4_K_M,Q4_0,Q3_K_M,Q2_K", "--threads", "1"), "gguf_quants_real", "15-20",
        needs=("smollm2", "llama_cpp"), prepare=(("bench/heldout_text.py", "{work}/heldout.txt"),),
        note="SmolLM2 in llama.cpp; held-out text = GSM8K test rows 200-239 (bench/heldout_text.py)"),
    "prepare_scale": Table("prepare_scale.py", (), "prepare_scale", "13"),
    "quantize_ppl": Table("quantize_ppl.py", (), "quantize_ppl", "30-35"),
    "quantize_algos": Table("quantize_algos.py", ("--steps", "150", "--work", "{work}/model"), "quantize_algos", "12"),
    "serve_throughput": Table("serve_throughput.py", ("--requests", "16", "--max-tokens", "32"), "serve_throughput", "1-2"),
    "grpo_vs_trl": Table("grpo_vs_trl.py", ("--steps", "15", "--repeats", "{repeats}"), "grpo_vs_trl", "4-6",
                         note="its README table is edited by hand"),
    "grpo_vs_trl_smollm2": Table(
        "grpo_vs_trl.py", ("--model", "{smollm2}", "--steps", "6", "--repeats", "{repeats}", "--tag", "smollm2"),
        "grpo_vs_trl-smollm2", "10-14", needs=("smollm2",),
        note="SmolLM2 + LoRA, 4 prompts x 4 completions of 16 tokens; its README table is edited by hand"),
    "estimate_accuracy": Table(
        "estimate_accuracy.py", ("--tiny", "{work}/small", "--real", "{smollm2}"), "estimate_accuracy", "60-90",
        ("--table", "--tiny", "{work}/small", "--real", "{smollm2}"), needs=("smollm2",), prepare=(TINY,),
        note="updates the stored rows; its README table is edited by hand (--table prints it)"),
}


@dataclass
class Outcome:
    name: str
    status: str  # ok, failed (exit N), skipped (reason)
    minutes: float = 0.0
    provenance: dict = field(default_factory=dict)


def missing(table: Table) -> str | None:
    """Why this machine cannot run the table, or None."""
    for need in table.needs:
        if need == "smollm2" and not (Path(SMOLLM2_DIR) / "config.json").is_file():
            return f"no SmolLM2 directory at {SMOLLM2_DIR} (set TUNESMITH_SMOLLM2 or make it: see bench/README.md)"
        if need == "cuda" and subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode != 0:
            return "no CUDA GPU (nvidia-smi -L failed)"
        if need == "llama_cpp" and subprocess.run([sys.executable, "-c", "import llama_cpp"], capture_output=True).returncode:
            return "llama-cpp-python is not installed (the gguf extra)"
    return None


def command(name: str, table: Table, quick: bool, repeats: int, work: Path) -> list[str] | None:
    args = table.quick if quick else table.args
    if args is None:
        return None
    fill = {"repeats": str(repeats), "smollm2": SMOLLM2_DIR, "work": str(work)}
    return [sys.executable, str(common.HERE / table.script), *(a.format(**fill) for a in args)]


def env() -> dict:
    src = str(common.REPO / "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p),
            "TOKENIZERS_PARALLELISM": "false"}


def attach(results: Path, prov: dict, since: float) -> bool:
    """Add the provenance to the table's JSON if this run wrote it (a dict, or the last record of a list)."""
    if not results.is_file() or results.stat().st_mtime < since:
        return False
    data = json.loads(results.read_text())
    target = data[-1] if isinstance(data, list) and data and isinstance(data[-1], dict) else data
    if not isinstance(target, dict):
        return False
    target["run_py"] = prov
    common.atomic_write(results, json.dumps(data, indent=1) + "\n")
    return True


def run_table(name: str, table: Table, a: argparse.Namespace) -> Outcome:
    if reason := missing(table):
        return Outcome(name, f"skipped ({reason})")
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        work = Path(tmp)
        cmd = command(name, table, a.quick, a.repeats, work)
        if cmd is None:
            return Outcome(name, "skipped (no --quick variant: the script always writes its README block)")
        print(f"\n=== {name}: {' '.join(cmd[1:])}", flush=True)
        prov = {"command": " ".join(["python", *cmd[1:]]), "quick": a.quick, "machine": common.machine(),
                "versions": common.versions()}
        started, t0 = time.time(), time.perf_counter()
        bound_before = None if table.own_bound or a.no_bound else common.matmul_bound(a.threads)
        rc = 0
        for prep in table.prepare:
            rc = rc or subprocess.run([sys.executable, *(x.format(work=work) for x in prep)], cwd=common.REPO, env=env()).returncode
        rc = rc or subprocess.run(cmd, cwd=common.REPO, env=env()).returncode
        if bound_before:
            prov["matmul_bound"] = common.combined_bound(bound_before, common.matmul_bound(a.threads))
        prov.update(load_avg_end=common.load_avg(), wall_s=round(time.perf_counter() - t0, 1), exit=rc)
        if rc == 0 and not a.quick:
            prov["attached"] = attach(common.RESULTS / f"{table.results}.json", prov, started)
        print(f"--- {name}: exit {rc}, {prov['wall_s'] / 60:.1f} min; machine: "
              f"{common.machine_line(prov['machine'], prov['load_avg_end'])}", flush=True)
        if "matmul_bound" in prov:
            print(f"    fp32 matmul bound {prov['matmul_bound']['gflops']:.1f} GFLOP/s ({a.threads} thread(s))", flush=True)
        return Outcome(name, "ok" if rc == 0 else f"failed (exit {rc})", prov["wall_s"] / 60, prov)


def listing() -> str:
    rows = [f"{'table':20} {'minutes':>22}  command (full; --quick variant)"]
    for name, t in TABLES.items():
        quick = " ".join(t.quick) if t.quick else "none"
        need = f" [needs {', '.join(t.needs)}]" if t.needs else ""
        rows.append(f"{name:20} {t.minutes:>22}  {t.script} {' '.join(t.args)}; quick: {quick}{need}"
                    + (f"\n{'':44}{t.note}" if t.note else ""))
    return "\n".join(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tables", nargs="*", metavar="TABLE", help="a subset (default: every table); --list names them")
    ap.add_argument("--repeats", type=int, default=3, help="runs per framework and cell, alternating (>= 3 for a table)")
    ap.add_argument("--quick", action="store_true", help="each table's smoke variant: short, writes nothing")
    ap.add_argument("--threads", type=int, default=1, help="threads of the matmul bound measured here (the benches use 1)")
    ap.add_argument("--no-bound", action="store_true", help="skip this runner's matmul bound (scripts that measure their own still do)")
    ap.add_argument("--list", action="store_true", help="print the tables and exit")
    a = ap.parse_args(argv)
    if a.list:
        print(listing())
        return 0
    if unknown := [t for t in a.tables if t not in TABLES]:
        ap.error(f"unknown table(s) {unknown}; choose from: {', '.join(TABLES)}")
    if a.repeats < 1:
        ap.error("--repeats must be >= 1")
    if a.repeats < 3 and not a.quick:
        print(f"note: --repeats {a.repeats} < 3: not enough for a table in bench/README.md", file=sys.stderr)
    outcomes = [run_table(name, TABLES[name], a) for name in (a.tables or TABLES)]
    print("\n=== summary")
    for o in outcomes:
        print(f"{o.name:20} {o.status}" + (f", {o.minutes:.1f} min" if o.minutes else ""))
    return 1 if any(o.status.startswith("failed") for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
