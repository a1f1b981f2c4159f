"""The quickstart's preference task: correct vs wrong answers to the past-tense instruction.

prompt  "Rewrite the sentence in the past tense.\\n\\nEmma buys a green cup."
chosen  "Emma bought a green cup."
rejected, one of two typical mistakes: the sentence copied unchanged ("Emma buys a green cup."),
or another verb's past ("Emma saw a green cup."). Rows are `{prompt, chosen, rejected}` strings, and
`kto_rows` splits the same pairs into unpaired `{prompt, completion, label}` rows.
"""

from __future__ import annotations

import random

from ..models import corpus as world
from .task import INSTRUCTION, N_SENTENCES, sentence_pair

_PAST = {present: past for present, past in world.ACTIONS}


def _wrong(sentence: str, answer: str, rng: random.Random, copy_share: float) -> str:
    if rng.random() < copy_share:
        return sentence  # not rewritten at all
    name, verb, rest = answer.split(" ", 2)
    other = rng.choice([p for p in _PAST.values() if p != verb])
    return f"{name} {other} {rest}"


def past_tense_pairs(n_train: int, n_eval: int, seed: int = 0, copy_share: float = 0.5) -> tuple[list[dict], list[dict]]:
    """Distinct sentences: no eval prompt occurs in training. `copy_share` of the rejected answers are
    the unchanged sentence, the rest use a wrong verb."""
    if n_train + n_eval > N_SENTENCES // 2:
        raise ValueError(f"{n_train + n_eval} pairs asked of {N_SENTENCES} possible sentences; ask for fewer")
    rng = random.Random(seed)
    seen: set[str] = set()
    rows = []
    while len(rows) < n_train + n_eval:
        sentence, answer = sentence_pair(rng)
        if sentence in seen:
            continue
        seen.add(sentence)
        rows.append({"prompt": f"{INSTRUCTION}\n\n{sentence}", "chosen": answer, "rejected": _wrong(sentence, answer, rng, copy_share)})
    return rows[:n_train], rows[n_train:]


def kto_rows(pairs: list[dict]) -> list[dict]:
    """Each pair as two unpaired examples, desirable and undesirable, alternating."""
    out = []
    for p in pairs:
        out.append({"prompt": p["prompt"], "completion": p["chosen"], "label": True})
        out.append({"prompt": p["prompt"], "completion": p["rejected"], "label": False})
    return out
