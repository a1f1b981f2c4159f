"""tunesmith eval against lm-evaluation-harness: multiple-choice log-likelihood scoring on the CPU.

    .venv/bin/python bench/eval_vs_lm_eval.py [--questions 100] [--batch-size 16] [--repeats 2]

Needs lm_eval (`pip install "tunesmith[harness]"`). Prints a table, writes
bench/results/eval_vs_lm_eval.json and the table into bench/README.md.

Workload: the "small" tiny Llama (hidden 256, 4 layers, vocab 2048, built by tunesmith's factory,
seed 0), fp32, one torch thread. Questions: the first N of GSM8K test (`../shared/data`) as
4-way multiple choice, in two layouts: "answers" (context "Question: ...\\nAnswer:", choices
" <number>": the gold final answer and those of the next three questions) and "letters" (MMLU's
layout: the four numbers listed as A-D in the context, choices " A" ... " D"; one-token choices,
which both frameworks score from one shared forward pass). Without ../shared: synthetic questions,
and it says so.
Both score the identical (context, continuation) requests: tunesmith with
`evaluate.loglik.continuation_logprobs`, lm-eval with `HFLM(...).loglikelihood` (add_bos_token=True,
the same batch size). Timed: the scoring call only (model loading excluded), best of `repeats`
alternating runs. Reported: requests/s, the largest |difference| of a log-likelihood between the two,
accuracy of each and how often their picks agree.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import common
import torch

HERE = Path(__file__).resolve().parent
GSM8K = HERE.parent.parent / "shared" / "data" / "gsm8k" / "test.jsonl"


def questions(n: int) -> tuple[list[tuple[str, list[str], int]], str]:
    if GSM8K.is_file():
        rows = [json.loads(line) for line in GSM8K.open()][: n + 3]
        golds = [r["answer"].split("####")[-1].strip() for r in rows]
        src = f"GSM8K test, first {n} questions"
        qs = [r["question"] for r in rows]
    else:
        qs = [f"What is {i} plus {i + 3}?" for i in range(n + 3)]
        golds = [str(2 * i + 3) for i in range(n + 3)]
        src = f"synthetic sums ({GSM8K} not found)"
    out = []
    for i in range(n):
        choices = [golds[i]] + [g for g in golds[i + 1 : i + 4] if g != golds[i]][:3]
        while len(choices) < 4:
            choices.append(str(len(choices) * 1000 + i))
        k = i % 4  # the gold answer moves through the four positions
        choices = choices[1 : k + 1] + choices[:1] + choices[k + 1 :]
        out.append((f"Question: {qs[i]}\nAnswer:", [" " + c for c in choices], k))
    return out, src


def as_letters(qs):
    return [(c.removesuffix("Answer:") + "".join(f"{'ABCD'[j]}.{x}\n" for j, x in enumerate(ch)) + "Answer:",
             [f" {'ABCD'[j]}" for j in range(len(ch))], g) for c, ch, g in qs]


def run_tunesmith(model, tok, pairs, bs):
    from tunesmith.evaluate.loglik import continuation_logprobs

    t = time.perf_counter()
    lps = continuation_logprobs(model, tok, pairs, batch_size=bs)
    return lps, time.perf_counter() - t


def run_lm_eval(lm, pairs):
    from lm_eval.api.instance import Instance

    reqs = [Instance("loglikelihood", {}, (c, x), i) for i, (c, x) in enumerate(pairs)]
    t = time.perf_counter()
    out = lm.loglikelihood(reqs, disable_tqdm=True)
    return [lp for lp, _ in out], time.perf_counter() - t


def picks(lps, qs):
    res, i = [], 0
    for _, ch, _ in qs:
        mine = lps[i : i + len(ch)]
        res.append(max(range(len(mine)), key=mine.__getitem__))
        i += len(ch)
    return res


def write_readme(table: str, cmd: str, meta: str) -> None:
    common.update_readme("eval_vs_lm_eval", ["", f"Latest run ({time.strftime('%Y-%m-%d %H:%M:%S')}):", "", "```", cmd, "```",
                                             "", table, "", meta, ""],
                         heading="## tunesmith eval vs lm-evaluation-harness (`eval_vs_lm_eval.py`)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--questions", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from lm_eval.models.huggingface import HFLM
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.models.tiny import init_model

    base_qs, src = questions(args.questions)
    workloads = {"answers": base_qs, "letters": as_letters(base_qs)}
    rows, summary, notes = [], {}, []
    with tempfile.TemporaryDirectory() as tmp:
        mdir = init_model(Path(tmp) / "small", size="small", seed=0)
        tok = AutoTokenizer.from_pretrained(mdir)
        model = AutoModelForCausalLM.from_pretrained(mdir, dtype=torch.float32).eval()
        lm = HFLM(pretrained=str(mdir), batch_size=args.batch_size, device="cpu", dtype="float32", add_bos_token=True)
        for name, qs in workloads.items():
            pairs = [(c, x) for c, ch, _ in qs for x in ch]
            times = {"tunesmith": [], "lm-eval": []}
            for _ in range(args.repeats):
                ts, dt = run_tunesmith(model, tok, pairs, args.batch_size)
                times["tunesmith"].append(dt)
                le, dt = run_lm_eval(lm, pairs)
                times["lm-eval"].append(dt)
            diff = max(abs(a - b) for a, b in zip(ts, le))
            p_ts, p_le = picks(ts, qs), picks(le, qs)
            acc = {k: sum(p == g for p, (_, _, g) in zip(v, qs)) / len(qs) for k, v in (("tunesmith", p_ts), ("lm-eval", p_le))}
            best = {k: min(v) for k, v in times.items()}
            rate = {k: len(pairs) / v for k, v in best.items()}
            rows += [f"| {name} | {k} | {len(pairs)} | {best[k]:.2f} | {rate[k]:.1f} | {acc[k]:.3f} |" for k in best]
            rows.append(f"| {name} | **tunesmith / lm-eval** | | | **{rate['tunesmith'] / rate['lm-eval']:.2f}x** | |")
            notes.append(f"{name}: largest |log-likelihood difference| {diff:.2e}, picks agree on {sum(a == b for a, b in zip(p_ts, p_le))}/{len(qs)}")
            summary[name] = {"times": times, "acc": acc, "max_abs_diff": diff, "requests": len(pairs)}
    table = "\n".join(["| layout | framework | requests | seconds (best) | requests/s | acc |",
                       "|---|---|---:|---:|---:|---:|", *rows])
    import lm_eval
    import transformers

    meta = (f"Data: {src}, 4 choices each. Model: tiny 'small' Llama (untrained), fp32, 1 thread, batch {args.batch_size}, "
            f"best of {args.repeats} alternating runs. " + "; ".join(notes) + f". Versions: lm_eval {lm_eval.__version__}, "
            f"transformers {transformers.__version__}, torch {torch.__version__}.")
    print(table + "\n\n" + meta)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "eval_vs_lm_eval.json").write_text(json.dumps(
        {"source": src, "workloads": summary}, indent=2))
    write_readme(table, "PYTHONPATH=src .venv/bin/python bench/eval_vs_lm_eval.py " + " ".join(sys.argv[1:]), meta)


if __name__ == "__main__":
    main()
