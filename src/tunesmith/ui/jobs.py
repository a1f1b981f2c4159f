"""Training runs the dashboard launched: `tunesmith train` as a background process, one JSON record
per launch under RUNS/.tunesmith-ui/jobs/ (config, command, pid, log, exit code), so a run's page
knows its process and the table its status, also after the dashboard restarts.

The run directory itself is written only by `tunesmith train` (which refuses a non-empty one
without --resume): the dashboard's files live beside the runs, never inside one.
Stopping sends SIGINT to the run's process group, as Ctrl-C would: train stops between steps,
keeps its checkpoints and metrics, and exits; SIGTERM follows after STOP_GRACE_S, SIGKILL after twice that.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..io import _alive, atomic_write_text

STOP_GRACE_S = 10.0
_procs: dict[str, subprocess.Popen] = {}  # job id -> process, for the ones this server started
_lock = threading.Lock()


def jobs_dir(runs_dir: Path) -> Path:
    return runs_dir / ".tunesmith-ui" / "jobs"


def job_id(name: str) -> str:
    return name.replace("/", "__")


def read_job(runs_dir: Path, name: str) -> dict | None:
    path = jobs_dir(runs_dir) / f"{job_id(name)}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def all_jobs(runs_dir: Path) -> dict[str, dict]:
    out = {}
    root = jobs_dir(runs_dir)
    if root.is_dir():
        for path in sorted(root.glob("*.json")):
            try:
                job = json.loads(path.read_text(encoding="utf-8"))
                out[job["name"]] = job
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return out


def _write(runs_dir: Path, job: dict) -> None:
    root = jobs_dir(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(root / f"{job_id(job['name'])}.json", json.dumps(job, indent=1) + "\n")


def job_status(job: dict) -> tuple[str, str] | None:
    """(status, reason) from the launch record, or None when it cannot tell (the process ended while
    no dashboard watched it: the run's files decide)."""
    rc = job.get("returncode")
    if rc is None:
        if job.get("pid") and _alive(int(job["pid"])) and _is_ours(int(job["pid"]), job):
            return "running", f"process {job['pid']} started from the dashboard"
        return None
    if rc == 0:  # also when Stop came too late to stop it
        return "finished", "tunesmith train exited 0"
    if job.get("stopped"):
        return "interrupted", "stopped from the dashboard; Resume continues from the newest checkpoint"
    last = tail(job, 1)
    return "failed", f"tunesmith train exited {rc}; last log line: {last[0] if last else '(empty)'}"


def _is_ours(pid: int, job: dict) -> bool:
    """A recycled pid is not our run: the process's command line must still be `... train ...`."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc (macOS): trust the pid
    return b"train" in cmd and job.get("config", "").encode() in cmd


def tail(job: dict, lines: int = 40) -> list[str]:
    try:
        text = Path(job["log"]).read_bytes()[-20000:].decode("utf-8", errors="replace")
    except (OSError, KeyError):
        return []
    # tqdm redraws one line with \r; the page wants the latest state of each line
    # (split on "\n" only: str.splitlines would make every redraw a line of its own)
    return [ln.rsplit("\r", 1)[-1] for ln in text.split("\n") if ln.rsplit("\r", 1)[-1].strip()][-lines:]


def start(runs_dir: Path, name: str, config_path: Path, *, resume: bool = False, cwd: Path | None = None) -> dict:
    """Launch `tunesmith train CONFIG [--resume]` in the background; returns its record."""
    root = jobs_dir(runs_dir)
    root.mkdir(parents=True, exist_ok=True)
    log = root / f"{job_id(name)}.log"
    # train_child: `tunesmith train` with Ctrl-C's handler restored, so Stop (SIGINT) works (train_child.py)
    cmd = [sys.executable, "-m", "tunesmith.ui.train_child", "train", str(config_path)] + (["--resume"] if resume else [])
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    with open(log, "ab") as out:
        out.write(f"$ tunesmith {' '.join(cmd[3:])}\n".encode())
        out.flush()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                cwd=str(cwd or runs_dir), start_new_session=True)
    job = {"name": name, "config": str(config_path), "command": ["tunesmith", *cmd[3:]], "cwd": str(cwd or runs_dir), "pid": proc.pid, "started": time.time(),
           "resume": resume, "log": str(log), "returncode": None, "stopped": False}
    _write(runs_dir, job)
    with _lock:
        _procs[job_id(name)] = proc
    threading.Thread(target=_watch, args=(runs_dir, job, proc), daemon=True, name=f"ui-job-{proc.pid}").start()
    return job


def _watch(runs_dir: Path, job: dict, proc: subprocess.Popen) -> None:
    rc = proc.wait()
    latest = read_job(runs_dir, job["name"]) or job
    if latest.get("pid") == proc.pid:  # not replaced by a later launch of the same name
        _write(runs_dir, {**latest, "returncode": rc, "ended": time.time()})
    with _lock:
        _procs.pop(job_id(job["name"]), None)


def stop(runs_dir: Path, name: str) -> dict:
    """SIGINT now; SIGTERM, then SIGKILL, if the process is still there after the grace period."""
    job = read_job(runs_dir, name)
    if job is None or job.get("returncode") is not None or not _alive(int(job["pid"])) or not _is_ours(int(job["pid"]), job):
        raise LookupError(f"run {name} has no process running from this dashboard")
    _write(runs_dir, {**job, "stopped": True})
    pid = int(job["pid"])
    _signal_group(pid, signal.SIGINT)
    threading.Thread(target=_escalate, args=(pid,), daemon=True).start()
    return {**job, "stopped": True}


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # start_new_session: the group id is the train process's pid
    except ProcessLookupError:
        pass


def _escalate(pid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        deadline = time.time() + STOP_GRACE_S
        while time.time() < deadline:
            if not _alive(pid) or _reaped(pid):
                return
            time.sleep(0.2)
        _signal_group(pid, sig)


def _reaped(pid: int) -> bool:
    """Our child has exited (a zombie until waited on still answers `_alive`)."""
    with _lock:
        return any(p.pid == pid and p.poll() is not None for p in _procs.values())
