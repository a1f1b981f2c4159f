"""Preference / KTO examples -> token ids, truncation, and the packed batch the objectives read.

Prompt/response boundary (PITFALLS 6): enc(a + b) != enc(a) + enc(b) for BPE tokenizers, so the
prompt is rendered (chat template + generation prompt) and tokenized ONCE, and each response is
the continuation enc(prompt + response)[len(enc(prompt)):]. Chosen and rejected therefore share
the identical prompt ids by construction, and each response ends at its end-of-turn token, which
is a label. Rendered text already carries BOS where the template puts it (`add_special_tokens=False`).

Truncation: the prompt keeps its last `max_prompt_length` tokens (the end, next to the response);
a pair still longer than `max_length` is dropped, is an error, or has its responses cut from the
start so that each keeps its end (and its EOS), per `data.overlength`.

Pairs share their prompt in the forward (`collate_pairs`): each pair is a block
[prompt | chosen | rejected] (short pairs share a row), the rejected tokens' positions restart where the prompt ends, and a
4D attention mask lets chosen and rejected each see the prompt and themselves but never each
other (on the CPU, `pair_spans` gives the same layout to an attention path that needs no such
mask). The prompt is computed once instead of twice (on HH-RLHF it is more than half the tokens),
and chosen and rejected go through one forward. Which hidden row predicts which token is explicit
(`src` -> `tgt`, sequence `seq`): the first token of each response is predicted from the prompt's
last position. KTO examples (different prompts) are packed padding-free instead
(`pack_sequences`: position_ids restarting per sequence, attention cannot cross them).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import DataError
from .encode import IGNORE_INDEX
from .packing import first_fit_decreasing, padded_length
from .preference import KTOExample, PreferencePair


@dataclass
class EncodedPair:
    prompt_ids: list[int]
    chosen_ids: list[int]  # the continuation after prompt_ids
    rejected_ids: list[int]
    where: str
    id: int = -1  # position in train + eval, set by the pipeline: the row of the precomputed reference log-probs

    def __len__(self) -> int:
        return 2 * len(self.prompt_ids) + len(self.chosen_ids) + len(self.rejected_ids)

    @property
    def n_labels(self) -> int:
        return len(self.chosen_ids) + len(self.rejected_ids)

    def responses(self) -> list[list[int]]:
        return [self.chosen_ids, self.rejected_ids]

    def cut(self, prompt_ids: list[int], responses: list[list[int]]) -> "EncodedPair":
        return EncodedPair(prompt_ids, responses[0], responses[1], self.where)

    def sequences(self) -> list[tuple[list[int], list[int]]]:
        return [(self.prompt_ids, self.chosen_ids), (self.prompt_ids, self.rejected_ids)]


@dataclass
class EncodedKTO:
    prompt_ids: list[int]
    completion_ids: list[int]
    label: bool
    where: str
    id: int = -1

    def __len__(self) -> int:
        return len(self.prompt_ids) + len(self.completion_ids)

    @property
    def n_labels(self) -> int:
        return len(self.completion_ids)

    def responses(self) -> list[list[int]]:
        return [self.completion_ids]

    def cut(self, prompt_ids: list[int], responses: list[list[int]]) -> "EncodedKTO":
        return EncodedKTO(prompt_ids, responses[0], self.label, self.where)


def _render(tokenizer, messages, add_generation_prompt=False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def encode_prompt(tokenizer, prompt: list[dict], where: str) -> tuple[str, list[int]]:
    text = _render(tokenizer, prompt, add_generation_prompt=True)
    return text, tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_response(tokenizer, prompt: list[dict], prompt_text: str, prompt_ids: list[int], response: list[dict],
                    where: str) -> list[int]:
    """The response's ids as the continuation of the prompt's: enc(P + R)[len(enc(P)):], ending at EOS."""
    full = _render(tokenizer, prompt + response).rstrip()  # stop at the final end-of-turn token
    if not full.startswith(prompt_text):
        raise DataError(f"{where}: the chat template renders the prompt differently once a response follows; "
                        "set `data.chat_template` to one that renders each turn in place (e.g. chatml)")
    ids = tokenizer(full, add_special_tokens=False)["input_ids"][len(prompt_ids):]
    if not ids:
        raise DataError(f"{where}: the response renders as no tokens")
    return ids


def encode_pair(pair: PreferencePair, tokenizer) -> EncodedPair:
    text, prompt_ids = encode_prompt(tokenizer, pair.prompt, pair.where)
    chosen = encode_response(tokenizer, pair.prompt, text, prompt_ids, pair.chosen, pair.where)
    rejected = encode_response(tokenizer, pair.prompt, text, prompt_ids, pair.rejected, pair.where)
    return EncodedPair(prompt_ids, chosen, rejected, pair.where)


def encode_kto(ex: KTOExample, tokenizer) -> EncodedKTO:
    text, prompt_ids = encode_prompt(tokenizer, ex.prompt, ex.where)
    return EncodedKTO(prompt_ids, encode_response(tokenizer, ex.prompt, text, prompt_ids, ex.completion, ex.where), ex.label, ex.where)


def truncate(prompt_ids: list[int], responses: list[list[int]], max_prompt_length: int, max_length: int,
             overlength: str, where: str) -> tuple[list[int], list[list[int]]] | None:
    """Keep the prompt's last `max_prompt_length` tokens; then drop (None), raise, or cut each response
    from its start so prompt + response fits `max_length` and the response keeps its end."""
    prompt_ids = prompt_ids[-max_prompt_length:]
    longest = len(prompt_ids) + max(len(r) for r in responses)
    if longest <= max_length:
        return prompt_ids, responses
    if overlength == "drop":
        return None
    if overlength == "error":
        raise DataError(f"{where}: {longest} tokens (prompt cut to {len(prompt_ids)}) > data.max_length {max_length}; "
                        "raise data.max_length, lower preference.max_prompt_length, or set data.overlength: drop|truncate")
    room = max_length - len(prompt_ids)
    return prompt_ids, [r[-room:] for r in responses]


# --- collation ---------------------------------------------------------------------------------------


def pack_sequences(seqs: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """(prompt, response) pairs -> one padding-free row: input_ids, labels (response tokens only),
    position_ids restarting per sequence, seq_index (which sequence each token belongs to), and
    ends (flat index of each sequence's last token)."""
    total = sum(len(p) + len(r) for p, r in seqs)
    T = padded_length(total)
    input_ids = torch.full((1, T), pad_id, dtype=torch.long)
    labels = torch.full((1, T), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((1, T), dtype=torch.long)
    seq_index = torch.zeros((1, T), dtype=torch.long)
    ends = torch.zeros(len(seqs), dtype=torch.long)
    t = 0
    for s, (prompt, response) in enumerate(seqs):
        n = len(prompt) + len(response)
        input_ids[0, t : t + n] = torch.tensor(prompt + response)
        labels[0, t + len(prompt) : t + n] = torch.tensor(response)
        position_ids[0, t : t + n] = torch.arange(n)
        seq_index[0, t : t + n] = s
        ends[s] = t + n - 1
        t += n
    # The tail continues the last sequence's positions (one causal block), as in data/packing.py.
    position_ids[0, t:] = torch.arange(n, n + T - t)
    seq_index[0, t:] = len(seqs) - 1
    # Position t predicts token t + 1 within a sequence: the gather plan of the per-token log-probs.
    keep = labels[0, 1:] != IGNORE_INDEX
    src = torch.arange(T - 1)[keep]
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids, "seq_index": seq_index, "ends": ends,
            "src": src, "tgt": labels[0, 1:][keep], "seq": seq_index[0, 1:][keep]}


def pack_shared_prompt(pairs: list[tuple[list[int], list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    """(prompt, chosen, rejected) -> rows of [prompt | chosen | rejected] blocks, right-padded.

    Pairs are packed first-fit into rows as long as the longest pair, so short pairs share a row
    instead of being padded (attention per row stays bounded by the longest pair's length).
    attention_mask (rows, 1, T, T) bool, True = may attend: within its pair only; prompt causal;
    chosen sees the prompt and the chosen tokens up to itself; rejected likewise, never the
    chosen; padding sees only itself (a query row with nothing to attend to would be NaN).
    Sequence 2b is pair b's chosen, 2b + 1 its rejected, whatever row the pair lands in.
    pair_spans (n_pairs, 5): (row, offset, P, C, R) of each pair, the same layout without the (T, T)
    mask, which the CPU attention path reads instead (train/segment_attention.py)."""
    lengths = [len(p) + len(c) + len(r) for p, c, r in pairs]
    bins = first_fit_decreasing(lengths, max(lengths))
    T = padded_length(max(lengths))
    input_ids = torch.full((len(bins), T), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(bins), T), dtype=torch.long)
    mask = torch.eye(T, dtype=torch.bool).repeat(len(bins), 1, 1)
    src, tgt, seq = [[] for _ in pairs], [[] for _ in pairs], [[] for _ in pairs]
    ends = [0] * (2 * len(pairs))
    spans = torch.zeros((len(pairs), 5), dtype=torch.long)
    for row, members in enumerate(bins):
        o = 0
        for b in members:
            p, c, r = pairs[b]
            P, C, R = len(p), len(c), len(r)
            input_ids[row, o : o + P + C + R] = torch.tensor(p + c + r)
            position_ids[row, o : o + P + C] = torch.arange(P + C)
            position_ids[row, o + P + C : o + P + C + R] = torch.arange(P, P + R)
            causal = torch.ones(P + max(C, R), P + max(C, R), dtype=torch.bool).tril()
            mask[row, o : o + P + C, o : o + P + C] = causal[: P + C, : P + C]
            mask[row, o + P + C : o + P + C + R, o : o + P] = True
            mask[row, o + P + C : o + P + C + R, o + P + C : o + P + C + R] = causal[:R, :R]
            spans[b] = torch.tensor([row, o, P, C, R])
            base = row * T + o
            for s, (start, resp) in enumerate(((P, c), (P + C, r))):
                # Token j of the response sits at start + j and is predicted from the row before it,
                # except token 0, predicted from the prompt's last row.
                src[b] += [base + P - 1] + [base + start + j for j in range(len(resp) - 1)]
                tgt[b] += resp
                seq[b] += [2 * b + s] * len(resp)
                ends[2 * b + s] = base + start + len(resp) - 1
            o += P + C + R
        position_ids[row, o:] = torch.arange(T - o)  # padding: its own positions, attending to itself only
    flat = lambda xs: torch.tensor([v for x in xs for v in x], dtype=torch.long)  # noqa: E731
    return {"input_ids": input_ids, "position_ids": position_ids, "attention_mask": mask[:, None],
            "src": flat(src), "tgt": flat(tgt), "seq": flat(seq), "ends": torch.tensor(ends), "pair_spans": spans}


def collate_pairs(rows: list[EncodedPair], pad_id: int) -> dict[str, torch.Tensor]:
    """Sequences in the order chosen_0, rejected_0, chosen_1, rejected_1, ...: chosen = [0::2]."""
    batch = pack_shared_prompt([(r.prompt_ids, r.chosen_ids, r.rejected_ids) for r in rows], pad_id)
    batch["row_ids"] = torch.tensor([r.id for r in rows], dtype=torch.long)  # rows of a precomputed reference
    return batch


def collate_kto(rows: list[EncodedKTO], pad_id: int, allow_single: bool = False) -> dict[str, torch.Tensor]:
    """The B examples, then B mismatched (prompt_i, completion_{i+1}) sequences for the KL estimate
    (Ethayarajh et al. 2024, sec. 4.1): it needs at least 2 examples (PITFALLS 10). `allow_single`
    is for the last, odd eval batch only: its one example is its own "mismatched" pair."""
    if len(rows) < 2 and not allow_single:
        raise DataError("KTO needs at least 2 examples per micro-batch for its KL estimate; set train.micro_batch_size >= 2")
    n = len(rows)
    seqs = [(r.prompt_ids, r.completion_ids) for r in rows]
    seqs += [(rows[i].prompt_ids, rows[(i + 1) % n].completion_ids) for i in range(n)]
    batch = pack_sequences(seqs, pad_id)
    batch["kto_labels"] = torch.tensor([r.label for r in rows], dtype=torch.bool)
    return batch
