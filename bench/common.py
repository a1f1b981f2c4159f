"""What every benchmark table shares: the run order, the median, provenance, the matmul bound, the README block.

Each table's script imports this (bench/ is on sys.path when a script runs as `python bench/x.py`):

- `alternating(frameworks, repeats)` / `schedule(cells, frameworks, repeats)`: the order of the runs,
  t, p, t, p, t, p in every cell (strict alternation, so a drift in the machine's load hits every
  framework alike), and `median_run(runs, key)`: the run with the
  median of `key` (memory and loss are then reported from that same run).
- `provenance(threads)`: versions (importlib.metadata, nothing imported), the tunesmith commit, the machine
  (CPU model, cores, memory, load average). `matmul_bound(threads)`: the fp32 square-sgemm rate at the
  bench's thread count, measured in a fresh subprocess (see `run_worker` for why not in the driver).
- `run_worker(script, name, spec, log, threads)`: one fresh worker process of a table's script.
- `replace_block(text, marker, lines)` / `update_readme(marker, lines)`: the generated block between
  `<!-- marker:begin -->` and `<!-- marker:end -->`, the rest of the file kept byte for byte.

`python bench/common.py --matmul-bound --threads N` prints the bound as JSON (the subprocess side).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
README = HERE / "README.md"
RESULTS = HERE / "results"
PACKAGES = ("torch", "transformers", "peft", "trl", "bitsandbytes", "accelerate", "datasets", "llama_cpp_python")
MATMUL_N = 1024  # 2.1 GFLOP per product: long enough to time, small enough to stay in the L2/L3 sweet spot


# --- run order and median -------------------------------------------------------------------------


def alternating(frameworks: tuple[str, ...] | list[str], repeats: int) -> list[tuple[int, str]]:
    """(repeat, framework) in run order: every framework once per repeat, always in the same order
    (t, p, t, p, t, p for two), so no framework systematically runs on a warmer or busier machine."""
    return [(rep, fw) for rep, _, fw in schedule([None], frameworks, repeats)]


def schedule(cells: list, frameworks: tuple[str, ...] | list[str], repeats: int) -> list[tuple[int, object, str]]:
    """(repeat, cell, framework) in run order for a table of several cells (configurations, methods):
    per repeat, each cell runs its frameworks back to back, so every cell sees t, p, t, p, t, p and the
    two runs compared are minutes apart, not a whole sweep."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    return [(rep, cell, fw) for rep in range(repeats) for cell in cells for fw in frameworks]


def median_run(runs: list[dict], key: str) -> dict:
    """The run whose `key` is the median (the lower middle one for an even count), with every run's
    value of `key` attached as `<key>_all` in run order."""
    if not runs:
        raise ValueError("median_run: no runs")
    ordered = sorted(runs, key=lambda r: r[key])
    return {**ordered[(len(ordered) - 1) // 2], f"{key}_all": [r[key] for r in runs]}


# --- provenance -----------------------------------------------------------------------------------


def versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions from the package metadata (importing torch here would raise the driver's RSS,
    which Linux carries into every worker's ru_maxrss); `tunesmith` is the git commit of this tree."""
    out = {}
    for name in packages:
        try:
            out[name.replace("_", "-")] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    out["tunesmith"] = git_commit()
    return out


def git_commit() -> str:
    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + ("+uncommitted changes" if dirty else "")


def cpu_model(cpuinfo: str | None = None) -> str:
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return platform.processor() or platform.machine()
    for line in cpuinfo.splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> dict:
    """CPU model, logical CPUs (and those this process may use), memory, load average now."""
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu_model(), "cpus": os.cpu_count(), "cpus_usable": usable, "mem_gib": mem,
            "platform": platform.platform(), "python": platform.python_version(), "load_avg": load_avg()}


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_line(m: dict, load_end: list[float] | None = None) -> str:
    end = f", after {load_end[0]:.2f}" if load_end else ""
    return (f"{m['cpu']}, {m['cpus_usable']} of {m['cpus']} CPUs usable, {m['mem_gib']} GiB; "
            f"load average (1 min) before {m['load_avg'][0]:.2f}{end}")


def versions_line(v: dict) -> str:
    return ", ".join(f"{k} {x}" for k, x in v.items())


# --- the fp32 matmul bound ------------------------------------------------------------------------


def measure_matmul(threads: int, n: int = MATMUL_N, trials: int = 7, min_s: float = 0.3) -> dict:
    """GFLOP/s of an n x n x n fp32 product at `threads` torch threads: each trial repeats the product
    for >= min_s seconds; the median trial is the bound (the best is kept too). Runs in this process."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(n, n), torch.randn(n, n)
    out = torch.empty(n, n)
    for _ in range(3):  # warm-up: page in, size the thread pool
        torch.mm(a, b, out=out)
    flop = 2 * n**3
    rates, cpu_rates = [], []
    for _ in range(trials):
        k, t0, c0 = 0, time.perf_counter(), time.process_time()
        while True:
            torch.mm(a, b, out=out)
            k += 1
            dt = time.perf_counter() - t0
            if dt >= min_s:
                break
        rates.append(k * flop / dt / 1e9)
        cpu_rates.append(k * flop / max(time.process_time() - c0, 1e-9) / 1e9 * threads)
    return {"gflops": statistics.median(rates), "gflops_best": max(rates), "gflops_trials": [round(r, 1) for r in rates],
            "gflops_per_cpu_s_x_threads": round(statistics.median(cpu_rates), 1), "n": n, "threads": torch.get_num_threads(),
            "trials": trials}


def matmul_bound(threads: int) -> dict:
    """`measure_matmul` in a fresh subprocess (the driver stays free of torch), with its wall time."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "CUDA_VISIBLE_DEVICES": ""}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--matmul-bound", "--threads", str(threads)],
                          capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"matmul bound failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return {**json.loads(proc.stdout.strip().splitlines()[-1]), "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"),
            "wall_s": round(time.perf_counter() - t0, 1)}


def combined_bound(before: dict, after: dict) -> dict:
    """One bound for the table from the measurements before and after its runs: the median of all trials."""
    trials = before["gflops_trials"] + after["gflops_trials"]
    return {"gflops": statistics.median(trials), "before": before, "after": after}


# --- workers --------------------------------------------------------------------------------------


def maxrss_mb() -> float:
    """Peak RSS of this process in MiB. Drivers spawn workers from a parent that has imported nothing
    heavy: Linux carries the parent's RSS high-water mark into a child's ru_maxrss across fork/exec."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def vm_hwm_mb() -> float | None:
    """The kernel's per-address-space peak RSS (reset at exec): a cross-check of ru_maxrss."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def worker_env(threads: int, cpu_only: bool = True, extra_pythonpath: str | None = None) -> dict:
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "WANDB_DISABLED": "true", "PYTHONWARNINGS": "ignore",
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    if cpu_only:
        env["CUDA_VISIBLE_DEVICES"] = ""  # a CPU table stays on the CPU on a GPU machine too
    if extra_pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([extra_pythonpath, env.get("PYTHONPATH", "")])
    return env


def tunesmith_malloc(env: dict) -> dict:
    """`env` as `tunesmith train` would turn it: under jemalloc/mimalloc when one is found and the
    environment sets no allocator of its own (train/allocator.py). A worker calls `train()` in-process,
    which never re-executes, so the bench applies the CLI's decision to the worker's environment:
    the tunesmith rows measure what a user of `tunesmith train` gets."""
    sys.path.insert(0, str(REPO / "src"))
    from tunesmith.train import allocator  # noqa: PLC0415

    return allocator.decide(env).env or env


def run_worker(script: str | Path, name: str, spec: dict, log: Path, threads: int = 1, cpu_only: bool = True,
               extra_pythonpath: str | None = None) -> dict:
    """`python SCRIPT --worker NAME --spec JSON --out LOG.json` in a fresh process, its output in `log`;
    returns the JSON it wrote plus `process_s` (the whole process: imports, load, data, training).
    The `tunesmith` worker runs under the malloc `tunesmith train` picks (tunesmith_malloc)."""
    out = log.with_suffix(".json")
    cmd = [sys.executable, str(Path(script).resolve()), "--worker", name, "--spec", json.dumps(spec), "--out", str(out)]
    t0 = time.perf_counter()
    with log.open("w") as f:
        env = worker_env(threads, cpu_only, extra_pythonpath)
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO,
                              env=tunesmith_malloc(env) if name == "tunesmith" else env)
    if proc.returncode != 0:
        sys.stderr.write(log.read_text()[-6000:])
        raise SystemExit(f"{name} worker of {Path(script).name} failed (exit {proc.returncode}); log above ({log})")
    result = json.loads(out.read_text())
    result["process_s"] = round(time.perf_counter() - t0, 1)
    return result


# --- outputs --------------------------------------------------------------------------------------


def markers(marker: str) -> tuple[str, str]:
    return f"<!-- {marker}:begin -->", f"<!-- {marker}:end -->"


def replace_block(text: str, marker: str, lines: list[str], heading: str | None = None) -> str:
    """`text` with the block between the markers replaced by `lines` (markers kept); everything outside
    is kept byte for byte. Without the markers the block is appended under `heading` (a `## ...` line).
    A begin marker without its end (or the end first) is refused rather than guessed at."""
    begin, end = markers(marker)
    block = "\n".join([begin, *lines, end])
    i, j = text.find(begin), text.find(end)
    if i < 0 and j < 0:
        head = f"\n\n{heading}\n\n" if heading else "\n\n"
        return text.rstrip("\n") + head + block + "\n"
    if i < 0 or j < i or text.count(begin) > 1 or text.count(end) > 1:
        raise ValueError(f"README block `{marker}`: expected one {begin} followed by one {end}; fix the file by hand")
    return text[:i] + block + text[j + len(end):]


def atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def update_readme(marker: str, lines: list[str], heading: str | None = None, path: Path = README) -> None:
    text = path.read_text() if path.is_file() else "# Benchmarks\n"
    atomic_write(path, replace_block(text, marker, lines, heading))


def write_results(name: str, payload) -> Path:
    """bench/results/<name>.json, written atomically."""
    path = RESULTS / f"{name}.json"
    atomic_write(path, json.dumps(payload, indent=1) + "\n")
    return path


def publish(name: str, payload: dict, table: str, footer: str, heading: str) -> None:
    """Write bench/results/<name>.json and the README block <name>: the run's date, length and command,
    the table, then `footer` (which names the results file). `payload` needs date, elapsed_s, command."""
    path = write_results(name, payload)
    update_readme(name, [
        "", f"Latest run ({payload['date']}, {payload['elapsed_s'] / 60:.1f} min):", "", "```", payload["command"], "```", "",
        table, "", footer, ""], heading=heading, path=README)
    print(f"wrote {path.relative_to(REPO)} and {README.relative_to(REPO)}")


def main() -> None:
    ap = argparse.ArgumentParser(description="the fp32 matmul bound of this machine (GFLOP/s), as JSON")
    ap.add_argument("--matmul-bound", action="store_true", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n", type=int, default=MATMUL_N)
    a = ap.parse_args()
    print(json.dumps(measure_matmul(a.threads, a.n)))


if __name__ == "__main__":
    main()
