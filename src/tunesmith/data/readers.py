"""Read data files into rows: plain dicts that remember where they came from.

Every reader is a generator, so a multi-GB JSONL or Parquet file streams instead of landing in memory
(JSON arrays are the exception: the standard library cannot stream them). Each row carries `where`, a
location a person can open in an editor or index with `ds[i]`:

    JSONL, CSV, TSV, TXT   "file:LINE"      1-based physical line (for CSV the header is line 1;
                                            for TXT the paragraph's first line)
    JSON array             "file:[I]"       0-based element index ("file:data[I]" for {"data": [...]})
    Parquet, saved dataset "file:row I"     0-based row index, as in `ds[I]`

Problems with a file itself (missing, unknown kind, a .json document that does not parse, malformed
CSV quoting) raise `DataError` with that location. A single unreadable row (a JSONL line that is not
valid JSON or not an object, a line that is not UTF-8, a ragged CSV row, a JSON array element that is
not an object) raises `UnreadableRow`, or, when the caller passes `on_bad`, is handed to it and the
reader carries on with the next row (`data.on_error: skip`). Whether a row's *fields* make sense is
for `formats.py` to judge.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tunesmith.errors import DataError

SUPPORTED = (
    ".jsonl / .ndjson (one object per line), .json (an array of objects, or {\"data\": [...]}), "
    ".csv / .tsv (a header row), .txt (paragraphs separated by blank lines), each optionally .gz; "
    ".parquet; a directory written by `datasets.save_to_disk`; or a hub dataset as hf://org/name[:split]"
)
_KINDS = (  # longest suffix first, so ".jsonl.gz" is not taken for ".gz"
    (".jsonl", "jsonl"), (".ndjson", "jsonl"), (".json", "json"),
    (".csv", "csv"), (".tsv", "tsv"), (".txt", "txt"), (".parquet", "parquet"),
)
# org/name or org/name:split, e.g. "openai/gsm8k:test"; only tried when no such local path exists.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(:[\w.-]+)?$")
_BATCH = 1024


@dataclass(frozen=True)
class Row:
    data: dict[str, Any]
    where: str


class UnreadableRow(DataError):
    """One row the reader could not read. Like `formats.RowError`: `reason` has no row-specific parts
    (so skipped rows can be counted by it) and `short` is "where: what"."""

    def __init__(self, where: str, reason: str, message: str):
        self.where, self.reason, self.short = where, reason, f"{where}: {reason}"
        super().__init__(f"{where}: {message}")


OnBad = Callable[[UnreadableRow], None] | None


def _bad(on_bad: OnBad, err: UnreadableRow) -> None:
    """Raise `err`, or hand it to the caller's `on_bad` (which counts it) and let the reader go on."""
    if on_bad is None:
        raise err
    on_bad(err)


def read_rows(path: str | Path, on_bad: OnBad = None) -> Iterator[Row]:
    """Yield the rows of one data source, lazily.

    The source is checked here, so a missing file or an unknown kind fails at the call rather than at
    the first `next()`; the rows themselves are read as they are consumed. `on_bad`: called with each
    unreadable row instead of raising (see the module docstring).
    """
    text = str(path)
    if text.startswith("hf://"):
        return _read_hub(text[len("hf://"):])
    p = Path(path)
    if p.is_dir():
        return _read_saved_dataset(p)
    kind = _kind_of(p)
    if not p.exists():
        # "org/name" is a hub id only when it cannot be a local path: no extension we read and no
        # local "org" directory (so a typo in "data/train.jsonl" is reported as a missing file).
        if kind is None and _HUB_ID.match(text) and not Path(text.split("/")[0]).exists():
            return _read_hub(text)
        raise DataError(f"{p}: no such file. Supported: {SUPPORTED}")
    if kind is None:
        raise DataError(f"{p}: unknown kind of data file '{p.suffix or p.name}'. Supported: {SUPPORTED}")
    return _READERS[kind](p, on_bad)


def _kind_of(p: Path) -> str | None:
    name = p.name.lower().removesuffix(".gz")
    for suffix, kind in _KINDS:
        if name.endswith(suffix):
            # gzip only for the line-based text kinds; a .parquet.gz is not something pyarrow reads
            return None if kind == "parquet" and p.name.lower().endswith(".gz") else kind
    return None


def _open_text(p: Path, errors: str = "strict") -> IO[str]:
    # newline="" keeps "\r\n" inside quoted CSV fields intact (the csv module asks for it); the
    # line-based readers strip line ends themselves. utf-8-sig drops the BOM spreadsheets write.
    if p.name.lower().endswith(".gz"):
        return gzip.open(p, "rt", encoding="utf-8-sig", newline="", errors=errors)
    return open(p, encoding="utf-8-sig", newline="", errors=errors)


# Line-based readers decode with surrogateescape: a bad byte becomes a lone surrogate in its own line
# (decoding runs a chunk ahead of the lines handed out, so a strict decoder's error cannot say which
# line it was on), and that line alone is reported or skipped.
_NOT_UTF8 = "not UTF-8 text"
_UTF8_FIX = "re-save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"


def _undecodable(text: str) -> str:
    """'' for clean text, else where its first undecodable byte sits ("byte 0xe9 at column 12")."""
    for col, ch in enumerate(text, 1):
        if "\udc80" <= ch <= "\udcff":
            return f"byte {ord(ch) - 0xdc00:#04x} at column {col}"
    return ""


def _lines(p: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line without its end); undecodable bytes stay as lone surrogates, for
    the caller to find with `_undecodable`."""
    try:
        with _open_text(p, errors="surrogateescape") as f:
            for lineno, line in enumerate(f, 1):
                yield lineno, line.rstrip("\r\n")
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{p}: cannot read ({e})") from None


def _read_jsonl(p: Path, on_bad: OnBad = None) -> Iterator[Row]:
    for lineno, line in _lines(p):
        if not line.strip():
            continue
        where = f"{p}:{lineno}"
        if bad := _undecodable(line):
            _bad(on_bad, UnreadableRow(where, _NOT_UTF8, f"{_NOT_UTF8} ({bad}); {_UTF8_FIX}"))
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            _bad(on_bad, UnreadableRow(where, "invalid JSON", f"invalid JSON ({e.msg} at column {e.colno}); "
                                       "a JSONL file holds exactly one JSON object per line"))
            continue
        if not isinstance(obj, dict):
            _bad(on_bad, UnreadableRow(where, "not a JSON object", f"expected a JSON object {{...}} on each line, got {_json_type(obj)}"))
            continue
        yield Row(obj, where)


def _read_json(p: Path, on_bad: OnBad = None) -> Iterator[Row]:
    try:
        with _open_text(p) as f:
            doc = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{p}:{e.lineno}:{e.colno}: invalid JSON ({e.msg})") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{p}: not UTF-8 text ({e.reason}); re-save the file as UTF-8") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{p}: cannot read ({e})") from None
    records, prefix = _records_of(p, doc)
    for i, obj in enumerate(records):
        where = f"{p}:{prefix}[{i}]"
        if not isinstance(obj, dict):
            _bad(on_bad, UnreadableRow(where, "not a JSON object", f"expected a JSON object {{...}} for each record, got {_json_type(obj)}"))
            continue
        yield Row(obj, where)


def _records_of(p: Path, doc: Any) -> tuple[list[Any], str]:
    """The list of records in a JSON document, and the key it sat under ("" for a top-level array)."""
    if isinstance(doc, list):
        return doc, ""
    if isinstance(doc, dict):
        lists = [k for k, v in doc.items() if isinstance(v, list)]
        if len(lists) == 1:
            key = lists[0]
            if key in ("conversations", "messages"):
                raise DataError(
                    f"{p}: looks like a single record ({{\"{key}\": [...]}}); put records in a JSON "
                    "array [{...}, {...}] or write one object per line to a .jsonl file"
                )
            return doc[key], key
        found = f"keys holding lists: {', '.join(lists)}" if lists else f"keys: {', '.join(map(str, doc)) or 'none'}"
        raise DataError(
            f"{p}: expected a JSON array of records [{{...}}, ...] or an object with one list of records "
            f"like {{\"data\": [...]}}; found an object with {found}"
        )
    raise DataError(f"{p}: expected a JSON array of records [{{...}}, ...], got {_json_type(doc)}")


def _read_csv(p: Path, on_bad: OnBad = None, delimiter: str = ",") -> Iterator[Row]:
    # csv.reader rather than DictReader: DictReader silently skips blank lines (which moves rows away
    # from the line numbers we report) and files ragged rows under a None key.
    csv.field_size_limit(2**31 - 1)  # the 128 KiB default is too small for long documents
    header: list[str] | None = None
    try:
        with _open_text(p, errors="surrogateescape") as f:
            reader = csv.reader(f, delimiter=delimiter)
            end = 0  # physical line where the previous record ended; the next starts after it
            for fields in reader:
                start, end = end + 1, reader.line_num
                if not fields:  # blank line
                    continue
                bad = next((b for b in map(_undecodable, fields) if b), "")
                if header is None:
                    if bad:  # without its header no row of the file can be read
                        raise DataError(f"{p}:{start}: the header row is {_NOT_UTF8} ({bad}); {_UTF8_FIX}")
                    header = _check_header(p, start, fields)
                    continue
                if bad:
                    _bad(on_bad, UnreadableRow(f"{p}:{start}", _NOT_UTF8, f"{_NOT_UTF8} ({bad}); {_UTF8_FIX}"))
                elif len(fields) != len(header):
                    _bad(on_bad, UnreadableRow(f"{p}:{start}", "wrong number of fields", f"{len(fields)} fields but the "
                                               f"header (line 1) has {len(header)}; quote fields that contain the "
                                               "delimiter, quotes or line breaks"))
                else:
                    yield Row(dict(zip(header, fields)), f"{p}:{start}")
    except csv.Error as e:
        raise DataError(f"{p}:{reader.line_num}: malformed CSV ({e})") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{p}: cannot read ({e})") from None


def _check_header(p: Path, lineno: int, fields: list[str]) -> list[str]:
    names = [f.strip() for f in fields]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes or "" in names:
        problem = f"repeated column names {dupes}" if dupes else "an empty column name"
        raise DataError(f"{p}:{lineno}: the header row has {problem}; each column needs a distinct name")
    return names


def _read_tsv(p: Path, on_bad: OnBad = None) -> Iterator[Row]:
    return _read_csv(p, on_bad, delimiter="\t")


def _read_txt(p: Path, on_bad: OnBad = None) -> Iterator[Row]:
    start, para, bad = 0, [], ""  # a paragraph with an undecodable line is one unreadable row

    def flush() -> Iterator[Row]:
        if bad:
            _bad(on_bad, UnreadableRow(f"{p}:{start}", _NOT_UTF8, f"{_NOT_UTF8} ({bad}); {_UTF8_FIX}"))
        else:
            yield Row({"text": "\n".join(para)}, f"{p}:{start}")

    for lineno, line in _lines(p):
        if line.strip():
            if not para:
                start = lineno
            para.append(line)
            if not bad and (b := _undecodable(line)):
                bad = f"line {lineno}: {b}"
        elif para:
            yield from flush()
            para, bad = [], ""
    if para:
        yield from flush()


def _read_parquet(p: Path, on_bad: OnBad = None) -> Iterator[Row]:  # no row-level damage to skip
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(p)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError depending on the damage
        raise DataError(f"{p}: not a readable Parquet file ({e})") from None
    i = 0
    for batch in pf.iter_batches(batch_size=_BATCH):
        for record in batch.to_pylist():
            yield Row(record, f"{p}:row {i}")
            i += 1


def _read_saved_dataset(p: Path) -> Iterator[Row]:
    if (p / "manifest.json").is_file() and (p / "train" / "state.json").is_file():
        p = p / "train"  # a directory written by `tunesmith prepare`: train on its train split
    if (p / "dataset_dict.json").exists():
        try:
            splits = json.loads((p / "dataset_dict.json").read_text())["splits"]
        except (OSError, ValueError, KeyError, TypeError):
            splits = sorted(d.name for d in p.iterdir() if (d / "state.json").exists())
        options = ", ".join(f"{p}/{s}" for s in splits)
        raise DataError(f"{p}: holds several splits ({', '.join(splits)}); point at one of them: {options}")
    if not ((p / "state.json").exists() or (p / "dataset_info.json").exists()):
        raise DataError(
            f"{p}: a directory, but not one written by `datasets.save_to_disk` (no state.json); "
            f"point at a data file instead. Supported: {SUPPORTED}"
        )
    import datasets

    try:
        ds = datasets.load_from_disk(str(p))
    except Exception as e:
        raise DataError(f"{p}: cannot load the saved dataset ({e})") from None
    return _dataset_rows(ds, str(p))


def _read_hub(spec: str) -> Iterator[Row]:
    name, _, split = spec.partition(":")
    split = split or "train"
    where = f"hf://{name}:{split}"
    import datasets

    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # network, auth, unknown name or split: all need the same advice
        raise DataError(
            f"{where}: cannot load from the Hugging Face Hub ({type(e).__name__}: {e}); check the name and "
            "split, or download the data and point at the local file"
        ) from None
    yield from _dataset_rows(ds, where)


def _dataset_rows(ds: Any, where: str) -> Iterator[Row]:
    import datasets

    if isinstance(ds, datasets.DatasetDict):
        raise DataError(f"{where}: holds several splits ({', '.join(ds)}); name one, e.g. {where}/{next(iter(ds))}")
    i = 0
    for batch in ds.with_format(None).iter(batch_size=_BATCH):
        columns = list(batch)
        for values in zip(*(batch[c] for c in columns)):
            yield Row(dict(zip(columns, values)), f"{where}:row {i}")
            i += 1


def _json_type(v: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "true/false"}.get(
        type(v), "null" if v is None else "a number"
    )


_READERS = {
    "jsonl": _read_jsonl,
    "json": _read_json,
    "csv": _read_csv,
    "tsv": _read_tsv,
    "txt": _read_txt,
    "parquet": _read_parquet,
}
