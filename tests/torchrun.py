"""The shared launcher of the 2-process tests (marked `multiprocess`): `tunesmith train` under torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def torchrun_train(config: Path | None, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cfg = [str(config)] if config is not None else []
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "tunesmith.cli", "train", *cfg, *args],
                          env=env, capture_output=True, text=True, timeout=300)
