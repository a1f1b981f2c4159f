"""glibc's dynamic mmap threshold keeps freed activations in the process (train/host_memory.py)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tunesmith.train import host_memory

# A training step in miniature: one big block freed (raises glibc's threshold to its size), then
# 8 MiB "activations" interleaved with small long-lived blocks, then every activation freed.
SCRIPT = textwrap.dedent("""
    import sys, torch
    from tunesmith.train.host_memory import pin_mmap_threshold
    def rss_mb():
        return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
    pinned = pin_mmap_threshold() if sys.argv[1] == "1" else False
    big = torch.ones(16 << 18); del big
    base = rss_mb()
    acts, small = [], []
    for _ in range(32):
        acts.append(torch.ones(8 << 18))      # 8 MiB
        small.append(torch.ones(256))         # 1 KiB, outlives the activations
    del acts
    print(pinned, rss_mb() - base)
""")


def _run(pin: bool) -> tuple[bool, float]:
    env = {k: v for k, v in os.environ.items() if k != host_memory.ENV}
    src = str(Path(host_memory.__file__).resolve().parents[2])  # the src/ this tunesmith came from
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", SCRIPT, "1" if pin else "0"], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    return out[0] == "True", float(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc behaviour")
def test_pinned_threshold_returns_freed_activations():
    _, kept_dynamic = _run(pin=False)
    if kept_dynamic < 128:
        pytest.skip(f"this libc returned the memory without help ({kept_dynamic:.0f} MiB kept): not glibc's dynamic threshold")
    pinned, kept_pinned = _run(pin=True)
    assert pinned
    assert kept_pinned < 32, f"{kept_pinned:.0f} MiB of freed 8 MiB blocks still resident with the threshold pinned"


def test_user_setting_wins(monkeypatch):
    monkeypatch.setenv(host_memory.ENV, "65536")
    assert host_memory.pin_mmap_threshold() is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tunesmith pins the threshold on Linux only")
@pytest.mark.parametrize("value, expected", [(None, "mmap"), ("65536", "mmap"), ("1048576", "mmap"),
                                             ("33554432", "glibc"), ("lots", "glibc")])
def test_estimate_follows_the_threshold_in_force(monkeypatch, value, expected):
    """The estimate's CPU allocator term matches the threshold the run will have: tunesmith's pin, a
    user's small value (RSS follows the live bytes), or a user's large one (the heap keeps freed blocks:
    6.0 GB vs 3.3 GB on SmolLM2 at 32 MiB, bench/README.md). No jemalloc/mimalloc here: none is found
    (the re-exec of train/allocator.py is what test_estimate_follows_the_preloaded_allocator covers)."""
    from tunesmith.estimate.plan import cpu_allocator
    from tunesmith.train import allocator

    monkeypatch.setattr(allocator, "find_library", lambda lib, dirs=None: None)
    if value is None:
        monkeypatch.delenv(host_memory.ENV, raising=False)
    else:
        monkeypatch.setenv(host_memory.ENV, value)
    assert cpu_allocator() == expected


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is Linux-only")
def test_estimate_follows_the_preloaded_allocator(monkeypatch):
    """`tunesmith estimate` predicts the malloc `tunesmith train` will re-exec under (jemalloc when
    found, unless opted out); the run's own estimate (this_process) the malloc it really has."""
    from pathlib import Path

    from tunesmith.estimate.plan import cpu_allocator
    from tunesmith.train import allocator

    found = {"jemalloc": Path("/x/libjemalloc.so.2")}
    monkeypatch.setattr(allocator, "find_library", lambda lib, dirs=None: found.get(lib.name))
    for var in allocator.user_allocator_vars(os.environ) + [allocator.CHOICE_ENV, allocator.ACTIVE_ENV]:
        monkeypatch.delenv(var, raising=False)
    assert cpu_allocator() == "jemalloc"
    assert cpu_allocator(this_process=True) == "mmap"  # this test process runs glibc, pinned by train
    monkeypatch.setenv(allocator.CHOICE_ENV, "system")
    assert cpu_allocator() == "mmap"
    monkeypatch.setattr(allocator, "loaded", lambda maps=None: "mimalloc")
    assert cpu_allocator(this_process=True) == "mimalloc"
