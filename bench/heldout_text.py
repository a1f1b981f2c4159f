"""Write the held-out text that `gguf_quants.py --model` scores on the real model: GSM8K test rows
200-239 (question, newline, answer; joined by blank lines), from ../shared/data.

    python bench/heldout_text.py OUT.txt
"""
import json
import sys
from pathlib import Path

GSM8K_TEST = Path(__file__).resolve().parents[2] / "shared" / "data" / "gsm8k" / "test.jsonl"


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python bench/heldout_text.py OUT.txt")
    if not GSM8K_TEST.is_file():
        raise SystemExit(f"{GSM8K_TEST} not found: this table needs ../shared/data/gsm8k beside the repository")
    rows = [json.loads(line) for line in GSM8K_TEST.read_text(encoding="utf-8").splitlines() if line.strip()][200:240]
    Path(sys.argv[1]).write_text("\n\n".join(r["question"] + "\n" + r["answer"] for r in rows), encoding="utf-8")


if __name__ == "__main__":
    main()
