"""Run untrusted generated code (pass@k) in a child process that cannot hurt the machine.

Layers, each enough against an accident and together a fair bar against a model's code:
- a fresh `python -I` (isolated: no user site, no PYTHON* env) in an empty temp directory,
  with an empty environment except PATH, and proxies pointed at a closed port;
- `resource` limits set in the child before exec: CPU seconds (RLIMIT_CPU, the kernel sends
  SIGKILL past the hard limit), address space (RLIMIT_AS), file size, no core dumps, its own process
  group so a wall-clock timeout kills every process it started;
- no network: the child runs in a new network namespace with only a down loopback (`unshare -rn`)
  when the kernel allows it; everywhere (and also inside the namespace) a preamble replaces
  `socket.socket`, `socket.create_connection` and `socket.getaddrinfo` with functions that raise,
  and hides `_socket`;
- HumanEval's `reliability_guard`: process, file-removal and permission functions of `os`,
  `shutil` and `subprocess` are set to None, `ctypes`/`multiprocessing`/`resource` cannot be imported
  (so no fork to escape the process-group kill, no deleting the user's files by path).
Together that is HumanEval's own `execution.py` (resource limits + disabled functions) plus the
namespace. It is not a security boundary against a determined attacker: run untrusted models'
code in a container as well.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache

_PREAMBLE = '''
import socket as _s
def _blocked(*a, **k):
    raise OSError("network access is disabled in the tunesmith sandbox")
class _NoSocket(_s.socket):
    def __init__(self, *a, **k):
        _blocked()
_s.socket = _NoSocket
_s.create_connection = _blocked
_s.getaddrinfo = _blocked
_s.socketpair = _blocked
del _s, _NoSocket
import sys as _sys
_sys.modules["_socket"] = None  # `import _socket` would reach the unpatched C module
# HumanEval's reliability_guard: what generated code has no business calling.
import builtins as _b, os as _os, shutil as _sh, subprocess as _sp
for _name in ("kill", "killpg", "system", "putenv", "remove", "removedirs", "rmdir", "fchdir", "setuid", "fork",
              "forkpty", "rename", "renames", "truncate", "replace", "unlink", "fchmod", "fchown", "chmod", "chown",
              "chroot", "lchown", "lchflags", "chflags", "execv", "execve", "execvp", "spawnv", "spawnve", "posix_spawn",
              "posix_spawnp", "setsid", "setpgrp"):
    if hasattr(_os, _name):
        setattr(_os, _name, None)
_sh.rmtree = _sh.move = _sh.chown = None
_sp.Popen = _sp.run = _sp.call = _sp.check_output = _sp.check_call = None
_b.exit = _b.quit = None
for _m in ("ipdb", "joblib", "resource", "psutil", "tkinter", "ctypes", "_ctypes", "multiprocessing"):
    _sys.modules[_m] = None
del _b, _os, _sh, _sp, _sys, _name, _m
'''


@dataclass
class Outcome:
    passed: bool
    status: str  # passed | failed | timeout | error
    detail: str
    seconds: float


@lru_cache(maxsize=1)
def _can_unshare() -> bool:
    exe = shutil.which("unshare")
    if not exe:
        return False
    try:
        return subprocess.run([exe, "-rn", "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def _limits(cpu_s: int, memory_mb: int):
    def apply() -> None:
        os.setsid()
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_s, cpu_s + 1))
        mem = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024 * 1024,) * 2)
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def run_program(program: str, timeout_s: float = 10.0, memory_mb: int = 1024, network_namespace: bool = True) -> Outcome:
    """Run `program` (Python source); passed when it exits 0 within the limits."""
    with tempfile.TemporaryDirectory(prefix="tunesmith-sandbox-") as tmp:
        path = os.path.join(tmp, "prog.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(_PREAMBLE + "\n" + program)
        cmd = [sys.executable, "-I", "-B", path]
        if network_namespace and _can_unshare():
            cmd = [shutil.which("unshare") or "unshare", "-rn"] + cmd
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp, "http_proxy": "http://127.0.0.1:9",
               "https_proxy": "http://127.0.0.1:9", "no_proxy": "", "PYTHONHASHSEED": "0"}
        start = time.monotonic()
        # stderr goes to a file (bounded by RLIMIT_FSIZE), not a pipe this process would have to hold.
        with open(os.path.join(tmp, "stderr.txt"), "wb") as err_file:
            proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=err_file, preexec_fn=_limits(int(timeout_s) + 1, memory_mb))
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return Outcome(False, "timeout", f"killed after {timeout_s:g} s wall clock", time.monotonic() - start)
        seconds = time.monotonic() - start
        with open(os.path.join(tmp, "stderr.txt"), "rb") as f:
            f.seek(max(0, os.path.getsize(f.name) - 4096))
            err = f.read()
    tail = err.decode("utf-8", "replace").strip().splitlines()[-3:]
    if proc.returncode == 0:
        return Outcome(True, "passed", "", seconds)
    if proc.returncode in (-signal.SIGKILL, -signal.SIGXCPU):
        return Outcome(False, "timeout", f"killed by the CPU limit ({timeout_s:g} s)", seconds)
    return Outcome(False, "failed", " | ".join(tail)[-500:], seconds)
