"""Perplexity windows of `tunesmith quantize` (quantize_data.chunks)."""

import json


def test_quantize_windows_start_with_bos_only_when_the_tokenizer_adds_it(tiny_dir, tmp_path):
    """SmolLM2 names <|im_start|> its bos_token but never adds it; its perplexity windows must not open
    with it (before the fix every window began with id 1, a chat marker before raw text)."""
    import shutil

    from transformers import AutoTokenizer

    from tunesmith.export.quantize_data import chunks

    tok = AutoTokenizer.from_pretrained(tiny_dir)  # adds <s>
    assert chunks(tok, ["one two three four five six seven eight nine ten"] * 4, 8, 2)[:, 0].tolist() == [tok.bos_token_id] * 2
    no_bos = tmp_path / "no_bos"
    shutil.copytree(tiny_dir, no_bos)
    data = json.loads((no_bos / "tokenizer.json").read_text())
    data["post_processor"] = None
    (no_bos / "tokenizer.json").write_text(json.dumps(data))
    tok = AutoTokenizer.from_pretrained(no_bos)
    assert tok("a")["input_ids"][:1] != [tok.bos_token_id] and tok.bos_token_id is not None
    rows = chunks(tok, ["one two three four five six seven eight nine ten"] * 4, 8, 2)
    assert tok.bos_token_id not in rows[:, 0].tolist()
