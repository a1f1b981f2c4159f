"""Where a GRPO step's CPU time goes, tunesmith and TRL side by side, on bench/grpo_vs_trl.py's config.

    OMP_NUM_THREADS=1 nice -n 19 python bench/grpo_profile.py [--model DIR] [--steps 8] [--only tunesmith]

Each framework runs in its own process (`--worker`), the same worker as grpo_vs_trl.py, with a few
of its methods wrapped to add up the CPU seconds (`time.process_time`: user + sys, so a shared
machine's load does not count) spent inside them: generation, the reward functions, any scoring
pass between generation and training (tunesmith's rollout-time log-probs, TRL's old / reference
log-probs), the training forward (loss included) and `Tensor.backward`. "other" is the rest of the
step: the optimizer, the loop, logging. Steps 3..N, per step; the first two are warm-up.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpo_vs_trl as bench

EVENTS: list[tuple[float, str, float]] = []  # (process_time at the end, phase, CPU seconds inside)


def _wrap(owner, name: str, phase: str) -> None:
    inner = getattr(owner, name)
    depth = [0]

    def timed(*args, **kwargs):
        depth[0] += 1
        t = time.process_time()
        try:
            return inner(*args, **kwargs)
        finally:
            depth[0] -= 1
            if depth[0] == 0:  # a recursive / re-entrant call counts once
                end = time.process_time()
                EVENTS.append((end, phase, end - t))

    setattr(owner, name, timed)


def instrument(framework: str) -> None:
    import torch

    _wrap(torch.Tensor, "backward", "backward")
    if framework == "tunesmith":
        from tunesmith.objectives.rl import grpo, online

        _wrap(online, "sample", "generate")
        _wrap(online, "score_all", "reward")
        _wrap(online.OnlineRLObjective, "_score_tokens", "score pass")
        _wrap(grpo.GRPOObjective, "step", "train forward")
    else:
        from trl import GRPOTrainer

        _wrap(GRPOTrainer, "_generate_single_turn", "generate")
        _wrap(GRPOTrainer, "_calculate_rewards", "reward")
        _wrap(GRPOTrainer, "_get_per_token_logps_and_entropies", "logps")  # score pass when outside compute_loss
        _wrap(GRPOTrainer, "compute_loss", "train forward")


def split(result: dict) -> dict:
    """Per-step CPU seconds of each phase over steps 3..N (events that ended in that window)."""
    c = result["cpu"]
    lo, hi, n = c[1], c[-1], len(c) - 2
    phases: dict[str, float] = {}
    fwd_windows = [(end - dt, end) for end, p, dt in result["events"] if p == "train forward"]
    for end, phase, dt in result["events"]:
        if not lo < end <= hi:
            continue
        if phase == "logps":  # TRL calls it inside compute_loss too: count only the calls outside it
            if any(a <= end - dt and end <= b for a, b in fwd_windows):
                continue
            phase = "score pass"
        phases[phase] = phases.get(phase, 0.0) + dt
    total = (hi - lo) / n
    out = {k: round(v / n, 4) for k, v in sorted(phases.items())}
    out["other"] = round(total - sum(out.values()), 4)
    out["total"] = round(total, 4)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--model")
    ap.add_argument("--only", choices=["tunesmith", "trl"])
    ap.add_argument("--worker")
    ap.add_argument("--spec")
    a = ap.parse_args()
    if a.worker:
        import torch

        torch.set_num_threads(1)
        spec = json.loads(Path(a.spec).read_text())
        instrument(a.worker)
        out = (bench.worker_tunesmith if a.worker == "tunesmith" else bench.worker_trl)(spec)
        Path(spec["out"]).write_text(json.dumps({**out, "events": EVENTS}))
        return
    tmp = Path(tempfile.mkdtemp(prefix="grpo-profile-"))
    model, data = bench.prepare(tmp, a.model)
    for name in [a.only] if a.only else ["tunesmith", "trl"]:
        spec = {"model_dir": model, "data": str(data), "steps": a.steps, "run_dir": str(tmp / f"run-{name}"),
                "out": str(tmp / f"{name}.json"), "rl": {}}
        (tmp / f"{name}-spec.json").write_text(json.dumps(spec))
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        subprocess.run([sys.executable, __file__, "--worker", name, "--spec", str(tmp / f"{name}-spec.json")], check=True, env=env)
        print(name, json.dumps(split(json.loads(Path(spec["out"]).read_text()))), flush=True)


if __name__ == "__main__":
    main()
