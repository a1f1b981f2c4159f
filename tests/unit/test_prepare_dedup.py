"""Exact and near-duplicate removal and contamination: planted items are found, distinct rows kept."""

import json
import random

import pytest

from tunesmith.config import PrepareContaminationConfig, PrepareDedupConfig
from tunesmith.data.prepare.contamination import BenchmarkIndex, ContaminationCheck
from tunesmith.data.prepare.dedup import ExactDedup, NearDedup, shingles
from tunesmith.data.prepare.records import Record

pytest.importorskip("datasketch")

WORDS = ("apple river stone cloud light tree sun moon green blue red dog cat bird fish road city hill lake sea "
         "wind rain snow fire gold iron salt milk bread house door key lamp book song ship star wolf bear").split()


def text_row(text: str, i: int) -> Record:
    return Record("conversation", {"messages": [{"role": "user", "content": "Tell me."}, {"role": "assistant", "content": text}]}, f"f.jsonl:{i}", 0)


def sentence(rng: random.Random, n: int = 60) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def test_exact_dedup_folds_case_space_punctuation_and_keeps_first():
    rows = [text_row("Hello,  World!", 1), text_row("hello world", 2), text_row("Hello there world", 3)]
    d = ExactDedup()
    kept = d(rows)
    assert [r.where for r in kept] == ["f.jsonl:1", "f.jsonl:3"]
    assert d.report.examples["exact duplicate"] == ["f.jsonl:2: same text as f.jsonl:1"]


def test_shingles_of_short_text_is_one_shingle():
    assert shingles(["a", "b"], 5) == {b"a b"}
    assert shingles(list("abcdef"), 5) == {b"a b c d e", b"b c d e f"}


def test_near_dedup_finds_planted_near_duplicates_and_keeps_distinct_rows():
    """20 distinct rows of 62 words (prompt + answer: 58 five-word shingles); 10 of them re-planted
    with one word changed, which changes 5 shingles: Jaccard 53 / (53 + 5 + 5) = 0.84 -> all 10 are
    dropped at threshold 0.7; a row with its last 60% rewritten (Jaccard ~0.3) is kept."""
    rng = random.Random(0)
    base = [sentence(rng) for _ in range(20)]
    rows = [text_row(t, i) for i, t in enumerate(base)]
    for k in range(10):
        words = base[k].split()
        words[30] = "zebra"
        rows.append(text_row(" ".join(words), 100 + k))
    far = base[0].split()
    far = far[:24] + sentence(random.Random(9), 36).split()
    rows.append(text_row(" ".join(far), 200))
    d = NearDedup(PrepareDedupConfig(threshold=0.7))
    kept = d(rows)
    assert [r.where for r in kept] == [f"f.jsonl:{i}" for i in range(20)] + ["f.jsonl:200"]
    assert d.report.dropped == {"near duplicate": 10}
    assert "with f.jsonl:0" in d.report.examples["near duplicate"][0]


def test_near_dedup_threshold_is_respected():
    """The same pair is a duplicate at threshold 0.5 and not at 0.95 (its Jaccard is ~0.8)."""
    rng = random.Random(1)
    a = sentence(rng, 100).split()
    b = list(a)
    for j in range(0, 100, 25):
        b[j] = "zebra"
    rows = [text_row(" ".join(a), 1), text_row(" ".join(b), 2)]
    assert len(NearDedup(PrepareDedupConfig(threshold=0.5))(rows)) == 1
    assert len(NearDedup(PrepareDedupConfig(threshold=0.95))(rows)) == 2


def test_near_dedup_is_deterministic_across_chunks():
    rng = random.Random(2)
    base = [sentence(rng) for _ in range(30)]
    rows = [text_row(t, i) for i, t in enumerate(base + base[::3])]
    whole = [r.where for r in NearDedup(PrepareDedupConfig())(rows)]
    d = NearDedup(PrepareDedupConfig())
    chunked = [r.where for i in range(0, len(rows), 7) for r in d(rows[i : i + 7])]
    assert whole == chunked == [f"f.jsonl:{i}" for i in range(30)]


def test_contamination_finds_planted_benchmark_item(tmp_path):
    bench = tmp_path / "test.jsonl"
    items = [
        {"question": "Janet has 16 ducks that lay eggs every single day and she eats three for breakfast each morning", "answer": "#### 18"},
        {"question": "A robe takes 2 bolts of blue fiber and half that much white fiber", "answer": "#### 3"},
    ]
    bench.write_text("".join(json.dumps(x) + "\n" for x in items))
    check = ContaminationCheck(PrepareContaminationConfig(benchmarks=[str(bench)]))
    clean = text_row("Tom has 3 apples and buys 4 more; how many apples does Tom have now in total?", 1)
    # the first benchmark question inside a longer training row, with other case and punctuation
    planted = text_row("Solve: janet has 16 ducks, that lay eggs every single day -- and she eats three! Thanks.", 2)
    short = text_row("A robe takes 2 bolts of blue fiber and half that much white fiber.", 3)  # 14 words
    kept = check([clean, planted, short])
    assert [r.where for r in kept] == ["f.jsonl:1"]
    assert check.report.dropped == {"contaminated": 2}
    assert f"{bench}:1" in check.report.examples["contaminated"][0]


def test_contamination_short_items_matched_whole_or_counted():
    idx = BenchmarkIndex(n=13, min_item_words=8)
    idx.add_item(["what is the capital city of the country france"], "b:1")  # 9 words: whole
    idx.add_item(["hello there"], "b:2")  # 2 words: too short, counted
    assert idx.too_short == 1
    assert idx.match(["Q: What is the capital city of the country France? A: Paris"]) == ("b:1", "what is the capital city of the country france")
    assert idx.match(["hello there, how are you"]) is None


def test_contamination_flag_keeps_rows_with_column(tmp_path):
    bench = tmp_path / "b.jsonl"
    bench.write_text(json.dumps({"q": "one two three four five six seven eight nine ten eleven twelve thirteen"}) + "\n")
    check = ContaminationCheck(PrepareContaminationConfig(benchmarks=[str(bench)], action="flag"))
    kept = check([text_row("one two three four five six seven eight nine ten eleven twelve thirteen fourteen", 1), text_row("other", 2)])
    assert [r.data["_contamination"] for r in kept] == [f"{bench}:1", ""]
