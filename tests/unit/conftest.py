import pytest


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny Llama + BPE tokenizer built by the project's own factory (no hub)."""
    from tunesmith.models.tiny import init_model

    return init_model(tmp_path_factory.mktemp("models") / "tiny", size="tiny", seed=0)


@pytest.fixture(scope="session")
def tok(tiny_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_dir)
