"""The quickstart's task data and its handling of --out, without training anything."""

import pytest

from tunesmith.errors import UserError
from tunesmith.models import corpus as world
from tunesmith.quickstart import OUR_ENTRIES, _claim
from tunesmith.quickstart.task import INSTRUCTION, N_SENTENCES, past_tense_task


def test_eval_sentences_never_occur_in_training():
    train, held_out = past_tense_task(3000, 200, seed=0)
    assert len(train) == 3000 and len(held_out) == 200
    assert not {r["input"] for r in train} & {r["input"] for r in held_out}
    assert len({r["input"] for r in train}) == 3000


def test_rows_are_alpaca_and_only_the_verb_changes():
    """`Emma buys a green cup.` -> `Emma bought a green cup.`: every word but the second is kept,
    and the second is the corpus's own past tense of the first."""
    past_of = dict(world.ACTIONS)
    for row in past_tense_task(300, 20, seed=3)[0]:
        assert set(row) == {"instruction", "input", "output"} and row["instruction"] == INSTRUCTION
        src, dst = row["input"].split(), row["output"].split()
        assert len(src) == len(dst) == 5
        assert dst[1] == past_of[src[1]]
        assert src[:1] + src[2:] == dst[:1] + dst[2:]


def test_task_is_deterministic_and_seeded():
    assert past_tense_task(50, 10, seed=0) == past_tense_task(50, 10, seed=0)
    assert past_tense_task(50, 10, seed=0) != past_tense_task(50, 10, seed=1)
    with pytest.raises(ValueError, match="possible sentences"):
        past_tense_task(N_SENTENCES, 0)


def test_every_sentence_is_six_tokens(tok):
    """The task is learnable in minutes because each copied word sits at a fixed offset: name,
    verb, article or number, colour, noun and full stop are one token each."""
    rows = past_tense_task(400, 0, seed=0)[0]
    lengths = {len(tok(r[key], add_special_tokens=False)["input_ids"]) for r in rows for key in ("input", "output")}
    assert lengths == {6}


def test_claim_refuses_a_non_empty_out_without_overwrite(tmp_path):
    (tmp_path / "sft").mkdir()
    with pytest.raises(UserError, match="--overwrite"):
        _claim(tmp_path, overwrite=False)
    assert (tmp_path / "sft").is_dir()


def test_claim_overwrite_removes_only_what_a_quickstart_makes(tmp_path):
    for name in OUR_ENTRIES:
        (tmp_path / name).mkdir() if "." not in name else (tmp_path / name).write_text("old")
    _claim(tmp_path, overwrite=True)
    assert list(tmp_path.iterdir()) == []


def test_claim_overwrite_leaves_foreign_files_and_refuses(tmp_path):
    """`--out . --overwrite` in a project directory must not delete the project."""
    (tmp_path / "sft").mkdir()
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match="notes.txt"):
        _claim(tmp_path, overwrite=True)
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "sft").is_dir()
