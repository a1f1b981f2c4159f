"""Device classes the estimate is checked against: memory capacity and peak matmul throughput.

GPU capacities are what the allocator can hand out (GiB); throughput is the dense tensor-core peak
from the vendor's data sheet (bf16/fp16 with fp32 accumulation; TF32 for fp32 compute). The CPU
row is this machine: its RAM (os.sysconf) and its fp32 matmul bound, measured on this machine's
2 cores in issue 17 (~215-240 GFLOP/s; 230 used) and overridable with --cpu-gflops.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..errors import ConfigError

GIB = 2**30
CPU_GFLOPS = 230.0
# The process before the model, counted as the "framework" term. GPU: the CUDA context, cuBLAS
# workspaces and the caching allocator's slack (outside torch's allocator peak). CPU: the RSS of
# Python with torch 2.13, transformers 5.24, peft, accelerate, bitsandbytes and tunesmith imported,
# measured on this machine (448,600 KiB; bench/estimate_accuracy.py re-measures it per run).
GPU_OVERHEAD = int(1.0 * GIB)
CPU_OVERHEAD = 448_600 * 1024


@dataclass(frozen=True)
class Device:
    name: str
    kind: str  # gpu | cpu
    capacity: int  # bytes
    tflops_bf16: float
    tflops_fp32: float

    def peak_flops(self, precision: str) -> float:
        return 1e12 * (self.tflops_fp32 if precision == "fp32" else self.tflops_bf16)


GPUS = {
    "RTX4090-24GB": Device("RTX4090-24GB", "gpu", 24 * GIB, 165.2, 82.6),
    "L4-24GB": Device("L4-24GB", "gpu", 24 * GIB, 121.0, 60.0),
    "A100-40GB": Device("A100-40GB", "gpu", 40 * GIB, 312.0, 156.0),
    "A6000-48GB": Device("A6000-48GB", "gpu", 48 * GIB, 154.8, 77.4),
    "L40S-48GB": Device("L40S-48GB", "gpu", 48 * GIB, 362.0, 183.0),
    "A100-80GB": Device("A100-80GB", "gpu", 80 * GIB, 312.0, 156.0),
    "H100-80GB": Device("H100-80GB", "gpu", 80 * GIB, 989.0, 494.0),
    "H200-141GB": Device("H200-141GB", "gpu", 140 * GIB, 989.0, 494.0),
}
# The classes every estimate reports on (one per memory size) and the default GPU for --device gpu.
LISTED = ("RTX4090-24GB", "A100-40GB", "L40S-48GB", "A100-80GB", "H100-80GB", "H200-141GB")


def cpu_threads() -> int:
    """The intra-op threads torch uses here (OMP_NUM_THREADS / torch.set_num_threads), as a run started
    from this environment would."""
    import torch

    return torch.get_num_threads()


def this_cpu(gflops: float = CPU_GFLOPS, threads: int | None = None) -> Device:
    """This machine. `gflops` is the bound of all its cores; a run on fewer `threads` (OMP_NUM_THREADS=1,
    as the RL benches run) gets that share of it."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if threads is not None and 0 < threads < cores:
        gflops = gflops * threads / cores
        return Device(f"this-cpu ({threads} of {cores} cores)", "cpu", ram, gflops / 1e3, gflops / 1e3)
    return Device("this-cpu", "cpu", ram, gflops / 1e3, gflops / 1e3)


def find_device(name: str, cpu_gflops: float = CPU_GFLOPS, cpu_threads: int | None = None) -> Device:
    if name.lower() in ("cpu", "this-cpu"):
        return this_cpu(cpu_gflops, cpu_threads)
    key = {k.lower(): k for k in GPUS}.get(name.lower())
    if key is None:
        # Accept a prefix such as "A100" or "h100" when it names one class.
        hits = [k for k in GPUS if k.lower().startswith(name.lower())]
        if len(hits) != 1:
            raise ConfigError(f"--device {name!r}: known devices are cpu, {', '.join(GPUS)}")
        key = hits[0]
    return GPUS[key]
