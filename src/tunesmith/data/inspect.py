"""Tokens as a person reads them: each token's text and whether it is a label.

One definition for `tunesmith inspect-data` (which prints the labelled tokens between `[[` and
`]]`) and the data page of `tunesmith ui` (which highlights them), so the two can never disagree
about what the model is trained on: a token is labelled exactly when its label is not IGNORE_INDEX.
"""

from __future__ import annotations

from .encode import IGNORE_INDEX


def label_pieces(tokenizer, input_ids: list[int], labels: list[int]) -> list[tuple[str, bool]]:
    """(text of the token, labelled) per token, in order. Tokens are decoded one at a time, so a
    character split over two byte-level tokens shows as two replacement characters."""
    if len(input_ids) != len(labels):
        raise ValueError(f"{len(input_ids)} input ids but {len(labels)} labels")
    return [(tokenizer.decode([tid]), lab != IGNORE_INDEX) for tid, lab in zip(input_ids, labels)]


def bracketed(pieces: list[tuple[str, bool]]) -> str:
    """The pieces as one string with every run of labelled tokens between `[[` and `]]`."""
    text, open_ = [], False
    for piece, on in pieces:
        if on != open_:
            text.append("[[" if on else "]]")
            open_ = on
        text.append(piece)
    return "".join(text) + ("]]" if open_ else "")
