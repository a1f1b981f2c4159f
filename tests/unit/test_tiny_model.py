"""The tiny-model factory writes a directory that plain transformers loads, deterministically."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from tunesmith.errors import UserError
from tunesmith.models.corpus import builtin_corpus
from tunesmith.models.tiny import SIZES, init_model

# A small corpus keeps each build well under a second; the builtin one is tested once below.
SMALL_CORPUS_DOCS = 300


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(builtin_corpus(SMALL_CORPUS_DOCS, seed=1)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, corpus_file):
    return init_model(tmp_path_factory.mktemp("m") / "tiny", corpus=[corpus_file], vocab=512)


def test_round_trips_through_auto_classes(model_dir):
    """Loading needs only transformers, and the loaded weights compute the same logits as a
    model rebuilt in memory from the same config and seed."""
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = AutoTokenizer.from_pretrained(model_dir)

    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["hidden_size"] == SIZES["tiny"]["hidden_size"]
    assert config["tie_word_embeddings"] is False
    assert model.config.vocab_size == len(tok)
    assert model.get_input_embeddings().weight.shape[0] == len(tok)
    assert model.dtype == torch.float32

    assert tok.eos_token == "<|im_end|>"
    assert tok.pad_token_id != tok.eos_token_id
    assert [tok.pad_token_id, tok.bos_token_id, tok.eos_token_id] == [0, 1, 2]
    assert tok.convert_tokens_to_ids(["<|im_start|>", "<unk>"]) == [3, 4]
    assert model.generation_config.eos_token_id == tok.eos_token_id
    assert model.generation_config.pad_token_id == tok.pad_token_id

    torch.manual_seed(0)
    rebuilt = type(model)(model.config)
    ids = tok("The red fox walks to the market.", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = rebuilt(ids).logits
        got = model(ids).logits
    assert torch.equal(got, expected)
    # Guards against a vacuous pass (e.g. all-zero weights giving equal logits everywhere).
    assert got.std() > 0


def test_bos_comes_from_the_post_processor(model_dir):
    tok = AutoTokenizer.from_pretrained(model_dir)
    with_bos = tok("hi").input_ids
    without = tok("hi", add_special_tokens=False).input_ids
    assert with_bos[0] == tok.bos_token_id
    assert with_bos[1:] == without
    assert tok.bos_token_id not in without


def test_chat_template_renders_chatml_with_one_bos(model_dir):
    tok = AutoTokenizer.from_pretrained(model_dir)
    messages = [
        {"role": "user", "content": "What color is the fox?"},
        {"role": "assistant", "content": "The fox is red."},
    ]
    text = tok.apply_chat_template(messages, tokenize=False)
    assert text == (
        "<s><|im_start|>user\nWhat color is the fox?<|im_end|>\n"
        "<|im_start|>assistant\nThe fox is red.<|im_end|>\n"
    )
    prompt = tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_end|>\n<|im_start|>assistant\n")

    ids = tok(text, add_special_tokens=False).input_ids
    assert ids[0] == tok.bos_token_id
    assert ids.count(tok.bos_token_id) == 1
    # Each turn marker is one token, not a string of byte pieces.
    assert ids.count(tok.convert_tokens_to_ids("<|im_start|>")) == 2
    assert ids.count(tok.eos_token_id) == 2


@pytest.mark.parametrize("text", [
    "naïve café 123 — 東京",
    "  leading spaces, trailing\t\n",
    "emoji 🦊 and \x00 control \r\n bytes",
    "The red fox walks to the market . It sees three apples , do n't you ?",
])
def test_encode_decode_is_lossless(model_dir, text):
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = tok(text, add_special_tokens=False).input_ids
    assert tok.unk_token_id not in ids
    assert tok.decode(ids) == text
    assert tok.decode(tok(text).input_ids, skip_special_tokens=True) == text


def test_same_seed_gives_identical_files(tmp_path, corpus_file):
    a = init_model(tmp_path / "a", corpus=[corpus_file], vocab=400, seed=3)
    b = init_model(tmp_path / "b", corpus=[corpus_file], vocab=400, seed=3)
    c = init_model(tmp_path / "c", corpus=[corpus_file], vocab=400, seed=4)
    wa, wb, wc = (load_file(d / "model.safetensors") for d in (a, b, c))
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not torch.equal(wa["model.embed_tokens.weight"], wc["model.embed_tokens.weight"])
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()


def test_output_has_ordinary_permissions(tmp_path, model_dir):
    """The temp-dir-and-rename write must not leave 0700/0600 modes behind."""
    (tmp_path / "d").mkdir()
    (tmp_path / "f").touch()
    assert model_dir.stat().st_mode == (tmp_path / "d").stat().st_mode
    for path in model_dir.iterdir():
        assert path.stat().st_mode == (tmp_path / "f").stat().st_mode, path.name


def test_refuses_to_overwrite_then_replaces_with_overwrite(tmp_path, corpus_file):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match=r"(?s)already exists.*--overwrite") as err:
        init_model(out, corpus=[corpus_file], vocab=300)
    assert str(out) in str(err.value)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert (out / "keep.txt").read_text() == "mine"
    # --overwrite replaces only what tunesmith wrote: a folder of the user's files is kept (issue 16).
    with pytest.raises(UserError, match="tunesmith did not write"):
        init_model(out, corpus=[corpus_file], vocab=300, overwrite=True)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]

    model = tmp_path / "model"
    init_model(model, corpus=[corpus_file], vocab=300, seed=1)
    (model / "stale.txt").write_text("from an older init")
    init_model(model, corpus=[corpus_file], vocab=300, overwrite=True)
    assert not (model / "stale.txt").exists()
    assert (model / "model.safetensors").is_file()
    # Only the outputs remain beside them: no temp or old directories left behind.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "out"]


def test_empty_existing_dir_is_filled_without_overwrite(tmp_path, corpus_file):
    out = tmp_path / "empty"
    out.mkdir()
    init_model(out, corpus=[corpus_file], vocab=300)
    assert (out / "tokenizer.json").is_file()


def test_custom_corpus_shapes_the_vocab(tmp_path):
    corpus = tmp_path / "zz.txt"
    corpus.write_text("zyzzyva quokka\n" * 50 + "zyzzyva\n" * 50, encoding="utf-8")
    out = init_model(tmp_path / "m", corpus=[corpus], vocab=300)
    tok = AutoTokenizer.from_pretrained(out)
    # Frequent words of this corpus become single tokens; they would not from the builtin one.
    assert len(tok("zyzzyva", add_special_tokens=False).input_ids) == 1
    assert len(tok(" quokka", add_special_tokens=False).input_ids) == 1
    assert len(tok) <= 300


def test_builtin_corpus_is_the_default(tmp_path):
    out = init_model(tmp_path / "m")
    tok = AutoTokenizer.from_pretrained(out)
    # BPE stops merging once every word of the closed builtin vocabulary is one token, so the
    # tokenizer (and the model's embedding, which follows it) is smaller than the 2048 asked for.
    assert 5 + 256 < len(tok) <= 2048
    for word in (" market", " fox", " Question", " purple", " eleven", " The"):
        assert len(tok(word, add_special_tokens=False).input_ids) == 1, word
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.vocab_size == len(tok)


@pytest.mark.parametrize("kwargs, message", [
    (dict(size="huge"), r"unknown model size 'huge'; valid sizes: tiny, small"),
    (dict(vocab=100), r"vocab=100 is too small: the minimum is 262"),
    (dict(corpus=["/no/such/file.txt"]), r"corpus file /no/such/file.txt does not exist"),
])
def test_bad_arguments_raise_user_error_and_write_nothing(tmp_path, kwargs, message):
    with pytest.raises(UserError, match=message):
        init_model(tmp_path / "m", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_non_utf8_corpus_is_a_user_error(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café\n".encode("latin-1"))
    with pytest.raises(UserError, match=r"latin1.txt is not UTF-8"):
        init_model(tmp_path / "m", corpus=[bad], vocab=300)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latin1.txt"]


def test_builtin_corpus_is_deterministic_and_small_vocab():
    docs = builtin_corpus(500, seed=7)
    assert docs == builtin_corpus(500, seed=7)
    assert docs != builtin_corpus(500, seed=8)
    assert len(docs) == 500 and all(docs)
    words = {w.strip(".,:?!-").lower() for d in docs for w in d.split()}
    assert 100 < len(words) < 500
