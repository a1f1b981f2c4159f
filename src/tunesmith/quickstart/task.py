"""The quickstart's instruction task: put a sentence from the corpus's world into the past tense.

`Emma buys a green cup.` -> `Emma bought a green cup.`; `Leo takes three red keys.` -> `Leo took
three red keys.` Names, verbs, colours, numbers and objects are the corpus's own word lists, so the model has
seen every word, and both tenses of every verb, while pre-training. Rows are alpaca dicts.
"""

from __future__ import annotations

import random

from ..models import corpus as world

INSTRUCTION = "Rewrite the sentence in the past tense."
COUNTS = range(2, 13)  # "two" .. "twelve"
# name x verb x (one or a count) x colour x object
N_SENTENCES = len(world.NAMES) * len(world.ACTIONS) * (1 + len(COUNTS)) * len(world.COLORS) * len(world.OBJECTS)


def sentence_pair(rng: random.Random) -> tuple[str, str]:
    """(present, past). Always six tokens with the tiny models' tokenizer (name, verb, article or
    number, colour, noun, full stop), which keeps each copied word at a fixed offset."""
    name, (present, past) = rng.choice(world.NAMES), rng.choice(world.ACTIONS)
    color, thing = rng.choice(world.COLORS), rng.choice(world.OBJECTS)
    if rng.random() < 0.5:
        obj = f"{world.article(color)} {color} {thing}"
    else:
        obj = f"{world.NUMBER_WORDS[rng.choice(COUNTS)]} {color} {world.plural(thing)}"
    return f"{name} {present} {obj}.", f"{name} {past} {obj}."


def past_tense_task(n_train: int, n_eval: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """`n_train` and `n_eval` alpaca rows of distinct sentences: no eval sentence occurs in training."""
    if n_train + n_eval > N_SENTENCES // 2:
        raise ValueError(f"{n_train + n_eval} rows asked of {N_SENTENCES} possible sentences; ask for fewer")
    rng = random.Random(seed)
    seen: set[str] = set()
    rows = []
    while len(rows) < n_train + n_eval:
        sentence, answer = sentence_pair(rng)
        if sentence not in seen:
            seen.add(sentence)
            rows.append({"instruction": INSTRUCTION, "input": sentence, "output": answer})
    return rows[:n_train], rows[n_train:]
