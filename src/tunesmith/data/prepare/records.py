"""Rows -> records in canonical form, and the accessors every later step uses.

A `Record` is one output row (`data`) plus its kind, its source file and its location:

    conversation  alpaca / sharegpt / messages rows  -> {"messages": [{role, content}, ...]}
    text          {"text": ...}                       -> {"text": ...}
    preference    {prompt?, chosen, rejected}         -> {"prompt": [...], "chosen": [...], "rejected": [...]}
                  (strings, message lists, or HH "\\n\\nHuman: / \\n\\nAssistant:" transcripts)
    kto           {prompt, completion, label}         -> {"prompt": [...], "completion": [...], "label": bool}

Rows are parsed by the same code training uses (`formats.to_example` for SFT rows,
`preference.parse_preference_row` / `parse_kto_row` for pairs and KTO rows), so prepare and train
accept and reject the same rows, and the output is in canonical message form.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..formats import FORMATS, detect_format, to_example
from ..preference import parse_kto_row, parse_preference_row
from ..readers import Row
from ...errors import DataError

KINDS = ("conversation", "text", "preference", "kto")
_ZERO_WIDTH = re.compile("[\u200b\u200c\u200d\u2060\ufeff]")
_TRAILING = re.compile(r"[ \t\u00a0]+$", re.M)
_BLANKS = re.compile(r"\n{3,}")
_ROLE_KEYS = ("role", "from")


@dataclass
class Record:
    kind: str
    data: dict[str, Any]
    where: str
    source: int  # index of the input file


def detect_kind(row: Row, fmt: str = "auto", columns: dict[str, str] | None = None) -> str:
    """The format name of a file from its first row: an SFT format, 'preference' or 'kto'."""
    if fmt != "auto":
        return fmt
    keys = set(row.data)
    if {"chosen", "rejected"} <= keys:
        return "preference"
    if {"prompt", "completion", "label"} <= keys:
        return "kto"
    return detect_format(row, columns)


def to_record(row: Row, fmt: str, source: int, columns: dict[str, str] | None = None) -> Record:
    """Validate one row of format `fmt`; RowError (a DataError naming file:line) when malformed."""
    if fmt == "preference":
        return Record("preference", parse_preference_row(row, columns).to_dict(), row.where, source)
    if fmt == "kto":
        return Record("kto", parse_kto_row(row, columns).to_dict(), row.where, source)
    if fmt not in FORMATS:
        raise DataError(f"format '{fmt}' is not one of auto, {', '.join(FORMATS)}, preference, kto")
    ex = to_example(row, fmt, columns)
    if fmt == "text":
        return Record("text", {"text": ex.text}, row.where, source)
    return Record("conversation", {"messages": [dict(m) for m in ex.messages]}, row.where, source)


# --- normalisation --------------------------------------------------------------------------------

def clean_text(text: str, form: str = "NFC", whitespace: bool = True, strip: bool = True) -> str:
    """Unicode normal form, then whitespace clean-up (indentation inside lines is kept: code)."""
    if form != "none":
        text = unicodedata.normalize(form, text)
    if whitespace:
        text = _ZERO_WIDTH.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
        text = _BLANKS.sub("\n\n", _TRAILING.sub("", text))
        if strip:
            text = text.strip()
    return text


def normalize(rec: Record, form: str = "NFC", whitespace: bool = True) -> Record:
    rec.data = map_texts(rec, lambda t: clean_text(t, form, whitespace))
    return rec


# --- accessors ------------------------------------------------------------------------------------

def map_texts(rec: Record, fn: Callable[[str], str]) -> dict[str, Any]:
    """A copy of rec.data with `fn` applied to every text leaf (role names and labels untouched)."""

    def walk(v: Any, key: str = "") -> Any:
        if isinstance(v, str):
            return v if key in _ROLE_KEYS else fn(v)
        if isinstance(v, list):
            return [walk(x, key) for x in v]
        if isinstance(v, dict):
            return {k: walk(x, k) for k, x in v.items()}
        return v

    return {k: (walk(v, k) if not k.startswith("_") else v) for k, v in rec.data.items()}


def all_texts(rec: Record) -> list[str]:
    if rec.kind == "conversation":  # the common case, without the generic walk
        return [m["content"] for m in rec.data["messages"]]
    if rec.kind == "text":
        return [rec.data["text"]]
    out: list[str] = []
    map_texts(rec, lambda t: out.append(t) or t)
    return out


def _joined(messages: list[dict[str, Any]]) -> str:
    return "\n".join(m["content"] for m in messages)


def prompt_and_responses(rec: Record) -> tuple[str, list[str]]:
    """The prompt text and the response texts the quality filters and statistics look at."""
    d = rec.data
    if rec.kind == "text":
        return "", [d["text"]]
    if rec.kind == "conversation":
        prompt = "\n".join(m["content"] for m in d["messages"] if m["role"] != "assistant")
        return prompt, [m["content"] for m in d["messages"] if m["role"] == "assistant"]
    if rec.kind == "kto":
        return _joined(d["prompt"]), [_joined(d["completion"])]
    return _joined(d["prompt"]), [_joined(d["chosen"]), _joined(d["rejected"])]


def responses(rec: Record) -> list[str]:
    return prompt_and_responses(rec)[1]
