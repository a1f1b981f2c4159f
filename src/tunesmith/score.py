"""`tunesmith score`: score prompt/response pairs with a trained reward model.

The model is a reward run's `adapter/` (any adapter type, on the base its adapter_config.json or
bottleneck.json names) or `model/` (full weights), or the run directory holding either. A model
without a trained score head (a causal LM, an SFT or DPO run) is refused: loaded as a classifier it
would get a random head and score with confidence. Rows are `{prompt, response}`
(prompt/response strings or message lists), or preference rows (`prompt/chosen/rejected`, HH
transcripts), which get both responses scored plus the pairwise accuracy. Rendering is the same
as in training (the tokenizer saved with the model carries the chat template).

The score is read at each sequence's last real token found from the attention mask (PITFALLS 11),
so it is the same with left or right padding and any amount of it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from .console import progress_bar

from .data.preference import as_prompt, as_response, parse_preference_row
from .data.preference_encode import encode_prompt, encode_response
from .data.readers import read_rows
from .errors import UserError
from .io import atomic_write_text, check_output_file


def _reward_source(path: str | Path) -> Path:
    """The adapter/ or model/ directory of a reward model, after checking it has a *trained* score head:
    a causal LM (or an SFT/DPO run) loaded as a sequence classifier gets a random head, and would score
    as confidently as a real one."""
    from .adapters import adapter_task_type

    p = Path(path)
    run_cfg = p / "config.yaml"
    if run_cfg.is_file() and ((p / "adapter").is_dir() or (p / "model").is_dir()):
        try:
            method = (yaml.safe_load(run_cfg.read_text()) or {}).get("method", "sft")
        except (yaml.YAMLError, AttributeError):
            method = "unknown"
        if method != "reward":
            raise UserError(f"{p} is a `method: {method}` run: it has no trained score head; `tunesmith score` needs "
                            "a reward model (train one with `method: reward`)")
    for sub in ("adapter", "model"):
        if (p / sub).is_dir():
            p = p / sub
            break
    if (p / "adapter_config.json").is_file() or (p / "bottleneck.json").is_file():
        if adapter_task_type(p) != "SEQ_CLS":
            raise UserError(f"{p} is a causal-LM adapter, not a reward model: it has no trained score head; "
                            "`tunesmith score` needs a `method: reward` run")
        return p
    if (p / "config.json").is_file():
        archs = json.loads((p / "config.json").read_text()).get("architectures") or []
        if not any(str(a).endswith("ForSequenceClassification") for a in archs):
            raise UserError(f"{p}/config.json says {archs or 'no architecture'}: not a model with a trained score head "
                            "(a *ForSequenceClassification); `tunesmith score` needs a `method: reward` run")
        return p
    raise UserError(f"{path} holds no reward model: expected a run directory with adapter/ or model/, or one of those")


def load_reward_model(path: str | Path):
    """(model, tokenizer) from a reward run directory, or its adapter/ (any adapter type) or model/. An
    adapter's base is loaded quantized as in training (a QLoRA reward model on an fp32 base is another model)."""
    from transformers import AutoTokenizer

    from .adapters import load_adapter, training_quantization, unknown_quantization
    from .config import ModelConfig
    from .models.loading import load_model

    p = _reward_source(path)
    if (p / "config.json").is_file() and not (p / "adapter_config.json").is_file():
        model = load_model(ModelConfig(path=str(p), dtype="fp32"), head="score")
    else:
        meta = p / ("adapter_config.json" if (p / "adapter_config.json").is_file() else "bottleneck.json")
        base = json.loads(meta.read_text()).get("base_model_name_or_path")
        if not base:
            raise UserError(f"{meta} names no base model (base_model_name_or_path)")
        known = training_quantization(p)
        if known is None:
            raise unknown_quantization(p, "score it from its run directory")
        quant, double_quant = known
        model = load_model(ModelConfig(path=base, dtype="fp32", quantization=quant, double_quant=double_quant),
                           compute_dtype=torch.float32, head="score")
        model = load_adapter(model, p)
    tok = AutoTokenizer.from_pretrained(p)
    return model.eval(), tok


@torch.no_grad()
def score_ids(model, sequences: list[list[int]], pad_id: int, padding_side: str = "right", pad_extra: int = 0) -> torch.Tensor:
    """Scores of token sequences in one padded batch: (S,) fp32."""
    T = max(len(s) for s in sequences) + pad_extra
    ids = torch.full((len(sequences), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), T), dtype=torch.long)
    for i, s in enumerate(sequences):
        sl = slice(T - len(s), T) if padding_side == "left" else slice(0, len(s))
        ids[i, sl], mask[i, sl] = torch.tensor(s), 1
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)
    last = T - 1 - mask.flip(-1).argmax(-1)  # last position whose mask is 1, whatever the padding side
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    backbone = getattr(base, base.base_model_prefix)
    device = next(model.parameters()).device  # the batch follows the model (GPU when there is one)
    ids, mask, position_ids, last = ids.to(device), mask.to(device), position_ids.to(device), last.to(device)
    hidden = backbone(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False).last_hidden_state
    return base.score(hidden[torch.arange(len(sequences), device=device), last]).squeeze(-1).float().cpu()


def _encode(tok, prompt, response, where: str) -> list[int]:
    text, prompt_ids = encode_prompt(tok, prompt, where)
    return prompt_ids + encode_response(tok, prompt, text, prompt_ids, response, where)


def length_bias(gaps: list[tuple[float, int]]) -> dict | None:
    """How a reward model's scores follow response length, from preference pairs: (score gap, token gap)
    per pair, chosen - rejected. One prompt per pair, so a gap is the two responses' difference alone.
    `prefers_longer`: the share of pairs of unequal length whose longer response scores higher;
    `corr`: Pearson's r of the gaps; `slope`: the least-squares score change per response token through
    the origin (sum ds * dl / sum dl^2), what `{reward_model: RUN, debias_length: true}` subtracts.
    None with fewer than 2 pairs of unequal length."""
    g = [(ds, dl) for ds, dl in gaps if dl != 0]
    if len(g) < 2:
        return None
    ds, dl = [x for x, _ in g], [float(y) for _, y in g]
    mx, my = sum(ds) / len(ds), sum(dl) / len(dl)
    sxy = sum((a - mx) * (b - my) for a, b in zip(ds, dl))
    sxx, syy = sum((a - mx) ** 2 for a in ds), sum((b - my) ** 2 for b in dl)
    return {"pairs": len(g), "prefers_longer": sum((a > 0) == (b > 0) for a, b in g) / len(g),
            "corr": sxy / (sxx * syy) ** 0.5 if sxx > 0 and syy > 0 else 0.0,
            "slope": sum(a * b for a, b in zip(ds, dl)) / sum(b * b for b in dl)}


def pair_items(tok, data: str | Path, limit: int | None = None) -> list[tuple[str, list[list[int]], bool]]:
    """(where, [sequence ids], is_pair) per row of `data`: a {prompt, response} row gives one sequence, a
    preference row two (chosen, rejected), rendered as in training. `limit`: the first N rows only."""
    items = []
    for row in read_rows(data):
        if limit is not None and len(items) >= limit:
            break
        if "response" in row.data:
            prompt = as_prompt(row.data.get("prompt"), row.where)
            seqs = [_encode(tok, prompt, as_response(row.data["response"], row.where, "response"), row.where)]
            items.append((row.where, seqs, False))
        else:
            pair = parse_preference_row(row)
            items.append((row.where, [_encode(tok, pair.prompt, r, row.where) for r in (pair.chosen, pair.rejected)], True))
    if not items:
        raise UserError(f"{data}: no rows to score")
    return items


def score_flat(net, sequences: list[list[int]], pad_id: int, batch_size: int = 8) -> list[float]:
    scores: list[float] = []
    for i in progress_bar(range(0, len(sequences), batch_size), desc="scoring", leave=False):
        scores += score_ids(net, sequences[i : i + batch_size], pad_id).tolist()
    return scores


def score(model: str | Path, data: str | Path, out: str | Path | None = None, overwrite: bool = False,
          batch_size: int = 8) -> dict:
    """Score every row of `data`; write JSONL to `out` when given. Returns {"rows", "results",
    "accuracy"?, "length_bias"?} (the last two for preference rows; length_bias: see `length_bias`)."""
    if out is not None:
        check_output_file(out, overwrite=overwrite, inputs=[model, data])
    net, tok = load_reward_model(model)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    items = pair_items(tok, data)
    scores = score_flat(net, [s for _, seqs, _ in items for s in seqs], pad_id, batch_size)
    results, k, right, gaps = [], 0, 0, []
    for where, seqs, is_pair in items:
        if is_pair:
            c, r = scores[k], scores[k + 1]
            results.append({"where": where, "chosen_score": c, "rejected_score": r})
            right += c > r
            gaps.append((c - r, len(seqs[0]) - len(seqs[1])))  # same prompt: the token gap is the responses'
        else:
            results.append({"where": where, "score": scores[k]})
        k += len(seqs)
    n_pairs = sum(1 for _, _, p in items if p)
    summary = {"rows": len(items), "results": results}
    if n_pairs:
        summary["accuracy"] = right / n_pairs
        if (bias := length_bias(gaps)) is not None:
            summary["length_bias"] = bias
    if out is not None:  # parent directories are made as eval and export make them
        atomic_write_text(out, "".join(json.dumps(r) + "\n" for r in results))
    return summary
