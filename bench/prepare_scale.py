"""Throughput and peak memory of `tunesmith prepare` at 10k and 100k rows, and how many planted
duplicates it removes next to the exact-match dedup the peers offer (Axolotl's `dataset_exact_deduplication`,
LLaMA-Factory / TRL: none).

    PYTHONPATH=src python bench/prepare_scale.py [--sizes 10000 100000] [--tokenizer DIR]

Inputs: ../shared/data/gsm8k/train.jsonl (alpaca: question -> answer) and
../shared/data/hh-rlhf/harmless-base-test.jsonl.gz (preference), replicated to N rows: the first
pass is the real rows; every later copy is perturbed at random: 25% verbatim, 25% spacing/punctuation
changed (an exact duplicate after folding), 50% with 1-3 words dropped, swapped or replaced (a near
duplicate). Wall-clock rows/s depends on how busy the (shared) machine is; rows per CPU-second
of the prepare process does not. Each size runs in a fresh process, so its peak RSS (ru_maxrss) is its own. The peer
column drops rows whose raw JSON text repeats (exact dedup as the peers do it), in the same process
run over the same file. Writes bench/results/prepare_scale.json and prints a table.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data"
SOURCES = {
    "gsm8k": (DATA / "gsm8k" / "train.jsonl", lambda d: {"instruction": d["question"], "output": d["answer"]}),
    "hh-rlhf": (DATA / "hh-rlhf" / "harmless-base-test.jsonl.gz", lambda d: d),
}


def perturb_text(text: str, rng: random.Random, mode: str) -> str:
    """Words that hold a line break (where HH's '\\n\\nHuman:' markers sit) are never touched."""
    if mode == "fold":
        return text.replace(" ", "  ").replace(". ", " . ") if rng.random() < 0.5 else text.replace(",", "")
    words = text.split(" ")
    for _ in range(rng.randint(1, 3)):
        j = rng.randrange(len(words))
        if "\n" in words[j] or (j + 1 < len(words) and "\n" in words[j + 1]):
            continue
        op = rng.choice(("drop", "swap", "replace"))
        if op == "drop" and len(words) > 5:
            words.pop(j)
        elif op == "swap" and j + 1 < len(words):
            words[j], words[j + 1] = words[j + 1], words[j]
        else:
            words[j] = rng.choice(("very", "quite", "the", "then", "so"))
    return " ".join(words)


def perturb(row: dict, rng: random.Random) -> dict:
    r = rng.random()
    if r < 0.25:
        return dict(row)
    mode = "fold" if r < 0.5 else "near"
    out = dict(row)
    if "output" in row:
        out["output"] = perturb_text(row["output"], rng, mode)
    else:  # HH: perturb the final reply of the chosen transcript only, so the pair stays a pair
        head, sep, last = row["chosen"].rpartition("\n\nAssistant:")
        out["chosen"] = head + sep + perturb_text(last, rng, mode)
    return out


def build(name: str, n: int, dest: Path) -> int:
    path, convert = SOURCES[name]
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        base = [convert(json.loads(line)) for line in f if line.strip()]
    rng = random.Random(0)
    with open(dest, "w", encoding="utf-8") as f:
        for i in range(n):
            row = base[i] if i < len(base) else perturb(base[i % len(base)], rng)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return len(base)


def child(path: str, out: str, tokenizer: str | None) -> None:
    """One prepare run; prints a JSON line with time, peak memory and the step counts."""
    sys.path.insert(0, str(ROOT / "src"))
    from tunesmith.config import DataConfig, PrepareConfig
    from tunesmith.data.prepare import run_prepare

    tok = None
    if tokenizer:
        from transformers import AutoTokenizer

        from tunesmith.data.encode import resolve_chat_template

        tok = AutoTokenizer.from_pretrained(tokenizer)
        resolve_chat_template(tok)
    t, cpu = time.perf_counter(), time.process_time()
    m = run_prepare(DataConfig(train=[path], on_error="skip"), PrepareConfig(progress=False), out, tokenizer=tok, overwrite=True)
    secs, cpu = time.perf_counter() - t, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    steps = {s["step"]: s["rows_in"] - s["rows_out"] for s in m["steps"]}
    print(json.dumps({"seconds": secs, "cpu_seconds": cpu, "peak_mib": peak, "steps": steps, "kept": m["splits"]["train"]}))


def peer_exact(path: Path) -> tuple[float, int]:
    """Exact dedup of the raw rows, as the peers do it: (seconds, rows dropped)."""
    t = time.perf_counter()
    seen, dropped = set(), 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            key = json.dumps(json.loads(line), sort_keys=True)
            if key in seen:
                dropped += 1
            else:
                seen.add(key)
    return time.perf_counter() - t, dropped


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000])
    ap.add_argument("--sources", nargs="+", default=list(SOURCES))
    ap.add_argument("--tokenizer", default=None, help="tokenizer dir for token counts (default: whitespace words)")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(*args.child, args.tokenizer)
    if not DATA.exists():
        sys.exit(f"needs {DATA} (the shared data folder)")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sources:
            for n in args.sizes:
                src = Path(tmp) / f"{name}-{n}.jsonl"
                n_base = build(name, n, src)
                cmd = [sys.executable, __file__, "--child", str(src), str(Path(tmp) / f"out-{name}-{n}")]
                if args.tokenizer:
                    cmd += ["--tokenizer", args.tokenizer]
                res = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
                peer_s, peer_dropped = peer_exact(src)
                planted = n - n_base
                ours = res["steps"].get("exact dedup", 0) + res["steps"].get("near dedup", 0)
                results.append({"source": name, "rows": n, "planted_duplicates": planted, **res,
                                "rows_per_s": n / res["seconds"], "rows_per_cpu_s": n / res["cpu_seconds"], "dups_removed": ours,
                                "peer_exact_dups_removed": peer_dropped, "peer_seconds": peer_s})
                print(json.dumps(results[-1]), file=sys.stderr)
    print("| source | rows | rows/s (wall) | rows/s (CPU) | peak MiB | planted dups | removed (tunesmith) | removed (exact, peers) | ratio |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        ratio = r["dups_removed"] / max(1, r["peer_exact_dups_removed"])
        print(f"| {r['source']} | {r['rows']:,} | {r['rows_per_s']:,.0f} | {r['rows_per_cpu_s']:,.0f} | {r['peak_mib']:,.0f} | {r['planted_duplicates']:,} | "
              f"{r['dups_removed']:,} | {r['peer_exact_dups_removed']:,} | {ratio:.2f}x |")
    out = ROOT / "bench" / "results" / "prepare_scale.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
