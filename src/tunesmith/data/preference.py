"""Preference and KTO rows -> canonical examples.

Accepted row shapes (after `columns` renames the file's fields):

    explicit   {prompt, chosen, rejected}     each a string or a message list ({role, content} or
                                              {from, value}); a string prompt is one user turn, a
                                              string response one assistant turn
    implicit   {chosen, rejected}             full conversations as message lists; their shared
                                              leading turns are the prompt (TRL's "implicit prompt")
    hh         {chosen, rejected}             Anthropic HH-RLHF transcripts, "\\n\\nHuman: ... \\n\\nAssistant: ...";
                                              the shared leading turns are the prompt
    kto        {prompt, completion, label}    unpaired: label true (desirable) or false (undesirable)

Canonical forms, all messages `{"role": system|user|assistant, "content": str}`:

    PreferencePair(prompt=[...ends with a user turn], chosen=[assistant...], rejected=[assistant...])
    KTOExample(prompt=[...ends with a user turn], completion=[assistant...], label=bool)

`.to_dict()` gives `{"prompt", "chosen", "rejected"}` / `{"prompt", "completion", "label"}`.
A bad row raises `RowError` (a `DataError`) naming file:line, what was wrong and what was expected;
with `on_error="skip"` it is counted by reason in the `LoadReport` instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError, DataError
from .formats import LoadReport, RowError, apply_columns, read_checked
from .readers import Row

PREFERENCE_FORMATS = ("auto", "explicit", "implicit", "hh")
PAIR_NEEDS = "'prompt', 'chosen', 'rejected' (strings or message lists), or 'chosen'/'rejected' full conversations"
KTO_NEEDS = "'prompt', 'completion' (strings or message lists) and 'label' (true = desirable, false = undesirable)"
_ROLES = {"system": "system", "user": "user", "human": "user", "assistant": "assistant", "gpt": "assistant",
          "model": "assistant", "bot": "assistant"}
_HH_TURN = re.compile(r"\n\n(Human|Assistant): ?")

Messages = list[dict[str, str]]


@dataclass
class PreferencePair:
    prompt: Messages
    chosen: Messages
    rejected: Messages
    where: str

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "chosen": self.chosen, "rejected": self.rejected}


@dataclass
class KTOExample:
    prompt: Messages
    completion: Messages
    label: bool
    where: str

    def to_dict(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "completion": self.completion, "label": self.label}


# --- pieces -----------------------------------------------------------------------------------------


def _messages(value: Any, where: str, key: str) -> Messages:
    """A message list ({role, content} or {from, value}) validated into canonical messages."""
    if not isinstance(value, list):
        raise RowError(where, f"'{key}' is not a string or message list", expected=f"text or [{{role, content}}, ...], got {type(value).__name__}")
    if not value:
        raise RowError(where, f"'{key}' is an empty list", expected="a string or a non-empty list of {role, content}")
    out = []
    for i, turn in enumerate(value):
        at = f"{key}[{i}]"
        if not isinstance(turn, dict):
            raise RowError(where, "turn is not an object", at, expected="{role, content} or {from, value}")
        role_key, text_key = ("from", "value") if "from" in turn else ("role", "content")
        if role_key not in turn or text_key not in turn:
            raise RowError(where, f"turn has no '{role_key}' or '{text_key}'", at, expected="{role, content} or {from, value}")
        role = _ROLES.get(turn[role_key].lower()) if isinstance(turn[role_key], str) else None
        if role is None:
            raise RowError(where, f"unknown role {turn[role_key]!r}", at, expected=f"one of {', '.join(_ROLES)}")
        content = turn[text_key]
        if not isinstance(content, str) or not content.strip():
            raise RowError(where, f"empty or non-string '{text_key}'", at, expected="text in every turn")
        out.append({"role": role, "content": content})
    return out


def _text(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str):
        raise RowError(where, f"'{key}' is not a string or message list", expected=f"text, got {type(value).__name__}")
    if not value.strip():
        raise RowError(where, f"empty '{key}'", expected="non-empty text")
    return value


def as_prompt(value: Any, where: str, key: str = "prompt") -> Messages:
    """A prompt (string or user-ending message list) as messages; public: `tunesmith score` reads prompts too."""
    msgs = [{"role": "user", "content": _text(value, where, key)}] if isinstance(value, str) else _messages(value, where, key)
    _check_alternation(msgs, where, key, last="user")
    return msgs


def as_response(value: Any, where: str, key: str) -> Messages:
    """A response (string or assistant message list) as messages; public for the same reason."""
    msgs = [{"role": "assistant", "content": _text(value, where, key)}] if isinstance(value, str) else _messages(value, where, key)
    if msgs[0]["role"] != "assistant":
        raise RowError(where, f"'{key}' starts with a {msgs[0]['role']} turn", expected="the response to start with an assistant turn")
    if msgs[-1]["role"] != "assistant":
        raise RowError(where, f"'{key}' ends with a {msgs[-1]['role']} turn", expected="the response to end with an assistant turn")
    return msgs


def _check_alternation(msgs: Messages, where: str, key: str, last: str) -> None:
    body = msgs[1:] if msgs and msgs[0]["role"] == "system" else msgs
    for i, m in enumerate(body):
        due = "user" if i % 2 == 0 else "assistant"
        if m["role"] != due:
            raise RowError(where, f"'{m['role']}' turn where '{due}' was due", key,
                           expected="turns alternating user, assistant, ... after an optional system turn")
    if not body or body[-1]["role"] != last:
        raise RowError(where, f"'{key}' does not end with a {last} turn", expected=f"the {key} to end with a {last} turn")


def split_shared_prefix(chosen: Messages, rejected: Messages, where: str) -> tuple[Messages, Messages, Messages]:
    """Full conversations -> (prompt, chosen response, rejected response).

    The prompt is the longest run of identical leading turns that ends with a user turn; what
    follows in each conversation must be assistant-led."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    while n > 0 and chosen[n - 1]["role"] != "user":
        n -= 1
    if n == 0:
        raise RowError(where, "chosen and rejected share no prompt ending with a user turn",
                       expected="both conversations to start with the same turns up to the last user turn")
    prompt = chosen[:n]
    _check_alternation(prompt, where, "prompt", last="user")
    return prompt, as_response(chosen[n:], where, "chosen"), as_response(rejected[n:], where, "rejected")


def parse_hh(text: str, where: str, key: str = "chosen") -> Messages:
    """`"\\n\\nHuman: a\\n\\nAssistant: b"` -> [{user: a}, {assistant: b}] (turn text stripped)."""
    text = _text(text, where, key)
    if not text.startswith("\n\n"):
        text = "\n\n" + text.lstrip("\n")
    parts = _HH_TURN.split(text)
    if parts[0].strip() or len(parts) < 3:
        raise RowError(where, f"'{key}' is not an HH transcript", expected="text of the form '\\n\\nHuman: ...\\n\\nAssistant: ...'")
    msgs = []
    for speaker, content in zip(parts[1::2], parts[2::2]):
        role = "user" if speaker == "Human" else "assistant"
        if not content.strip():
            raise RowError(where, f"an empty {speaker} turn in '{key}'", expected="text after every 'Human:' and 'Assistant:'")
        if msgs and msgs[-1]["role"] == role:  # "Human: a\n\nHuman: b" happens in HH; keep it one turn
            msgs[-1]["content"] += "\n\n" + content.strip()
        else:
            msgs.append({"role": role, "content": content.strip()})
    return msgs


def _is_hh(value: Any) -> bool:
    return isinstance(value, str) and ("\n\nHuman:" in value or value.startswith("Human:")) and "\n\nAssistant:" in value


# --- rows -------------------------------------------------------------------------------------------


def parse_preference_row(row: Row, columns: dict[str, str] | None = None, fmt: str = "auto") -> PreferencePair:
    """One row -> PreferencePair; `fmt` is explicit, implicit, hh or auto (decided per row)."""
    if fmt not in PREFERENCE_FORMATS:
        raise ConfigError(f"preference format '{fmt}'; expected one of {', '.join(PREFERENCE_FORMATS)}")
    data = apply_columns(row, columns)
    where = row.where
    for key in ("chosen", "rejected"):
        if key not in data:
            raise RowError(where, f"missing '{key}'", expected=f"preference rows to have {PAIR_NEEDS}")
    chosen, rejected = data["chosen"], data["rejected"]
    if fmt == "auto":
        fmt = "explicit" if data.get("prompt") is not None else "hh" if _is_hh(chosen) else "implicit"
    if fmt == "explicit":
        if data.get("prompt") is None:
            raise RowError(where, "missing 'prompt'", expected=f"preference rows to have {PAIR_NEEDS}")
        pair = PreferencePair(as_prompt(data["prompt"], where), as_response(chosen, where, "chosen"),
                              as_response(rejected, where, "rejected"), where)
    elif fmt == "hh":
        pair = PreferencePair(*split_shared_prefix(parse_hh(chosen, where, "chosen"), parse_hh(rejected, where, "rejected"), where), where)
    else:
        if isinstance(chosen, str) or isinstance(rejected, str):
            raise RowError(where, "'chosen'/'rejected' are strings but there is no 'prompt'",
                           expected=f"{PAIR_NEEDS}; HH transcripts need '\\n\\nHuman:' and '\\n\\nAssistant:'")
        pair = PreferencePair(*split_shared_prefix(_messages(chosen, where, "chosen"), _messages(rejected, where, "rejected"), where), where)
    if pair.chosen == pair.rejected:
        raise RowError(where, "chosen and rejected are identical", expected="two different responses to prefer between")
    return pair


def _label(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    raise RowError(where, f"'label' is {value!r}", expected="true (desirable) or false (undesirable)")


def parse_kto_row(row: Row, columns: dict[str, str] | None = None) -> KTOExample:
    data = apply_columns(row, columns)
    for key in ("prompt", "completion", "label"):
        if data.get(key) is None:
            raise RowError(row.where, f"missing '{key}'", expected=f"KTO rows to have {KTO_NEEDS}")
    return KTOExample(as_prompt(data["prompt"], row.where), as_response(data["completion"], row.where, "completion"),
                      _label(data["label"], row.where), row.where)


# --- files ------------------------------------------------------------------------------------------


def load_preference(paths: list[str], kind: str = "pairs", columns: dict[str, str] | None = None,
                    on_error: str = "raise", fmt: str = "auto") -> tuple[list, LoadReport]:
    """Read every file as preference pairs (kind="pairs") or KTO rows (kind="kto")."""
    if kind not in ("pairs", "kto"):
        raise ValueError(f"kind must be 'pairs' or 'kto', not {kind!r}")
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"`data.on_error` is '{on_error}'; expected raise or skip")
    if not paths:
        raise DataError("no data files given; set `data.train` to one or more files")
    def parse(path: str, row: Row):
        return parse_kto_row(row, columns) if kind == "kto" else parse_preference_row(row, columns, fmt)

    out, report = read_checked(paths, parse, on_error, lambda path: "kto" if kind == "kto" else "preference")
    if not out:
        raise DataError(f"all {report.rows} rows were skipped as invalid; first problems:\n  " + "\n  ".join(report.first_skipped))
    return out, report
