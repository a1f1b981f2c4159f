"""The real-model quickstart's task (quickstart/real_task.py): held-out rows really are held out,
the scores mean what the report says, and every preference pair prefers the right answer."""

from __future__ import annotations

import json

from tunesmith.quickstart.real_task import json_pairs, json_task, score


def _names_and_cities(rows):
    return {r["fields"]["name"].split()[0] for r in rows} | {r["fields"]["name"].split()[1] for r in rows} | \
        {r["fields"]["city"] for r in rows}


def test_eval_rows_share_no_name_or_city_with_training():
    train, held = json_task(400, 100, seed=0)
    assert len(train) == 400 and len(held) == 100
    assert not _names_and_cities(train) & _names_and_cities(held)
    for r in train + held:
        assert json.loads(r["output"]) == r["fields"] and isinstance(r["fields"]["age"], int)
        assert str(r["fields"]["age"]) in r["input"] and r["fields"]["city"] in r["input"]


def test_the_task_is_seeded():
    assert json_task(20, 5, seed=3) == json_task(20, 5, seed=3) != json_task(20, 5, seed=4)


def test_score_exact_is_strict_and_fields_forgive_only_the_wrapping():
    _, held = json_task(0, 4, seed=0)
    f = held[0]["fields"]
    answers = [
        held[0]["output"],                                         # exact
        "```json\n" + json.dumps(f, indent=2) + "\n```",           # right values, wrong format
        json.dumps({**f, "age": str(f["age"])}),                   # quoted age: wrong value type
        "I cannot tell.",                                          # no JSON
    ]
    rows = [held[0]] * 4
    assert score(answers, rows) == {"exact_match": 0.25, "fields_correct": 0.5}
    assert score(["  " + held[0]["output"] + "\n"], held[:1]) == {"exact_match": 1.0, "fields_correct": 1.0}


def test_pairs_prefer_the_one_line_json_over_a_different_answer():
    train, held = json_pairs(50, 20, seed=1)
    for p in train + held:
        assert p["chosen"] != p["rejected"]
        assert score([p["chosen"]], [_row(p)])["exact_match"] == 1.0
        assert score([p["rejected"]], [_row(p)])["exact_match"] == 0.0
    assert not {p["prompt"] for p in train} & {p["prompt"] for p in held}


def _row(pair: dict) -> dict:
    return {"output": pair["chosen"], "fields": json.loads(pair["chosen"])}
