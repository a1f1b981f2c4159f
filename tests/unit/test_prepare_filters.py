"""Quality filters and normalisation of `tunesmith prepare`, one check at a time."""

import pytest

from tunesmith.config import PrepareFiltersConfig
from tunesmith.data.prepare.filters import QualityFilter, TokenCounter, is_placeholder, json_problem, looks_truncated, repeat_ratio
from tunesmith.data.prepare.records import Record, clean_text, detect_kind, normalize, prompt_and_responses, to_record
from tunesmith.data.readers import Row
from tunesmith.errors import ConfigError, DataError


def conv(answer: str, where: str = "f.jsonl:1") -> Record:
    return Record("conversation", {"messages": [{"role": "user", "content": "Question?"}, {"role": "assistant", "content": answer}]}, where, 0)


def run(records, **cfg):
    f = QualityFilter(PrepareFiltersConfig(**cfg), TokenCounter(None))
    return f(records), f.report


def test_repeat_ratio_hand_computed():
    """'a b c a b c a b c': 3-grams abc bca cab abc bca cab abc = 7, 3 distinct -> 1 - 3/7 = 4/7."""
    assert repeat_ratio("a b c a b c a b c", 3) == pytest.approx(4 / 7)
    assert repeat_ratio("one two three four five six seven", 3) == 0.0
    assert repeat_ratio("too short", 3) == 0.0


def test_placeholders_and_real_short_answers():
    for text in ("N/A", "n/a.", "I don't know", "I don\u2019t know.", "TODO", "  none "):
        assert is_placeholder(text), text
    for text in ("No.", "42", "Paris", "I don't know him, but his sister is a doctor."):
        assert not is_placeholder(text), text


def test_truncation_heuristics():
    assert looks_truncated("Here is code:\n```python\nprint(1)\n") == "unclosed ``` code fence"
    assert looks_truncated("The answer depends on the") == "ends with the word 'the'"
    assert looks_truncated("First, we add,") == "ends with ','"
    for ok in ("The answer is 72.", "#### 72", "```py\nx = 1\n```", "Use a dash -- like this --", "It is the"[:0] + "Yes"):
        assert looks_truncated(ok) is None, ok


def test_json_problem():
    assert json_problem('{"a": 1}') is None
    assert json_problem('```json\n{"a": [1, 2]}\n```') is None
    assert "Expecting" in json_problem('{"a": 1,}') or "property name" in json_problem('{"a": 1,}')


def test_filter_drops_each_kind_with_reason_and_example():
    rows = [
        conv("The sum is 7."),  # kept
        conv("N/A", "f.jsonl:2"),
        conv("I am sorry. " * 5, "f.jsonl:3"),
        conv("We start by adding the", "f.jsonl:4"),
        conv("word " * 30 + "end.", "f.jsonl:5"),
    ]
    kept, report = run(rows, max_response_tokens=20)
    assert [r.where for r in kept] == ["f.jsonl:1"]
    assert report.dropped == {
        "placeholder response": 1, "repeated 3-grams over 50%": 1, "truncated response": 1, "response longer than 20 words": 1,
    }
    assert report.examples["placeholder response"] == ["f.jsonl:2: N/A"]
    assert (report.rows_in, report.rows_out) == (5, 1)


def test_json_output_filter_and_min_tokens():
    kept, report = run([conv('{"ok": true}'), conv("{not json}", "f.jsonl:2"), conv("Hi.", "f.jsonl:3")], json_output=True, min_response_tokens=2)
    assert [r.where for r in kept] == ["f.jsonl:1"]  # '{"ok": true}' is 2 words
    assert set(report.dropped) == {"invalid JSON output", "response shorter than 2 words"}


def test_filters_off_keep_everything():
    rows = [conv("N/A"), conv("sorry " * 40), conv("We start by adding the")]
    kept, _ = run(rows, placeholders=False, max_repeat_ratio=1.0, truncated=False)
    assert len(kept) == 3


def test_token_counts_use_the_tokenizer(tok):
    counter = TokenCounter(tok)
    assert counter(["hello world"]) == [len(tok("hello world", add_special_tokens=False)["input_ids"])]
    assert counter.unit == "tokens"


def test_language_filter_without_detector_says_how_to_install():
    pytest.importorskip("pydantic")
    try:
        import langdetect  # noqa: F401

        pytest.skip("langdetect is installed")
    except ImportError:
        pass
    with pytest.raises(ConfigError, match="pip install langdetect"):
        QualityFilter(PrepareFiltersConfig(languages=["en"]), TokenCounter(None))


def pref(chosen: str, rejected: str, where: str = "p:1") -> Record:
    return Record("preference", {"prompt": [{"role": "user", "content": "Q?"}], "chosen": [{"role": "assistant", "content": chosen}],
                                 "rejected": [{"role": "assistant", "content": rejected}]}, where, 0)


def test_preference_sides_equal_after_normalisation_dropped():
    kept, report = run([pref("Hello.", "Hello.")])
    assert not kept and report.dropped == {"chosen equals rejected": 1}


def test_hh_transcript_becomes_canonical_messages():
    """HH rows are parsed by the preference module training uses: shared turns are the prompt."""
    row = Row({"chosen": "\n\nHuman: What is 2+2?\n\nAssistant: It is 4.", "rejected": "\n\nHuman: What is 2+2?\n\nAssistant: It is 5."}, "hh.jsonl:3")
    rec = to_record(row, detect_kind(row), 0)
    assert rec.kind == "preference" and rec.data == {
        "prompt": [{"role": "user", "content": "What is 2+2?"}],
        "chosen": [{"role": "assistant", "content": "It is 4."}],
        "rejected": [{"role": "assistant", "content": "It is 5."}],
    }
    assert prompt_and_responses(rec) == ("What is 2+2?", ["It is 4.", "It is 5."])
    kto = Row({"prompt": "Hi?", "completion": "Hello.", "label": False}, "k.jsonl:1")
    assert to_record(kto, detect_kind(kto), 0).data["label"] is False
    with pytest.raises(DataError, match="hh.jsonl:4: chosen and rejected are identical"):
        to_record(Row({"chosen": "\n\nHuman: a\n\nAssistant: b", "rejected": "\n\nHuman: a\n\nAssistant: b"}, "hh.jsonl:4"), "preference", 0)


def test_normalisation_unicode_and_whitespace():
    assert clean_text("Cafe\u0301  \r\nline\u200b two   \n\n\n\nend ") == "Caf\u00e9\n" "line two\n\nend"
    assert clean_text("\ufb01", "NFKC") == "fi" and clean_text("\ufb01", "NFC") == "\ufb01"
    assert clean_text("    indented code", strip=False) == "    indented code"
    assert normalize(pref(" Caf\u00e9\u200b ", "no")).data["chosen"] == [{"role": "assistant", "content": "Caf\u00e9"}]


def test_rejected_and_undesirable_replies_are_only_checked_for_emptiness():
    """A rejected reply is meant to be bad: cut off or 'N/A' there is kept; in the chosen reply it is not."""
    rows = [pref("Fine answer.", "We know that it was the", "p:1"), pref("We know that it was the", "Fine answer.", "p:2"),
            pref("Fine answer.", "N/A", "p:3")]
    kept, report = run(rows)
    assert [r.where for r in kept] == ["p:1", "p:3"] and report.dropped == {"truncated response": 1}
    kto = [Record("kto", {"prompt": [{"role": "user", "content": "Q?"}], "completion": [{"role": "assistant", "content": "N/A"}], "label": lab},
                  f"k:{i}", 0) for i, lab in enumerate((True, False))]
    kept, _ = run(kto)
    assert [r.where for r in kept] == ["k:1"]
