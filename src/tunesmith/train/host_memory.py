"""Keep glibc from hoarding the freed activations of a CPU training step.

PyTorch's CPU allocator is plain malloc. glibc serves a large request with mmap (returned to the
system on free) only above its mmap threshold, and that threshold is *dynamic*: each time an
mmap'd block is freed, glibc raises the threshold to that block's size (up to 32 MiB). After the
first backward frees its activations, every later activation of a few MiB (a (B, T, 1536) MLP
tensor at 4 x 512 tokens is 12 MiB) comes from the brk heap instead, interleaved with small
long-lived blocks, and the heap cannot shrink past them: freed memory stays in the process.

Measured on SmolLM2-135M, LoRA r16, 4 x 512 packed tokens, fp32 (bench/README.md, memory
breakdown): the forward's RSS rose 5.26 GB above the loaded model with the dynamic threshold
and 3.19 GB with it pinned, while the tensors saved for backward were the same 2,690 MiB.
Pinning the threshold (any explicit M_MMAP_THRESHOLD turns the dynamic adjustment off) to
glibc's own starting value keeps every block >= 128 KiB an mmap that goes back on free.

The price: each such block is a fresh mapping whose pages are faulted in and zeroed on first touch,
every step. Measured on the same run (bench/step_cpu.py, CPU seconds per step, 1 thread; table in
bench/README.md's speed note): 24.6 s/step of which 7.4 s sys (4.2 M page faults, ~16 GiB of fresh
pages a step) against 18.5 s and 0.4 s sys at a 32 MiB threshold, whose peak is 6.0 GB instead of 3.3.
train/lora_linear.py cut the faults by 39 % (21.8 s, 4.8 s sys, same peak). Measured and not made the
default: torch's THP_MEM_ALLOC_ENABLE=1 (fewer faults, more sys time: no gain); an 8 MiB threshold (17.1 s
but 5.5 GB: no middle ground); jemalloc through LD_PRELOAD with purging off
(MALLOC_CONF=dirty_decay_ms:-1,muzzy_decay_ms:-1): 16.0 s, 0.01 s sys, 3.39 GB, the fastest at this peak,
a choice made when the process starts: `tunesmith train` now re-executes itself under it (or mimalloc)
when it finds one (train/allocator.py), and this pin is what runs without either (or under
TUNESMITH_ALLOCATOR=system, or from the Python API). Setting MALLOC_MMAP_THRESHOLD_ (any value) keeps
glibc's behaviour; a larger value trades peak for speed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_MMAP_THRESHOLD = -3  # glibc malloc.h
DEFAULT_THRESHOLD = 128 * 1024  # glibc's initial value (DEFAULT_MMAP_THRESHOLD_MIN)
ENV = "MALLOC_MMAP_THRESHOLD_"  # glibc's own tunable: when the user set it, their value stands


def pin_mmap_threshold(nbytes: int = DEFAULT_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at `nbytes`; True when it was set. A no-op (False) off Linux, on a
    libc without mallopt (musl), or when MALLOC_MMAP_THRESHOLD_ is already in the environment."""
    if not sys.platform.startswith("linux") or ENV in os.environ:
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, nbytes) == 1
