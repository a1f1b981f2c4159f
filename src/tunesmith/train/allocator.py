"""Run `tunesmith train` under a faster malloc: re-exec the process once with LD_PRELOAD.

Why a re-exec: PyTorch's CPU tensors come from malloc, and glibc's malloc either hoards freed
activations (its dynamic mmap threshold: 9.7 GB RSS on SmolLM2 at 4 x 512 tokens) or, with the
threshold pinned (train/host_memory.py), maps and zeroes ~16 GiB of fresh pages every step (a third of
the step's CPU time in the kernel). jemalloc and mimalloc with purging turned off reuse freed blocks
without returning them and without hoarding: the pinned peak at jemalloc's speed (bench/README.md,
"the allocator by default"). A malloc can only be replaced before the process allocates anything, so
the CLI re-executes itself once with the library in LD_PRELOAD; nothing else changes (same pid,
argv, stdin, cwd, environment otherwise; signals and the exit code are the new image's, so torchrun
and accelerate launch, which watch the pid, see no difference).

    TUNESMITH_ALLOCATOR=auto      (default) jemalloc, else tcmalloc, else mimalloc, else glibc, pinned
    TUNESMITH_ALLOCATOR=jemalloc  / tcmalloc / mimalloc: that one, or an error saying how to install it
    TUNESMITH_ALLOCATOR=system    never re-exec (glibc; the pin of train/host_memory.py applies)

A user who set LD_PRELOAD or any allocator variable (MALLOC_*, MIMALLOC_*, TCMALLOC_*, GLIBC_TUNABLES
with a malloc tunable) keeps exactly their setting: no re-exec. The re-executed process sees
ACTIVE_ENV, never re-executes again, and removes the variables it was given (settle()), so its own
children (compile workers, tokenizers, git) start as the user's environment would start them.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ConfigError

CHOICE_ENV = "TUNESMITH_ALLOCATOR"
ACTIVE_ENV = "_TUNESMITH_ALLOCATOR_ACTIVE"  # set only for the re-executed process: "name:path"
CHOICES = ("auto", "jemalloc", "tcmalloc", "mimalloc", "system")
USER_PREFIXES = ("MALLOC_", "MIMALLOC_", "TCMALLOC_", "JE_MALLOC_", "_RJEM_MALLOC_")


@dataclass(frozen=True)
class Library:
    name: str
    files: tuple[str, ...]  # sonames, most specific first
    env: dict[str, str] = field(default_factory=dict)  # its settings: purging off (why: module docstring)
    install: str = ""


# In the order measured best (bench/README.md, "the allocator by default"): jemalloc and tcmalloc are as fast
# and at the pinned peak +3 %, mimalloc as fast at +14 %, and the one a pip install can bring.
LIBRARIES = (
    Library("jemalloc", ("libjemalloc.so.2", "libjemalloc.so.1", "libjemalloc.so"),
            {"MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1"}, "apt install libjemalloc2"),
    # gperftools' tcmalloc: its default release rate already costs no kernel time here; the variable only
    # silences its "large alloc" report (blocks over 1 GiB: a 128k-vocabulary logits chunk).
    Library("tcmalloc", ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4"),
            {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 62)}, "apt install libtcmalloc-minimal4"),
    Library("mimalloc", ("libmimalloc.so.3", "libmimalloc.so.2", "libmimalloc.so"),
            {"MIMALLOC_PURGE_DELAY": "-1"}, "pip install 'tunesmith[fast-alloc]' (the cmeel-mimalloc wheel)"),
)


def search_dirs() -> list[Path]:
    """Where a preloadable library is looked for: the wheel's prefix in each site-packages
    (cmeel-mimalloc puts it in cmeel.prefix/lib), then the system's library directories."""
    sites = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    arch = sysconfig.get_config_var("MULTIARCH") or f"{os.uname().machine}-linux-gnu"
    dirs = [Path(s) / "cmeel.prefix" / "lib" for s in sorted(sites)]
    dirs += [Path(p) for p in (f"/usr/lib/{arch}", f"/lib/{arch}", "/usr/lib64", "/usr/local/lib", "/usr/lib")]
    return dirs


def find_library(lib: Library, dirs: list[Path] | None = None) -> Path | None:
    for d in search_dirs() if dirs is None else dirs:
        for f in lib.files:
            if (d / f).is_file():
                return d / f
    return None


@dataclass(frozen=True)
class Decision:
    env: dict[str, str] | None  # the re-exec's full environment, None when the process stays as it is
    reason: str


def user_allocator_vars(environ: Mapping[str, str]) -> list[str]:
    """The variables by which the user already chose or tuned an allocator."""
    found = [k for k in environ if k == "LD_PRELOAD" or k.startswith(USER_PREFIXES)]
    if "malloc" in environ.get("GLIBC_TUNABLES", ""):
        found.append("GLIBC_TUNABLES")
    return sorted(found)


def decide(environ: Mapping[str, str], platform: str = sys.platform,
           find: Callable[[Library], Path | None] | None = None) -> Decision:
    """Whether `tunesmith train` should re-exec itself, and with which environment. Pure: the
    environment, the platform and the library finder are arguments (tests/unit/test_allocator.py)."""
    choice = environ.get(CHOICE_ENV, "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise ConfigError(f"{CHOICE_ENV}={environ[CHOICE_ENV]!r}: use one of {', '.join(CHOICES)} "
                          "(system keeps glibc's malloc)")
    if ACTIVE_ENV in environ:
        return Decision(None, "already re-executed under a preloaded allocator")
    if choice == "system":
        return Decision(None, f"{CHOICE_ENV}=system")
    if not platform.startswith("linux"):
        return Decision(None, "LD_PRELOAD is Linux-only")
    if user := user_allocator_vars(environ):
        return Decision(None, f"your allocator settings stand ({', '.join(user)})")
    wanted = [lib for lib in LIBRARIES if choice in ("auto", lib.name)]
    find = find_library if find is None else find
    for lib in wanted:
        path = find(lib)
        if path is not None:
            env = {**environ, "LD_PRELOAD": str(path), **lib.env, ACTIVE_ENV: f"{lib.name}:{path}"}
            return Decision(env, f"{lib.name} ({path})")
    if choice != "auto":
        lib = wanted[0]
        raise ConfigError(f"{CHOICE_ENV}={choice} but no {' / '.join(lib.files)} was found; {lib.install}, "
                          f"or set {CHOICE_ENV}=auto (or system) to train with glibc's malloc")
    return Decision(None, "no jemalloc, tcmalloc or mimalloc found (apt install libjemalloc2, or "
                          "pip install 'tunesmith[fast-alloc]'): glibc with its mmap threshold pinned")


def own_command_line() -> bool:
    """True when this process's command line is the one main() parses: the re-exec repeats
    sys.orig_argv, which must not be some other program that called main() (a test, a notebook)."""
    tail = sys.argv[1:]
    return len(sys.orig_argv) >= len(sys.argv) and sys.orig_argv[len(sys.orig_argv) - len(tail):] == tail


def reexec(decision: Decision, argv: list[str] | None = None) -> None:
    """Replace this process by the same command under `decision.env` (does not return)."""
    argv = list(sys.orig_argv if argv is None else argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv[1:]], decision.env)


def at_start(wants_reexec: bool, environ: dict[str, str] | os._Environ = os.environ,
             find: Callable[[Library], Path | None] | None = None) -> None:
    """The CLI's first step: in the re-executed process, settle() and never decide again (its
    environment no longer shows the re-exec once settled); elsewhere re-exec when decide() says so."""
    if ACTIVE_ENV in environ:
        settle(environ)
    elif wants_reexec:
        decision = decide(environ, find=find)
        if decision.env is not None:
            try:
                reexec(decision)
            except OSError as e:  # no executable to exec (an embedded interpreter): train as we are
                print(f"note: malloc: could not re-execute under {decision.reason} ({e}); glibc's stands",
                      file=sys.stderr)


def settle(environ: dict[str, str] | os._Environ = os.environ) -> str | None:
    """In the re-executed process: the preloaded allocator's name when it really is loaded, and the
    variables the re-exec added removed from `environ` (children start with the user's environment)."""
    active = environ.pop(ACTIVE_ENV, None)
    if active is None:
        return None
    name = active.split(":", 1)[0]
    environ.pop("LD_PRELOAD", None)
    for lib in LIBRARIES:
        if lib.name == name:
            for key in lib.env:
                environ.pop(key, None)
    return name if loaded() == name else None


def loaded(maps: str | None = None) -> str | None:
    """The malloc replacement mapped into this process (jemalloc, tcmalloc, mimalloc), from
    /proc/self/maps; None for the libc's own (or off Linux)."""
    if maps is None:
        try:
            maps = Path("/proc/self/maps").read_text()
        except OSError:
            return None
    for name in ("jemalloc", "mimalloc", "tcmalloc"):
        if f"/lib{name}" in maps:
            return name
    return None
