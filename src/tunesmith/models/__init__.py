"""Tiny models built locally: a procedural corpus and a Llama-shaped model with a ChatML tokenizer."""

from tunesmith.models.corpus import builtin_corpus
from tunesmith.models.tiny import CHATML_TEMPLATE, SIZES, init_model, train_tokenizer

__all__ = ["CHATML_TEMPLATE", "SIZES", "builtin_corpus", "init_model", "train_tokenizer"]
