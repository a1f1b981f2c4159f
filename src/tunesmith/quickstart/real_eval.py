"""Answers of the real-model quickstart's four models to the same held-out prompts.

Every model gets the same token ids: the prompt rendered by the tokenizer's chat template (with
SmolLM2's default system prompt) and tokenized by the Hugging Face tokenizer, then plain greedy
decoding (argmax, no repetition penalty or other processors) until EOS or `max_new_tokens`. So a
difference between the merged model and its GGUF is the file's quantization, not a different prompt
or decoding rule. transformers' `generate()` with `do_sample=False` is argmax here because the
converted generation config sets no processors; llama.cpp gets its own argmax loop.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch


def prompts_of(rows: list[dict]) -> list[str]:
    """The user turn as the alpaca format renders it (data/formats.py), so prompts match training."""
    return [f"{r['instruction']}\n\n{r['input']}" for r in rows]


def hf_answers(model_dir: Path, rows: list[dict], adapter_dir: Path | None = None, max_new_tokens: int = 32,
               batch_size: int = 16) -> tuple[list[str], float]:
    """(answers, seconds) of the transformers model in `model_dir`, with the PEFT adapter when given."""
    from transformers import AutoModelForCausalLM

    from ..evaluate.generation import greedy_answers
    from ..models.loading import load_tokenizer

    t0 = time.perf_counter()
    tokenizer = load_tokenizer(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, use_safetensors=True)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
    answers = greedy_answers(model.eval(), tokenizer, prompts_of(rows), max_new_tokens, batch_size=batch_size)
    return answers, time.perf_counter() - t0


def gguf_answers(gguf_path: Path, tokenizer_dir: Path, rows: list[dict], max_new_tokens: int = 32) -> tuple[list[str], float]:
    """(answers, seconds) of the GGUF file in llama.cpp (llama-cpp-python), on the same token ids."""
    import numpy as np

    from ..evaluate.generation import chat_prompt
    from ..export.gguf_quant import require_llama_cpp
    from ..models.loading import load_tokenizer

    t0 = time.perf_counter()
    llama_cpp = require_llama_cpp("answering with the exported GGUF")
    tokenizer = load_tokenizer(str(tokenizer_dir))
    # logits_all: llama-cpp-python 0.3 keeps `scores` (the logits we take the argmax of) only then.
    # n_threads_batch too: its default is every core, and the prompt's batch then waits on busy cores
    # the way torch's OpenMP threads do (see real.py's _threads).
    threads = max(1, torch.get_num_threads())
    llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=256, n_batch=256, n_threads=threads, n_threads_batch=threads,
                          logits_all=True, verbose=False, n_gpu_layers=0)
    eos = tokenizer.eos_token_id
    answers = []
    for prompt in prompts_of(rows):
        ids = tokenizer(chat_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"]
        llm.reset()
        llm.eval(ids)
        out: list[int] = []
        for _ in range(max_new_tokens):
            nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            if nxt == eos:
                break
            out.append(nxt)
            llm.eval([nxt])
        answers.append(tokenizer.decode(out, skip_special_tokens=False))
    llm.close()
    return answers, time.perf_counter() - t0
