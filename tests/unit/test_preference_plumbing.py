"""Preference plumbing: the precomputed reference is the frozen-copy reference, computed the same
way (bf16 included), returned as a table indexed by row id; eval rows that are dropped are counted
and reported like training rows."""

import json

import pytest
import torch

from tunesmith.config import load_config
from tunesmith.data.encode import resolve_chat_template
from tunesmith.data.pipeline import PreparedData
from tunesmith.data.preference import PreferencePair
from tunesmith.data.preference_encode import encode_pair
from tunesmith.objectives import SetupContext, get_objective
from tunesmith.objectives.kto import KTOObjective
from tunesmith.objectives.logps import SequenceLogps, sequence_logps
from tunesmith.objectives.preference import PairObjective
from tunesmith.train.loop import autocast
from tunesmith.train.run import build_model

U = lambda t: {"role": "user", "content": t}  # noqa: E731
A = lambda t: {"role": "assistant", "content": t}  # noqa: E731
PAIRS = [PreferencePair([U("Add 2 and 3.")], [A("2 plus 3 is 5.")], [A("It is 7, I think.")], "t:1"),
         PreferencePair([U("Spell cat.")], [A("c-a-t")], [A("k-a-t-t")], "t:2"),
         PreferencePair([U("Hi")], [A("yes")], [A("no")], "t:3"), PreferencePair([U("Go")], [A("ok")], [A("never")], "t:4")]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _cfg(tiny_dir, tmp_path, *extra):
    return load_config(None, [f"model.path={tiny_dir}", "method=dpo", "adapter.dropout=0", "data.max_length=128",
                              "dpo.max_prompt_length=64", "train.micro_batch_size=4", "train.progress=false",
                              f"dpo.ref_cache_dir={tmp_path / 'cache'}", *extra])


def _ctx(cfg, wrapper, rows, tok) -> SetupContext:
    dev = torch.device("cpu")
    return SetupContext(wrapper, PreparedData(rows, []), tok.pad_token_id, tok, dev, 0, 1, lambda t: t,
                        lambda: autocast(cfg, dev), lambda msg: None)


def _rows(tok):
    resolve_chat_template(tok, "auto")
    rows = [encode_pair(p, tok) for p in PAIRS]
    for i, r in enumerate(rows):
        r.id = i
    return rows


def test_precomputed_reference_equals_frozen_copy_in_bf16(tiny_dir, tok, tmp_path):
    """Full fine-tuning in bf16 on the CPU: the precomputed table and the frozen copy compute the
    reference under the same autocast, so a training step sees the same numbers either way. The
    fp32 computation (what the precompute did before) differs from both by far more than the
    tolerance, so the check can fail."""
    cfg_pre = _cfg(tiny_dir, tmp_path, "adapter.type=none", "train.precision=bf16", "dpo.precompute_ref=true")
    cfg_live = _cfg(tiny_dir, tmp_path, "adapter.type=none", "train.precision=bf16")
    wrapper = SequenceLogps(build_model(cfg_pre, torch.device("cpu")), 1024)
    rows = _rows(tok)
    pre, live = get_objective("dpo", cfg_pre), get_objective("dpo", cfg_live)
    pre.setup(_ctx(cfg_pre, wrapper, rows, tok))
    live.setup(_ctx(cfg_live, wrapper, rows, tok))
    assert pre.reference is None and pre.ref_table.shape == (4, 2)
    assert live.ref_table is None and live.reference.frozen is not None

    batch = pre.collate(rows, tok.pad_token_id)  # one micro-batch of 4, as the precompute ran it
    with torch.no_grad(), autocast(cfg_live, torch.device("cpu")):  # what a training step runs under
        table, frozen = pre.reference_logps(wrapper, batch), live.reference_logps(wrapper, batch)
    torch.testing.assert_close(table, frozen.float(), rtol=0, atol=1e-5)
    with torch.no_grad():
        fp32 = sequence_logps(live.reference.frozen, batch)[0]
    assert (fp32 - frozen).abs().max() > 1e-3  # bf16 and fp32 really differ here


def test_reference_table_is_indexed_by_row_id(tiny_dir, tok, tmp_path):
    """A batch of rows (3, 0) reads table rows 3 and 0, in the batch's sequence order
    chosen_3, rejected_3, chosen_0, rejected_0; the rows themselves carry no log-probs."""
    cfg = _cfg(tiny_dir, tmp_path, "train.precision=fp32", "dpo.precompute_ref=true")
    wrapper = SequenceLogps(build_model(cfg, torch.device("cpu")), 1024)
    rows = _rows(tok)
    obj = get_objective("dpo", cfg)
    obj.setup(_ctx(cfg, wrapper, rows, tok))
    batch = obj.collate([rows[3], rows[0]], tok.pad_token_id)
    t = obj.ref_table
    assert obj.reference_logps(wrapper, batch).tolist() == [t[3, 0].item(), t[3, 1].item(), t[0, 0].item(), t[0, 1].item()]
    assert not any(hasattr(r, "ref_chosen") for r in rows)


def test_kto_is_its_own_objective():
    assert not issubclass(KTOObjective, PairObjective)


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_dropped_eval_rows_are_counted_and_reported(tiny_dir, tok, tmp_path):
    """Eval: 1 good pair, 2 pairs longer than max_length, 1 unreadable row. Both kinds of loss are
    counted in the notes (and so in report.md) and the stats, as they are for training rows."""
    good = {"prompt": "Hi", "chosen": "yes", "rejected": "no"}
    long = {"prompt": "Hi", "chosen": "word " * 200, "rejected": "no"}
    train = _write(tmp_path / "train.jsonl", [good] * 4)
    ev = _write(tmp_path / "eval.jsonl", [good, long, long, {"prompt": "Hi", "chosen": "yes"}])
    cfg = _cfg(tiny_dir, tmp_path, f"data.train={train}", f"data.eval={ev}", "data.on_error=skip", "data.overlength=drop")
    data = get_objective("dpo", cfg).prepare_data(tok, 0)
    assert len(data.eval) == 1 and len(data.train) == 4
    assert data.stats["eval_dropped"] == {"longer than max_length 128": 2}
    notes = " | ".join(data.notes)
    assert "eval: after tokenization: 2 longer than max_length 128" in notes
    assert "eval: skipped 1 of 4 rows" in notes
    assert [r.id for r in data.train + data.eval] == [0, 1, 2, 3, 4]
