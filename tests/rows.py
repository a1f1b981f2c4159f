"""Data rows shared by the tests. A plain module, not conftest: there are two conftest.py files
(tests/ and tests/browser/), and `from conftest import ...` gets whichever pytest loaded last."""

import random


def alpaca_rows(n: int = 64, seed: int = 0) -> list[dict]:
    """`n` short instruction rows of four kinds, 1 to 8 words of answer: lengths vary by ~3x,
    and the answers are regular enough that a tiny model's loss falls within a few dozen steps."""
    rng = random.Random(seed)
    words = ["red", "blue", "green", "cat", "dog", "river", "stone", "light", "tree", "cloud", "sun", "moon"]
    rows = []
    for i in range(n):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        kind = i % 4
        if kind == 0:
            rows.append({"instruction": f"Add {a} and {b}.", "input": "", "output": f"{a} plus {b} is {a + b}."})
        elif kind == 1:
            picked = rng.sample(words, rng.randint(1, 6))
            rows.append({"instruction": "Repeat the words.", "input": " ".join(picked), "output": " ".join(picked)})
        elif kind == 2:
            w = rng.choice(words)
            rows.append({"instruction": f"Spell the word {w}.", "input": "", "output": "-".join(w)})
        else:
            picked = rng.sample(words, rng.randint(2, 8))
            rows.append({"instruction": "Sort these words.", "input": ", ".join(picked), "output": ", ".join(sorted(picked))})
    return rows


def packed_examples(n: int = 5, seed: int = 0) -> list:
    """`n` encoded examples of 6-29 random tokens, the first third of each unlabelled: packing tests."""
    import torch

    from tunesmith.data.encode import IGNORE_INDEX, Encoded

    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        L = int(torch.randint(6, 30, (1,), generator=g))
        ids = torch.randint(5, 500, (L,), generator=g).tolist()
        out.append(Encoded(ids, [IGNORE_INDEX] * (L // 3) + ids[L // 3:], f"ex{i}"))
    return out
