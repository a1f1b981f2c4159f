"""The real-model quickstart's task: pull a person's name, age and city out of a sentence as one line of JSON.

    "At 47, Nadia Okafor still teaches in Porto."  ->  {"name": "Nadia Okafor", "age": 47, "city": "Porto"}

Why this task. SmolLM2-135M-Instruct understands the request but does not keep to the format: it
wraps the JSON in a code fence, spreads it over lines, quotes the age, adds a sentence, or drops
the surname (measured on the held-out prompts: see the module docstring of `real.py`). The fix is
a format and a copy, which a LoRA learns from a few hundred short rows in a couple of CPU minutes.

Held out for real: the eval rows use first names, surnames and cities that no training row
contains (disjoint lists), so a model that memorised training answers scores zero. Both splits
use every sentence pattern, so the eval measures the format, not a new phrasing.
"""

from __future__ import annotations

import json
import random

INSTRUCTION = 'Give the name, age and city as one line of JSON: {"name": ..., "age": ..., "city": ...}'


_FIRST = ["Maria", "James", "Aiko", "Omar", "Lena", "Carlos", "Priya", "Tomas", "Fatima", "Jonas", "Mei", "Diego",
          "Sofia", "Kwame", "Elena", "Hugo", "Ingrid", "Ravi", "Chloe", "Mateo", "Yara", "Felix", "Nora", "Samir",
          "Olga", "Bruno", "Leila", "Pavel", "Anya", "Tariq", "Nadia", "Lucas", "Hana", "Emil", "Zara", "Marco"]
_LAST = ["Lopez", "Smith", "Tanaka", "Haddad", "Fischer", "Silva", "Sharma", "Novak", "Khan", "Berg", "Chen",
         "Ramirez", "Rossi", "Mensah", "Petrova", "Martin", "Larsen", "Patel", "Dubois", "Garcia", "Nasser", "Weber",
         "Olsen", "Aziz", "Ivanova", "Costa", "Karimi", "Horak", "Volkova", "Malik", "Okafor", "Moreau", "Sato",
         "Lindqvist", "Hussein", "Bianchi"]
_CITY = ["Lisbon", "Denver", "Osaka", "Cairo", "Munich", "Lima", "Mumbai", "Prague", "Lahore", "Bergen", "Taipei",
         "Seville", "Turin", "Accra", "Sofia", "Lyon", "Aarhus", "Pune", "Nantes", "Bogota", "Amman", "Leipzig",
         "Malmo", "Tunis", "Riga", "Porto", "Tabriz", "Brno", "Kazan", "Multan", "Lagos", "Geneva", "Sapporo",
         "Uppsala", "Basra", "Naples"]
# {n} name, {f} first name, {a} age, {c} city
PATTERNS = [
    "{n} is {a} years old and lives in {c}.",
    "At {a}, {n} still teaches in {c}.",
    "{n}, aged {a}, moved to {c} last spring.",
    "Living in {c}, {n} turned {a} this year.",
    "{c} has been home to {n} for years; {f} is {a} now.",
    "Our new neighbour {n} ({a}) came here from {c}.",
    "The {a}-year-old {n} runs a small bakery in {c}.",
    "{n} celebrated turning {a} with friends in {c}.",
]
# Eval names and cities come from the last quarter of each list, training ones from the rest.
_HELD_OUT = 9


def answer(name: str, age: int, city: str) -> str:
    return json.dumps({"name": name, "age": age, "city": city})


def _row(rng: random.Random, first: list[str], last: list[str], cities: list[str]) -> dict:
    f, n_last, city, age = rng.choice(first), rng.choice(last), rng.choice(cities), rng.randint(19, 88)
    name = f"{f} {n_last}"
    text = rng.choice(PATTERNS).format(n=name, f=f, a=age, c=city)
    return {"instruction": INSTRUCTION, "input": text, "output": answer(name, age, city),
            "fields": {"name": name, "age": age, "city": city}}


def json_task(n_train: int, n_eval: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Alpaca rows (plus `fields`, the expected values). Eval rows use names and cities no training row has."""
    rng = random.Random(seed)
    train = [_row(rng, _FIRST[:-_HELD_OUT], _LAST[:-_HELD_OUT], _CITY[:-_HELD_OUT]) for _ in range(n_train)]
    held = [_row(rng, _FIRST[-_HELD_OUT:], _LAST[-_HELD_OUT:], _CITY[-_HELD_OUT:]) for _ in range(n_eval)]
    return train, held


def _mistakes(row: dict) -> list[str]:
    """The base model's typical ways of getting the format wrong, as rejected answers for DPO."""
    f = row["fields"]
    return [
        "```json\n" + json.dumps(f, indent=2) + "\n```",
        json.dumps({**f, "age": str(f["age"])}),
        json.dumps({**f, "name": f["name"].split(" ")[0]}),
        "Here is the JSON: " + row["output"],
    ]


def json_pairs(n_train: int, n_eval: int, seed: int = 1) -> tuple[list[dict], list[dict]]:
    """Preference pairs {prompt, chosen, rejected}: the one-line JSON against one of its typical mistakes."""
    rng = random.Random(seed)
    train, held = json_task(n_train, n_eval, seed=seed)

    def pair(r: dict) -> dict:
        return {"prompt": f"{r['instruction']}\n\n{r['input']}", "chosen": r["output"], "rejected": rng.choice(_mistakes(r))}

    return [pair(r) for r in train], [pair(r) for r in held]


def score(answers: list[str], rows: list[dict]) -> dict:
    """`exact`: the answer is exactly the expected line. `fields`: the answer, with a code fence or
    surrounding prose removed, parses as JSON whose name, age (as a number) and city are right."""
    exact = sum(a.strip() == r["output"] for a, r in zip(answers, rows))
    fields = sum(_fields(a) == r["fields"] for a, r in zip(answers, rows))
    n = max(1, len(rows))
    return {"exact_match": exact / n, "fields_correct": fields / n}


def _fields(text: str) -> dict | None:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        return None
    try:
        got = json.loads(text[start : end + 1])
    except json.JSONDecodeError:
        return None
    if not isinstance(got, dict):
        return None
    return {k: got.get(k) for k in ("name", "age", "city")}
