"""Claiming output directories and writing files so that nothing the user had is lost.

Every stage writes its output through here:
- `check_output` refuses, before any work, an output that would destroy something: the working
  directory, a parent of it, the home directory or `/`; a path that equals or contains one of the
  stage's inputs; an existing file where a directory belongs; a non-empty directory without
  `--overwrite`; and, even with `--overwrite`, a directory tunesmith did not write (or that another
  stage wrote: `prepare --overwrite` never replaces a training run).
- What tunesmith wrote is recognised by `MARKER` (`.tunesmith.json`, naming the stage), which every
  stage puts into its output. Outputs from before the marker existed are recognised by their
  layout (`LEGACY_LAYOUTS`: a run's config.yaml beside metrics.jsonl or checkpoints/, prepare's
  manifest.json + prepare_report.md, eval's results.json + report.md, a merged or quantized model's
  report.md + config.json). An old `init-model` directory holds nothing a downloaded model would
  not, so it is not recognised: delete it yourself once.
- `atomic_dir` builds the output in a hidden sibling and swaps it in at the end; `claim_dir` (for
  training, which writes into its directory as it goes) moves the old output aside first. Either
  way the old output is deleted only once the new one is complete, and put back if the new one fails.
- Hidden siblings left by a killed process (`.NAME.tmp-PID-*`, `.NAME.old-PID-*`) are cleaned on the
  next claim of NAME, only when they were made on this host and that PID is no longer running: a temp dir is deleted (it was never
  complete); a moved-aside old output is put back when NAME is missing, and otherwise kept and named.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

MARKER = ".tunesmith.json"
# Files that, all present, mark an output written before the marker existed (see module doc).
LEGACY_LAYOUTS: dict[str, list[tuple[str, ...]]] = {
    "train": [("config.yaml", "metrics.jsonl"), ("config.yaml", "checkpoints")],
    "prepare": [("manifest.json", "prepare_report.md")],
    "eval": [("results.json", "report.md")],
    "merge": [("report.md", "config.json")],
    "quantize": [("report.md", "config.json")],
}
STAGE_NAMES = {"train": "a training run", "prepare": "prepared data", "merge": "a merged model", "eval": "an eval output",
               "quantize": "a quantized model", "init-model": "an initialised model", "convert": "a converted GGUF model"}
_SIBLING = re.compile(r"^\.(?P<name>.+)\.(?P<tag>tmp|old)-(?P<pid>\d+)(-(?P<hex>[0-9a-f]+))?$")
# A sibling's name carries this host's tag: on a shared filesystem another machine's PIDs mean nothing here.
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:4]


# --- files ---------------------------------------------------------------------------------------


def plain_permissions(path: Path) -> None:
    """Give `path` the mode a plain `open()` would (0666 minus the umask): mkstemp and safetensors'
    writer create files 0600, which a server or a colleague running as another user cannot read."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def apply_umask(directory: Path) -> None:
    """plain_permissions for every file directly in `directory` (save_pretrained leaves 0600 files)."""
    for path in Path(directory).iterdir():
        if path.is_file():
            plain_permissions(path)


def sibling(out: Path, tag: str) -> Path:
    """A hidden, unique path beside `out` (same filesystem, so renames are atomic), naming our PID."""
    out = Path(out)
    return out.parent / f".{out.name}.{tag}-{os.getpid()}-{_HOST}{secrets.token_hex(4)}"


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path` to write; on success it replaces `path` in one rename (so a
    reader sees the old file or the new one, never half of one), on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = sibling(path, "tmp")
    try:
        yield tmp
        if tmp.is_file():
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            plain_permissions(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


# --- recognising what tunesmith wrote -------------------------------------------------------------


def write_marker(directory: Path, stage: str) -> None:
    from . import __version__

    atomic_write_text(Path(directory) / MARKER, json.dumps({"stage": stage, "tunesmith": __version__}) + "\n")


def output_stage(directory: Path) -> str | None:
    """The stage that wrote `directory` (from its marker, or a known older layout), else None."""
    directory = Path(directory)
    marker = directory / MARKER
    if marker.is_file():
        try:
            return str(json.loads(marker.read_text(encoding="utf-8"))["stage"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
    for stage, layouts in LEGACY_LAYOUTS.items():
        if any(all((directory / name).exists() for name in layout) for layout in layouts):
            return stage
    return None


def _stage_matches(found: str, stage: str) -> bool:
    # Merged and quantized models are both model directories (and look the same before the marker).
    return found == stage or {found, stage} <= {"merge", "quantize"}


# --- checking an output before any work ------------------------------------------------------------


def _destroyed_input(out: Path, inputs: Iterable[str | Path | None]) -> tuple[str, str] | None:
    """(input, "is"/"contains") for the first existing input that `out` equals or contains."""
    real = out.resolve()
    for p in inputs:
        if p is None or str(p) == "" or not Path(p).expanduser().exists():  # a hub id, or nothing to lose
            continue
        src = Path(p).expanduser().resolve()
        if real == src or real in src.parents:
            return str(p), "is" if real == src else "contains"
    return None


def _protected(out: Path) -> str | None:
    cwd, home = Path.cwd().resolve(), Path.home().resolve()
    if out == Path(out.anchor):
        return "the filesystem root"
    if out == cwd or out in cwd.parents:
        return "the working directory" if out == cwd else "a parent of the working directory"
    if out == home or out in home.parents:
        return "your home directory" if out == home else "a parent of your home directory"
    return None


def check_output(out: str | Path, stage: str, *, overwrite: bool, inputs: Iterable[str | Path] = (),
                 what: str = "--out", allow_existing: bool = False) -> Path:
    """Refuse `out` for `stage` when writing it could destroy anything (see the module doc); returns it.

    `inputs`: the paths the stage reads (files or directories); `out` may not equal or contain one.
    `allow_existing`: the caller continues what is there (--resume) and replaces nothing."""
    out = Path(out).expanduser()
    real = out.resolve()
    where = f"{what} {out}"
    reason = _protected(real)
    if reason:
        raise UserError(f"{where} is {reason}; tunesmith writes each output into a directory of its own: "
                        f"give a new one such as {out / 'out'}")
    hit = _destroyed_input(out, inputs)
    if hit:
        raise UserError(f"{where} {hit[1]} the input {hit[0]}; writing it would destroy that input: choose another output")
    if out.exists() and not out.is_dir():
        raise UserError(f"{where} exists and is a file, not a directory; choose another path")
    if allow_existing or not out.is_dir() or not any(out.iterdir()):
        return out
    found = output_stage(out)
    if found is not None and not _stage_matches(found, stage):
        raise UserError(f"{where} holds {STAGE_NAMES.get(found, found)}, not {STAGE_NAMES.get(stage, stage)}; "
                        "--overwrite never replaces another stage's output: choose another output directory")
    if not overwrite:
        resume = "--resume to continue it, " if stage == "train" else ""
        raise UserError(f"{where} already exists and is not empty; pass {resume}--overwrite to replace it, or choose another path")
    if found is None:
        raise UserError(f"{where} holds files tunesmith did not write (no {MARKER} inside); --overwrite replaces only "
                        "tunesmith's own outputs: choose a new directory, or empty this one yourself")
    return out


def check_output_file(out: str | Path, *, overwrite: bool, inputs: Iterable[str | Path] = (),
                      what: str = "--out") -> Path:
    """The same rules for a single output file (score --out, export's .gguf and side files)."""
    out = Path(out).expanduser()
    hit = _destroyed_input(out, inputs)
    if hit:
        raise UserError(f"{what} {out} {hit[1]} the input {hit[0]}; writing it would destroy that input: choose another file")
    if out.is_dir():
        raise UserError(f"{what} {out} is a directory; give a file name inside it")
    if out.exists() and not overwrite:
        raise UserError(f"{out} already exists; pass --overwrite to replace it or choose another {what}")
    return out


# --- stale siblings of killed processes ---------------------------------------------------------------


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def clean_stale(out: Path) -> list[str]:
    """Clean the hidden siblings of `out` that a killed process left (module doc); returns notes."""
    out, notes = Path(out), []
    if not out.parent.is_dir():
        return notes
    for p in sorted(out.parent.iterdir()):
        m = _SIBLING.match(p.name)
        if not m or m["name"] != out.name or (m["hex"] and not m["hex"].startswith(_HOST)) or _alive(int(m["pid"])):
            continue  # not ours, another machine's, or still being written
        if m["tag"] == "tmp":
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        elif not out.exists():
            os.replace(p, out)
            notes.append(f"{out} was restored from {p.name}, left by a process that was killed while replacing it")
        else:
            notes.append(f"{p} holds the output that a killed --overwrite moved aside; delete it once you no longer need it")
    return notes


# --- writing an output ----------------------------------------------------------------------------------


def swap_in(tmp: Path, out: Path) -> None:
    """Rename the finished `tmp` to `out`; an old `out` is moved aside first and deleted after."""
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        if out.is_dir():
            out.rmdir()
        os.replace(tmp, out)
        return
    old = sibling(out, "old")
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)  # put the user's output back
        raise
    shutil.rmtree(old)


@contextmanager
def atomic_dir(out: str | Path, stage: str, *, overwrite: bool, inputs: Iterable[str | Path] = (),
               what: str = "--out") -> Iterator[Path]:
    """Yield a hidden sibling directory to fill; on success it gets the marker and replaces `out`
    (checked again: something may have written there meanwhile), on any error it is removed and
    `out` is untouched."""
    inputs = list(inputs)
    out = check_output(out, stage, overwrite=overwrite, inputs=inputs, what=what)
    out.parent.mkdir(parents=True, exist_ok=True)
    for note in clean_stale(out):
        print(f"tunesmith: {note}", file=sys.stderr)
    tmp = sibling(out, "tmp")
    tmp.mkdir()  # not mkdtemp: that makes it 0700, and the rename would keep those permissions
    try:
        yield tmp
        write_marker(tmp, stage)
        apply_umask(tmp)
        check_output(out, stage, overwrite=overwrite, inputs=inputs, what=what)
        swap_in(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class Claim:
    """A directory being written in place (a training run). `commit()` once the new output is
    complete deletes the old one that was moved aside; `restore()` after a failure puts it back."""

    path: Path
    old: Path | None = None

    def commit(self) -> None:
        if self.old is not None:
            shutil.rmtree(self.old, ignore_errors=True)
            self.old = None

    def restore(self) -> None:
        if self.old is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            os.replace(self.old, self.path)
            self.old = None


def claim_dir(out: str | Path, stage: str, *, overwrite: bool, inputs: Iterable[str | Path] = (),
              what: str = "output_dir", resume: bool = False) -> Claim:
    """Claim `out` to be written in place: checked as `check_output`, an old output moved aside
    (not deleted), the directory created with the marker. With `resume`, what is there is kept."""
    out = check_output(out, stage, overwrite=overwrite, inputs=inputs, what=what, allow_existing=resume)
    out.parent.mkdir(parents=True, exist_ok=True)
    for note in clean_stale(out):
        print(f"tunesmith: {note}", file=sys.stderr)
    old = None
    if not resume and out.is_dir() and any(out.iterdir()):
        old = sibling(out, "old")
        os.replace(out, old)
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, stage)
    return Claim(out, old)

