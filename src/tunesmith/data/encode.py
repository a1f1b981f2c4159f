"""Examples -> token ids and labels, through the tokenizer's own chat template.

The label mask comes from character spans of the rendered text, never from searching for a
response marker in token space (PITFALLS 4: a marker tokenizes differently in context and the
search silently masks everything). For each assistant turn i the template renders
`messages[:i]` + generation prompt (P) and `messages[:i+1]` (Q); the turn is the span
[len(P), len(Q)) of the full text, minus trailing whitespace, so the end-of-turn token (EOS for
ChatML) is a label and the newline after it is not (PITFALLS 3). Tokens whose character offsets
overlap a span get labels. The rendered text already carries BOS when the template puts it
there, so it is tokenized with `add_special_tokens=False` (PITFALLS 5).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import DataError, UserError
from .formats import Conversation, Text

IGNORE_INDEX = -100


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    where: str

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def n_labels(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


def default_chat_template() -> str:
    from ..models.tiny import CHATML_TEMPLATE

    return CHATML_TEMPLATE


def resolve_chat_template(tokenizer, setting: str = "auto") -> str:
    """Set and return the template used for training; it is saved with the tokenizer (PITFALLS 8)."""
    if setting == "auto":
        template = tokenizer.chat_template or default_chat_template()
    elif setting == "chatml":
        template = default_chat_template()
    elif "{%" in setting or "{{" in setting:
        template = setting
    else:
        raise UserError(f"`data.chat_template` = {setting!r}: use auto, chatml, or a Jinja template string")
    tokenizer.chat_template = template
    return template


def _render(tokenizer, messages, add_generation_prompt: bool = False) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_spans(tokenizer, messages: list[dict], where: str) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character span of every assistant turn."""
    full = _render(tokenizer, messages)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = _render(tokenizer, messages[:i], add_generation_prompt=True)
        upto = _render(tokenizer, messages[: i + 1])
        if not (upto.startswith(prompt) and full.startswith(upto)):
            raise UserError(
                f"{where}: the chat template does not render conversations prefix by prefix (turn {i}), so assistant "
                "spans cannot be located; set `data.chat_template` to a template that renders each turn in place"
            )
        end = len(upto.rstrip())
        if end <= len(prompt):
            raise DataError(f"{where}: assistant turn {i} renders as empty text")
        spans.append((len(prompt), end))
    return full, spans


def encode_conversation(conv: Conversation, tokenizer, train_on_prompt: bool = False) -> Encoded:
    full, spans = assistant_spans(tokenizer, conv.messages, conv.where)
    if conv.messages[-1]["role"] == "assistant":
        # Stop at the final end-of-turn: the last real token is then EOS, and it is a label.
        full = full[: spans[-1][1]]
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    bos = tokenizer.bos_token_id
    if bos is not None and len(ids) > 1 and ids[0] == bos and ids[1] == bos:
        raise UserError(f"{conv.where}: the rendered conversation starts with two BOS tokens; the chat template adds one and the text has another")
    if train_on_prompt:
        labels = list(ids)
    else:
        labels = [IGNORE_INDEX] * len(ids)
        k = 0
        for j, (s, e) in enumerate(offsets):
            while k < len(spans) and spans[k][1] <= s:
                k += 1
            if k < len(spans) and s < spans[k][1] and e > spans[k][0]:
                labels[j] = ids[j]
    out = Encoded(ids, labels, conv.where)
    if out.n_labels == 0:
        raise DataError(f"{conv.where}: no token of this example is a label (fully masked); it would teach nothing")
    return out


def encode_text(example: Text, tokenizer, max_length: int) -> list[Encoded]:
    """BOS + text + EOS, cut into blocks of at most max_length tokens (continual pre-training)."""
    ids = tokenizer(example.text, add_special_tokens=False)["input_ids"]
    if tokenizer.bos_token_id is not None:
        ids = [tokenizer.bos_token_id] + ids
    if tokenizer.eos_token_id is None:
        raise UserError("the tokenizer has no EOS token; documents could not be separated. Set one in tokenizer_config.json")
    ids = ids + [tokenizer.eos_token_id]
    blocks = []
    for i in range(0, len(ids), max_length):
        chunk = ids[i : i + max_length]
        if len(chunk) > 1:
            blocks.append(Encoded(chunk, list(chunk), f"{example.where}#{i // max_length}" if i else example.where))
    return blocks
