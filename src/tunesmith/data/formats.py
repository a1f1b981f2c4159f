"""Turn rows into the two canonical examples everything downstream trains on.

    alpaca    {instruction, input?, output, system?}     -> Conversation
    sharegpt  {conversations: [{from, value}, ...]}      -> Conversation
    messages  {messages: [{role, content}, ...]}         -> Conversation
    text      {text}                                     -> Text

`columns` renames first: it maps the format's field to the file's column, which may be a dotted path
into nested records ("instances.0.output"). Detection then looks at the first row's fields.

A bad row raises `DataError` naming its file:line, what was wrong and what was expected. With
`on_error="skip"` bad rows are counted by reason in the `LoadReport` instead; nothing is dropped
without being counted. Problems with a file itself (invalid JSON, a missing file) always raise: the
reader cannot go on past them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from tunesmith.data.readers import Row, UnreadableRow, read_rows
from tunesmith.errors import ConfigError, DataError

FORMATS = ("alpaca", "sharegpt", "messages", "text")
NEEDS = {
    "alpaca": "'instruction' and 'output' (optional 'input', 'system')",
    "sharegpt": "'conversations': [{from: human|gpt|system, value: ...}, ...]",
    "messages": "'messages': [{role: system|user|assistant, content: ...}, ...]",
    "text": "'text'",
}
_ROLES = {
    "system": "system",
    "user": "user", "human": "user",
    "assistant": "assistant", "gpt": "assistant", "model": "assistant", "bot": "assistant",
}
_TOOL_ROLES = ("tool", "function", "function_call", "observation", "ipython")
_MAX_FIRST_SKIPPED = 5


@dataclass
class Conversation:
    messages: list[dict[str, str]]  # [{"role": "system"|"user"|"assistant", "content": str}]
    where: str


@dataclass
class Text:
    text: str
    where: str


Example = Conversation | Text


@dataclass
class LoadReport:
    rows: int = 0
    kept: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count
    first_skipped: list[str] = field(default_factory=list)  # up to 5 "where: reason"
    formats: dict[str, str] = field(default_factory=dict)  # path -> format used

    def summary(self) -> str:
        used = ", ".join(f"{p} ({f})" for p, f in self.formats.items())
        lines = [f"read {self.rows} rows from {used}: kept {self.kept}, skipped {self.rows - self.kept}"]
        lines += [f"  {n} x {reason}" for reason, n in sorted(self.skipped.items(), key=lambda kv: -kv[1])]
        lines += [f"  e.g. {s}" for s in self.first_skipped]
        return "\n".join(lines)


class RowError(DataError):
    """A bad row. `reason` has no row- or turn-specific parts, so skipped rows can be counted by it."""

    def __init__(self, where: str, reason: str, at: str = "", expected: str = ""):
        self.where, self.reason = where, reason
        self.short = f"{where}: {at + ': ' if at else ''}{reason}"
        super().__init__(self.short + (f"; expected {expected}" if expected else ""))


# --- column mapping ---------------------------------------------------------------------------------

_MISSING = object()


def _lookup(data: Any, path: str) -> Any:
    """`data[path]`, else follow the dotted path through dicts and list indices; _MISSING if absent."""
    if isinstance(data, dict) and path in data:
        return data[path]
    for part in path.split("."):
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and part.lstrip("-").isdigit() and -len(data) <= int(part) < len(data):
            data = data[int(part)]
        else:
            return _MISSING
    return data


def apply_columns(row: Row, columns: dict[str, str] | None, strict: bool = True) -> dict[str, Any]:
    """The row's fields with each format field set from its mapped file column.

    Strict: a mapped column missing from the row is an error. Not strict (for detection): it is left out.
    """
    data = dict(row.data)
    for target, source in (columns or {}).items():
        value = _lookup(row.data, source)
        if value is not _MISSING:
            data[target] = value
        elif strict:
            keys = ", ".join(map(str, row.data)) or "none"
            raise RowError(
                row.where, f"column '{source}' (mapped to '{target}') not found",
                expected=f"it in every row; this row has: {keys}",
            )
    return data


# --- detection --------------------------------------------------------------------------------------

def detect_format(row: Row, columns: dict[str, str] | None = None) -> str:
    """The format whose fields the row has (after `columns`); DataError when none or several fit."""
    keys = apply_columns(row, columns, strict=False).keys()
    found = [
        fmt
        for fmt, needed in (
            ("alpaca", {"instruction", "output"}),
            ("sharegpt", {"conversations"}),
            ("messages", {"messages"}),
            ("text", {"text"}),
        )
        if needed <= keys
    ]
    if len(found) == 1:
        return found[0]
    needs = "; ".join(f"{fmt}: {need}" for fmt, need in NEEDS.items())
    what = f"fits several formats ({', '.join(found)})" if found else "fits no known format"
    raise DataError(
        f"{row.where}: the first row (fields: {', '.join(map(str, keys)) or 'none'}) {what}. Set `data.format` "
        f"and, if the names differ, `data.columns` (format field: file column). Each format needs: {needs}"
    )


# --- row -> example ---------------------------------------------------------------------------------

def to_example(row: Row, fmt: str, columns: dict[str, str] | None = None) -> Example:
    """Validate one row as `fmt` and build its example; RowError (a DataError) names row.where."""
    if fmt not in _BUILDERS:
        raise ConfigError(f"`data.format` is '{fmt}'; expected auto or one of {', '.join(FORMATS)}")
    return _BUILDERS[fmt](apply_columns(row, columns), row.where)


def _string(data: dict[str, Any], key: str, where: str, fmt: str, required: bool) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if value is None:
        raise RowError(where, f"missing '{key}'", expected=f"{fmt} rows to have {NEEDS[fmt]}")
    if not isinstance(value, str):
        raise RowError(where, f"'{key}' is not a string", expected=f"text, got {type(value).__name__}")
    if required and not value.strip():
        raise RowError(where, f"empty '{key}'", expected="non-empty text")
    return value


def _alpaca(data: dict[str, Any], where: str) -> Conversation:
    instruction = _string(data, "instruction", where, "alpaca", required=True)
    extra = _string(data, "input", where, "alpaca", required=False)
    output = _string(data, "output", where, "alpaca", required=True)
    system = _string(data, "system", where, "alpaca", required=False)
    messages = [{"role": "system", "content": system}] if system.strip() else []
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    messages += [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    return Conversation(messages, where)


def _text(data: dict[str, Any], where: str) -> Text:
    return Text(_string(data, "text", where, "text", required=True), where)


def _sharegpt(data: dict[str, Any], where: str) -> Conversation:
    return Conversation(_turns(data, "conversations", where, "sharegpt"), where)


def _messages(data: dict[str, Any], where: str) -> Conversation:
    return Conversation(_turns(data, "messages", where, "messages"), where)


def _turns(data: dict[str, Any], key: str, where: str, fmt: str) -> list[dict[str, str]]:
    """Validate a list of turns, {from, value} or {role, content}, into canonical messages."""
    turns = data.get(key)
    if turns is None:
        raise RowError(where, f"missing '{key}'", expected=f"{fmt} rows to have {NEEDS[fmt]}")
    if not isinstance(turns, list) or not turns:
        raise RowError(where, f"'{key}' is empty or not a list", expected=f"a non-empty list of turns: {NEEDS[fmt]}")
    messages = []
    for i, turn in enumerate(turns):
        at = f"{key}[{i}]"
        if not isinstance(turn, dict):
            raise RowError(where, "turn is not an object", at, expected="{from, value} or {role, content}")
        role_key, text_key = ("from", "value") if "from" in turn else ("role", "content")
        for k in (role_key, text_key):
            if k not in turn:
                raise RowError(where, f"turn has no '{k}'", at, expected="{from, value} or {role, content}")
        role = _role(turn[role_key], where, at, role_key)
        content = _content(turn[text_key], where, at, text_key)
        _check_order(role, i, messages, where, at)
        messages.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in messages):
        raise RowError(where, "no assistant turn", expected="at least one assistant reply to train on")
    if messages[-1]["role"] != "assistant":
        raise RowError(where, "ends with a user turn", expected="an assistant reply as the last turn")
    return messages


def _role(name: Any, where: str, at: str, role_key: str) -> str:
    role = _ROLES.get(name.lower()) if isinstance(name, str) else None
    if role is not None:
        return role
    if isinstance(name, str) and name.lower() in _TOOL_ROLES:
        reason = f"unsupported role '{name}' (tool calls are not supported yet)"
        raise RowError(where, reason, at, expected="system, user or assistant")
    known = ", ".join(_ROLES)
    raise RowError(where, f"unknown {role_key} {name!r}", at, expected=f"one of {known}")


def _content(value: Any, where: str, at: str, text_key: str) -> str:
    if isinstance(value, list):  # OpenAI-style parts: [{"type": "text", "text": ...}, ...]
        if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in value):
            expected = "text only (images/audio are not supported)"
            raise RowError(where, f"non-text parts in '{text_key}'", at, expected=expected)
        value = "\n".join(p["text"] for p in value)
    if not isinstance(value, str):
        raise RowError(where, f"'{text_key}' is not a string", at, expected=f"text, got {type(value).__name__}")
    if not value.strip():
        raise RowError(where, f"empty '{text_key}'", at, expected="text in every turn")
    return value


def _check_order(role: str, i: int, messages: list[dict[str, str]], where: str, at: str) -> None:
    if role == "system":
        if i != 0:
            raise RowError(where, "a system turn after the start", at, expected="system only as the first turn")
        return
    previous = messages[-1]["role"] if messages else "system"
    expected = "user" if previous in ("system", "assistant") else "assistant"
    if role != expected:
        raise RowError(
            where, f"'{role}' turn where '{expected}' was due", at,
            expected="turns alternating user, assistant, ... after an optional system turn",
        )


_BUILDERS = {"alpaca": _alpaca, "sharegpt": _sharegpt, "messages": _messages, "text": _text}


# --- files -> examples ------------------------------------------------------------------------------

def read_checked(paths: list[str], parse, on_error: str, format_of) -> tuple[list, LoadReport]:
    """Every row of every file through `parse(path, row)`; a `RowError`, or a row the reader cannot
    read at all (`UnreadableRow`: invalid JSON, not UTF-8, ...), stops the run (on_error raise) or is
    counted by reason with the first few kept as examples (skip). `format_of(path)` names the
    format each file was read as. An empty file is an error."""
    out: list = []
    report, skipped = LoadReport(), Counter()

    def skip(e: RowError | UnreadableRow) -> None:
        skipped[e.reason] += 1
        if len(report.first_skipped) < _MAX_FIRST_SKIPPED:
            report.first_skipped.append(e.short)

    def unreadable(e: UnreadableRow) -> None:  # a line the reader could not read is a row too
        report.rows += 1
        skip(e)

    for path in paths:
        n_before = report.rows
        for row in read_rows(path, on_bad=None if on_error == "raise" else unreadable):
            report.rows += 1
            try:
                out.append(parse(path, row))
            except RowError as e:
                if on_error == "raise":
                    raise
                skip(e)
        if report.rows == n_before:
            raise DataError(f"{path}: no rows found; is it the right file?")
        report.formats[str(path)] = format_of(path)
    report.kept, report.skipped = len(out), dict(skipped)
    return out, report


def load_examples(
    paths: list[str],
    fmt: str = "auto",
    columns: dict[str, str] | None = None,
    on_error: str = "raise",
) -> tuple[list[Example], LoadReport]:
    """Read every file, check every row, and return the examples plus counts of what was skipped.

    With fmt="auto" each file's format is detected from its first row, so files may differ.
    """
    if fmt != "auto" and fmt not in FORMATS:
        raise ConfigError(f"`data.format` is '{fmt}'; expected auto or one of {', '.join(FORMATS)}")
    if on_error not in ("raise", "skip"):
        raise ConfigError(f"`data.on_error` is '{on_error}'; expected raise or skip")
    if not paths:
        raise DataError("no data files given; set `data.train` to one or more files")
    file_fmt: dict[str, str] = {}

    def parse(path: str, row: Row) -> Example:
        if fmt == "auto" and path not in file_fmt:
            file_fmt[path] = detect_format(row, columns)  # each file's format from its first row
        return to_example(row, file_fmt.get(path, fmt), columns)

    examples, report = read_checked(paths, parse, on_error, lambda path: file_fmt.get(path, fmt))
    if not examples:
        raise DataError(
            f"all {report.rows} rows were skipped as invalid; first problems:\n  " + "\n  ".join(report.first_skipped)
        )
    return examples, report
