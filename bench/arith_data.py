"""Easy arithmetic prompts with a required `#### N` answer format, for GRPO runs and the bench.

`python bench/arith_data.py OUT_DIR` writes arith_train.jsonl (200 rows) and arith_test.jsonl (50
held-out rows): {prompt, answer}; the gsm8k reward compares the number after `####` to `answer`.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

TEMPLATE = "What is {a} + {b}? Think briefly, then give the final answer on its own line as '#### <number>'."


def rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        out.append({"prompt": TEMPLATE.format(a=a, b=b), "answer": str(a + b)})
    return out


def write(out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    train, test = out_dir / "arith_train.jsonl", out_dir / "arith_test.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows(200, 0)))
    test.write_text("".join(json.dumps(r) + "\n" for r in rows(50, 1)))
    return train, test


if __name__ == "__main__":
    print(*write(Path(sys.argv[1] if len(sys.argv) > 1 else "examples/data")))
