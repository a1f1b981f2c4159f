"""Easy arithmetic prompts with a required `#### N` answer format, for GRPO runs and the bench.

`python bench/arith_data.py OUT_DIR` writes arith_train.jsonl (200 rows) and arith_test.jsonl (50
held-out rows): {prompt, answer}; the gsm8k reward compares the number after `####` to `answer`.

`prompt` is a message list with one worked example (a user turn and its `#### 7` answer) before the
question. Why: SmolLM2-135M-Instruct never wrote `####` when the format was only described in the
instruction (0 of 24 samples at temperature 1, four wordings tried); with the one example it does in
~1 of 3 samples, and GRPO can reinforce only what the policy sometimes samples.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

TEMPLATE = "What is {a} + {b}? End with the final answer as '#### <number>'."
EXAMPLE = [{"role": "user", "content": TEMPLATE.format(a=3, b=4)}, {"role": "assistant", "content": "3 + 4 = 7\n#### 7"}]


def rows(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        out.append({"prompt": [*EXAMPLE, {"role": "user", "content": TEMPLATE.format(a=a, b=b)}], "answer": str(a + b)})
    return out


def write(out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    train, test = out_dir / "arith_train.jsonl", out_dir / "arith_test.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows(200, 0)))
    test.write_text("".join(json.dumps(r) + "\n" for r in rows(50, 1)))
    return train, test


if __name__ == "__main__":
    print(*write(Path(sys.argv[1] if len(sys.argv) > 1 else "examples/data")))
