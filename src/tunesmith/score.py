"""`tunesmith score`: score prompt/response pairs with a trained reward model.

The model is a reward run's `adapter/` (PEFT, on the base named in its adapter_config.json) or
`model/` (full weights), or the run directory holding either. Rows are `{prompt, response}`
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
from tqdm.auto import tqdm

from .data.preference import _as_prompt, _as_response, parse_preference_row
from .data.preference_encode import encode_prompt, encode_response
from .data.readers import read_rows
from .errors import UserError
from .io import atomic_write_text, check_output_file


def load_reward_model(path: str | Path):
    """(model, tokenizer) from an adapter or full-model directory, or a reward run directory."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    p = Path(path)
    for sub in ("adapter", "model"):
        if (p / sub).is_dir():
            p = p / sub
            break
    if (p / "adapter_config.json").is_file():
        from peft import PeftModel

        base = json.loads((p / "adapter_config.json").read_text()).get("base_model_name_or_path")
        if not base:
            raise UserError(f"{p}/adapter_config.json names no base model (base_model_name_or_path)")
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1, use_safetensors=True)
        model = PeftModel.from_pretrained(model, p)
    elif (p / "config.json").is_file():
        model = AutoModelForSequenceClassification.from_pretrained(p, num_labels=1, use_safetensors=True)
    else:
        raise UserError(f"{path} holds no reward model: expected a run directory with adapter/ or model/, or one of those")
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
    hidden = backbone(input_ids=ids, attention_mask=mask, position_ids=position_ids, use_cache=False).last_hidden_state
    return base.score(hidden[torch.arange(len(sequences)), last]).squeeze(-1).float()


def _encode(tok, prompt, response, where: str) -> list[int]:
    text, prompt_ids = encode_prompt(tok, prompt, where)
    return prompt_ids + encode_response(tok, prompt, text, prompt_ids, response, where)


def score(model: str | Path, data: str | Path, out: str | Path | None = None, overwrite: bool = False,
          batch_size: int = 8) -> dict:
    """Score every row of `data`; write JSONL to `out` when given. Returns {"rows", "scores", "accuracy"?}."""
    if out is not None:
        check_output_file(out, overwrite=overwrite, inputs=[model, data])
    net, tok = load_reward_model(model)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    items = []  # (where, [sequence ids], is_pair)
    for row in read_rows(data):
        if "response" in row.data:
            prompt = _as_prompt(row.data.get("prompt"), row.where)
            seqs = [_encode(tok, prompt, _as_response(row.data["response"], row.where, "response"), row.where)]
            items.append((row.where, seqs, False))
        else:
            pair = parse_preference_row(row)
            items.append((row.where, [_encode(tok, pair.prompt, r, row.where) for r in (pair.chosen, pair.rejected)], True))
    if not items:
        raise UserError(f"{data}: no rows to score")
    flat = [s for _, seqs, _ in items for s in seqs]
    scores: list[float] = []
    for i in tqdm(range(0, len(flat), batch_size), desc="scoring", leave=False):
        scores += score_ids(net, flat[i : i + batch_size], pad_id).tolist()
    results, k, right = [], 0, 0
    for where, seqs, is_pair in items:
        if is_pair:
            c, r = scores[k], scores[k + 1]
            results.append({"where": where, "chosen_score": c, "rejected_score": r})
            right += c > r
        else:
            results.append({"where": where, "score": scores[k]})
        k += len(seqs)
    n_pairs = sum(1 for _, _, p in items if p)
    summary = {"rows": len(items), "results": results}
    if n_pairs:
        summary["accuracy"] = right / n_pairs
    if out is not None:  # parent directories are made as eval and export make them
        atomic_write_text(out, "".join(json.dumps(r) + "\n" for r in results))
    return summary
