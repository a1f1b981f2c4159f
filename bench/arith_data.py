"""Arithmetic prompts with a required `#### N` answer format, for GRPO runs and the bench.

`python bench/arith_data.py OUT_DIR [TASK]` writes arith_train.jsonl (200 rows) and arith_test.jsonl
(200 held-out rows whose questions are not in the training rows): {prompt, answer}; the gsm8k
reward compares the number after `####` to `answer`. Tasks (`TASKS`):

- `add`: a + b, a, b in 1..20 (the default; the first SmolLM2 run)
- `add2`: a + b, a, b in 10..99
- `addsub`: a + b - c, a, b in 1..20, c in 1..a+b
- `mul`: a * b, a, b in 2..12

`prompt` is a message list with one worked example of the task (a user turn and its `#### N`
answer) before the question. Why: SmolLM2-135M-Instruct never wrote `####` when the format was only
described in the instruction (0 of 24 samples at temperature 1, four wordings tried); with the one
example it does in ~1 of 3 samples, and GRPO can reinforce only what the policy sometimes samples.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

SUFFIX = " End with the final answer as '#### <number>'."


def _add(lo: int, hi: int):
    def make(rng: random.Random) -> tuple[str, int]:
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        return f"What is {a} + {b}?", a + b
    return make


def _addsub(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(1, 20), rng.randint(1, 20)
    c = rng.randint(1, a + b)
    return f"What is {a} + {b} - {c}?", a + b - c


def _mul(rng: random.Random) -> tuple[str, int]:
    a, b = rng.randint(2, 12), rng.randint(2, 12)
    return f"What is {a} * {b}?", a * b


# name -> (question maker, the worked example: question, assistant answer)
TASKS = {
    "add": (_add(1, 20), ("What is 3 + 4?", "3 + 4 = 7\n#### 7")),
    "add2": (_add(10, 99), ("What is 23 + 45?", "23 + 45 = 68\n#### 68")),
    "addsub": (_addsub, ("What is 5 + 8 - 3?", "5 + 8 = 13\n13 - 3 = 10\n#### 10")),
    "mul": (_mul, ("What is 3 * 4?", "3 * 4 = 12\n#### 12")),
}


def rows(n: int, seed: int, task: str = "add", exclude: frozenset[str] = frozenset()) -> list[dict]:
    """`n` rows of `task`; questions in `exclude` are skipped (held-out rows never repeat a training
    question), repeats within the rows are allowed (small tasks have few distinct questions)."""
    if task not in TASKS:
        raise SystemExit(f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
    make, (ex_q, ex_a) = TASKS[task]
    example = [{"role": "user", "content": ex_q + SUFFIX}, {"role": "assistant", "content": ex_a}]
    rng = random.Random(seed)
    out = []
    for _ in range(100 * n):
        if len(out) == n:
            return out
        q, ans = make(rng)
        if q not in exclude:
            out.append({"prompt": [*example, {"role": "user", "content": q + SUFFIX}], "answer": str(ans)})
    raise SystemExit(f"task {task}: fewer than {n} questions outside the training rows")


def write(out_dir: Path, task: str = "add", n_train: int = 200, n_test: int = 200) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    train_rows = rows(n_train, 0, task)
    seen = frozenset(r["prompt"][-1]["content"].removesuffix(SUFFIX) for r in train_rows)
    test_rows = rows(n_test, 1, task, exclude=seen)
    train, test = out_dir / "arith_train.jsonl", out_dir / "arith_test.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in train_rows))
    test.write_text("".join(json.dumps(r) + "\n" for r in test_rows))
    return train, test


if __name__ == "__main__":
    print(*write(Path(sys.argv[1] if len(sys.argv) > 1 else "examples/data"), sys.argv[2] if len(sys.argv) > 2 else "add"))
