"""Build a tiny Llama-architecture model and its tokenizer from scratch, with no network.

The result is an ordinary Hugging Face directory (config.json, model.safetensors,
generation_config.json, tokenizer.json, tokenizer_config.json) that `AutoModelForCausalLM` and
`AutoTokenizer` load without tunesmith, so every stage (SFT, DPO, merge, export, serve) can be
tested end to end on the CPU against a model shaped like the real ones:

* Llama-style: a `<s>` BOS prepended by the tokenizer's post-processor, untied embeddings, RoPE.
* Qwen2.5-Instruct-style chat: ChatML turns, `<|im_end|>` as both EOS and end-of-turn, and a pad
  token distinct from EOS (so masking padding never masks the real end of a reply).
"""

from collections.abc import Iterable, Iterator
from pathlib import Path

from tunesmith.errors import UserError
from tunesmith.io import atomic_dir

SIZES = {
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, intermediate_size=176),
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=4, intermediate_size=688),
}

PAD, BOS, EOS, IM_START, UNK = "<pad>", "<s>", "<|im_end|>", "<|im_start|>", "<unk>"
# Order fixes the ids 0..4; the BPE trainer assigns special tokens first, in list order.
SPECIAL_TOKENS = [PAD, BOS, EOS, IM_START, UNK]
BYTE_ALPHABET_SIZE = 256
MIN_VOCAB = len(SPECIAL_TOKENS) + BYTE_ALPHABET_SIZE + 1

# ChatML with a BOS in front. Other modules use it as the default template for tokenizers that
# ship without one; it renders the BOS itself, so callers tokenize its output with
# add_special_tokens=False (otherwise the post-processor would add a second BOS).
CHATML_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int, model_max_length: int = 2048):
    """Train a byte-level BPE tokenizer on `texts` and wrap it for transformers.

    Byte-level with the full 256-symbol initial alphabet: any byte string is encodable and decodes
    back exactly, whatever the training text covered.
    """
    # Imported here: `tunesmith --help` should not pay for tokenizers and transformers.
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    _check_vocab(vocab_size)
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    _check_special_ids(tokenizer)

    bos_id = tokenizer.token_to_id(BOS)
    # ByteLevel first keeps offsets byte-exact (no whitespace trimming, as in Qwen2); the template
    # then prepends BOS only when add_special_tokens=True, as Llama's tokenizer does.
    tokenizer.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=False),
        processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B:1", special_tokens=[(BOS, bos_id)]
        ),
    ])
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=[IM_START],
        chat_template=CHATML_TEMPLATE,
        model_max_length=model_max_length,
        padding_side="right",
        # Decoding must give back the exact text; transformers 4.x's default "cleanup" rewrote
        # " ." to "." (5.x skips it for BPE, and warns when asked).
        clean_up_tokenization_spaces=False,
    )


def init_model(
    out: str | Path,
    size: str = "tiny",
    corpus: list[str | Path] | None = None,
    vocab: int = 2048,
    seed: int = 0,
    overwrite: bool = False,
    max_position_embeddings: int = 2048,
) -> Path:
    """Write a freshly initialised (untrained) model and its tokenizer to `out`; return `out`.

    The tokenizer is trained on the files in `corpus` (UTF-8 text), or on `builtin_corpus()` when
    it is None. Everything is built in a temporary directory beside `out` and renamed into place,
    so `out` is never left half-written; an existing non-empty `out` is replaced only when
    `overwrite` is set and it is an init-model output (tunesmith.io), and only once the new one
    is complete.
    """
    out = Path(out)
    # All checks happen before any work, so a mistake costs nothing and touches nothing.
    if size not in SIZES:
        raise UserError(f"unknown model size {size!r}; valid sizes: {', '.join(SIZES)}")
    _check_vocab(vocab)
    texts = _corpus_texts(corpus)

    with atomic_dir(out, "init-model", overwrite=overwrite, inputs=corpus or ()) as tmp:
        tokenizer = train_tokenizer(texts, vocab, model_max_length=max_position_embeddings)
        _build_model(tokenizer, size, seed, max_position_embeddings).save_pretrained(
            tmp, safe_serialization=True
        )
        tokenizer.save_pretrained(tmp)
    return out


def _build_model(tokenizer, size: str, seed: int, max_position_embeddings: int):
    import torch
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=False,
        rope_theta=10000.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **SIZES[size],
    )
    # The seed fixes the initial weights: the same arguments give byte-identical safetensors.
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(config).to(torch.float32)
    # generate() stops at the end of the assistant's turn, which is <|im_end|> (= EOS).
    model.generation_config = transformers.GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return model


def _check_vocab(vocab: int) -> None:
    if vocab < MIN_VOCAB:
        raise UserError(
            f"vocab={vocab} is too small: the minimum is {MIN_VOCAB} "
            f"({len(SPECIAL_TOKENS)} special tokens + {BYTE_ALPHABET_SIZE} byte symbols "
            f"+ at least one merge)"
        )


def _check_special_ids(tokenizer) -> None:
    """Our bug, not the user's, if the trainer ever stops giving special tokens ids 0..4."""
    ids = [tokenizer.token_to_id(t) for t in SPECIAL_TOKENS]
    assert ids == list(range(len(SPECIAL_TOKENS))), f"special token ids {ids}"


def _corpus_texts(corpus: list[str | Path] | None) -> Iterable[str]:
    if corpus is None:
        from tunesmith.models.corpus import builtin_corpus

        return builtin_corpus()
    paths = [Path(p) for p in corpus]
    for path in paths:
        if not path.is_file():
            raise UserError(f"corpus file {path} does not exist (or is not a file)")
    return _read_lines(paths)


def _read_lines(paths: list[Path]) -> Iterator[str]:
    """Stream the files line by line (newlines kept), so a large corpus never sits in memory."""
    for path in paths:
        try:
            with path.open(encoding="utf-8") as f:
                yield from f
        except UnicodeDecodeError as e:
            raise UserError(f"corpus file {path} is not UTF-8 text ({e.reason} at byte "
                            f"{e.start}); convert it to UTF-8") from None
