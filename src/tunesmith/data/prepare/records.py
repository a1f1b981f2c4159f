"""Rows -> records in canonical form, and the accessors every later step uses.

A `Record` is one output row (`data`) plus its kind, its source file and its location:

    conversation  alpaca / sharegpt / messages rows  -> {"messages": [{role, content}, ...]}
    text          {"text": ...}                       -> {"text": ...}
    preference    {chosen, rejected[, prompt]}        -> the row's own fields (strings or message lists,
                                                          HH "\\n\\nHuman: / \\n\\nAssistant:" transcripts)
    kto           {prompt, completion, label}         -> the row's own fields

SFT rows go through `formats.to_example`, so prepare and train validate them the same way.
Preference and KTO rows keep their layout (parsing them into prompt/chosen/rejected messages is
the preference data module's job); here every text field of the row is normalised, filtered,
deduplicated, scrubbed and checked, and `responses()` knows which fields are the responses.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..formats import FORMATS, RowError, detect_format, to_example
from ..readers import Row
from ...errors import DataError

KINDS = ("conversation", "text", "preference", "kto")
_HH_ASSISTANT = "\n\nAssistant:"
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
        return Record("preference", _check_preference(row), row.where, source)
    if fmt == "kto":
        return Record("kto", _check_kto(row), row.where, source)
    if fmt not in FORMATS:
        raise DataError(f"format '{fmt}' is not one of auto, {', '.join(FORMATS)}, preference, kto")
    ex = to_example(row, fmt, columns)
    if fmt == "text":
        return Record("text", {"text": ex.text}, row.where, source)
    return Record("conversation", {"messages": [dict(m) for m in ex.messages]}, row.where, source)


def _side(value: Any, where: str, key: str) -> None:
    if isinstance(value, str):
        if not value.strip():
            raise RowError(where, f"empty '{key}'", expected="non-empty text or a list of messages")
        return
    if isinstance(value, list) and value and all(
        isinstance(m, dict) and isinstance(m.get("content"), str) and isinstance(m.get("role"), str) for m in value
    ):
        return
    raise RowError(where, f"'{key}' is neither text nor a list of {{role, content}} messages", expected="a string or [{role, content}, ...]")


def _check_preference(row: Row) -> dict[str, Any]:
    data = row.data
    for key in ("chosen", "rejected"):
        if key not in data:
            raise RowError(row.where, f"missing '{key}'", expected="preference rows with 'chosen' and 'rejected' (and optionally 'prompt')")
        _side(data[key], row.where, key)
    if "prompt" in data:
        _side(data["prompt"], row.where, "prompt")
    return dict(data)


def _check_kto(row: Row) -> dict[str, Any]:
    data = row.data
    _side(data.get("prompt"), row.where, "prompt")
    _side(data.get("completion"), row.where, "completion")
    if not isinstance(data.get("label"), bool):
        raise RowError(row.where, "'label' is not true/false", expected="label: true (desirable) or false (undesirable)")
    return dict(data)


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
    # HH transcripts begin with "\n\nHuman:", so raw preference strings keep their outer whitespace.
    strip = rec.kind in ("conversation", "text")
    rec.data = map_texts(rec, lambda t: clean_text(t, form, whitespace, strip))
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


def _as_text(side: Any) -> str:
    if isinstance(side, str):
        return side
    return "\n".join(m["content"] for m in side if m.get("role") == "assistant") or "\n".join(m["content"] for m in side)


def _split_shared(chosen: str, rejected: str) -> tuple[str, str, str]:
    """(prompt, chosen reply, rejected reply) of two transcripts sharing a prefix, cut at the last
    HH assistant marker inside the shared part (or at the shared characters when there is none)."""
    n = 0
    for a, b in zip(chosen, rejected):
        if a != b:
            break
        n += 1
    cut = chosen.rfind(_HH_ASSISTANT, 0, n)
    cut = cut + len(_HH_ASSISTANT) if cut >= 0 else n
    return chosen[:cut], chosen[cut:], rejected[cut:]


def prompt_and_responses(rec: Record) -> tuple[str, list[str]]:
    """The prompt text and the response texts the quality filters and statistics look at."""
    d = rec.data
    if rec.kind == "text":
        return "", [d["text"]]
    if rec.kind == "conversation":
        prompt = "\n".join(m["content"] for m in d["messages"] if m["role"] != "assistant")
        return prompt, [m["content"] for m in d["messages"] if m["role"] == "assistant"]
    if rec.kind == "kto":
        return _as_text(d["prompt"]) if isinstance(d["prompt"], str) else "\n".join(m["content"] for m in d["prompt"]), [_as_text(d["completion"])]
    if "prompt" in d:
        p = d["prompt"] if isinstance(d["prompt"], str) else "\n".join(m["content"] for m in d["prompt"])
        return p, [_as_text(d["chosen"]), _as_text(d["rejected"])]
    if isinstance(d["chosen"], str) and isinstance(d["rejected"], str):
        prompt, c, r = _split_shared(d["chosen"], d["rejected"])
        return prompt, [c.strip(), r.strip()]
    return "", [_as_text(d["chosen"]), _as_text(d["rejected"])]


def responses(rec: Record) -> list[str]:
    return prompt_and_responses(rec)[1]
