"""`tunesmith train` re-executes itself once under jemalloc/mimalloc (train/allocator.py): when, with
what, and that the re-executed command behaves as the plain one (exit code, argv, stdin, results)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tunesmith.errors import ConfigError
from tunesmith.train import allocator

JE = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
MI = Path("/site/cmeel.prefix/lib/libmimalloc.so.3")
TC = Path("/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4")


def finder(*present: str):
    """A library finder that knows only the named libraries."""
    paths = {"jemalloc": JE, "mimalloc": MI, "tcmalloc": TC}
    return lambda lib: paths[lib.name] if lib.name in present else None


def decide(env: dict, *present: str, platform: str = "linux"):
    return allocator.decide(env, platform, finder(*present))


def test_auto_prefers_jemalloc_with_purging_off():
    d = decide({"PATH": "/bin"}, "jemalloc", "mimalloc")
    assert d.env == {"PATH": "/bin", "LD_PRELOAD": str(JE), "MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1",
                     allocator.ACTIVE_ENV: f"jemalloc:{JE}"}


def test_auto_falls_back_to_tcmalloc_then_mimalloc_then_glibc():
    d = decide({}, "tcmalloc", "mimalloc")
    assert d.env["LD_PRELOAD"] == str(TC) and d.env[allocator.ACTIVE_ENV] == f"tcmalloc:{TC}"
    d = decide({}, "mimalloc")
    assert d.env == {"LD_PRELOAD": str(MI), "MIMALLOC_PURGE_DELAY": "-1", allocator.ACTIVE_ENV: f"mimalloc:{MI}"}
    none = decide({})
    assert none.env is None and "glibc" in none.reason and "libjemalloc2" in none.reason


@pytest.mark.parametrize("var", ["LD_PRELOAD", "MALLOC_CONF", "MALLOC_MMAP_THRESHOLD_", "MALLOC_ARENA_MAX",
                                 "MIMALLOC_PURGE_DELAY", "TCMALLOC_RELEASE_RATE"])
def test_the_users_allocator_settings_stand(var):
    d = decide({var: "1"}, "jemalloc", "mimalloc")
    assert d.env is None and var in d.reason


def test_glibc_tunables_count_only_when_they_tune_malloc():
    assert decide({"GLIBC_TUNABLES": "glibc.malloc.hugetlb=1"}, "jemalloc").env is None
    assert decide({"GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX512F"}, "jemalloc").env is not None


def test_never_twice():
    d = decide({allocator.ACTIVE_ENV: f"jemalloc:{JE}"}, "jemalloc")
    assert d.env is None and "already" in d.reason


def test_at_start_reexecs_once(monkeypatch):
    """The re-executed process settles its environment and must not decide again: once settled,
    its environment looks like the user's, and deciding then would re-exec forever."""
    calls = []
    monkeypatch.setattr(allocator, "reexec", lambda d: calls.append(d.env))
    env = {"PATH": "/bin"}
    allocator.at_start(True, env, finder("jemalloc"))
    assert len(calls) == 1 and calls[0]["LD_PRELOAD"] == str(JE)
    again = dict(calls[0])
    allocator.at_start(True, again, finder("jemalloc"))
    assert len(calls) == 1 and again == {"PATH": "/bin"}
    allocator.at_start(False, {"PATH": "/bin"}, finder("jemalloc"))  # not `train` from a command line
    assert len(calls) == 1


@pytest.mark.parametrize("value", ["system", "SYSTEM", " system "])
def test_opt_out(value):
    d = decide({allocator.CHOICE_ENV: value}, "jemalloc", "mimalloc")
    assert d.env is None


def test_off_linux_nothing_happens():
    assert decide({}, "jemalloc", platform="darwin").env is None


def test_explicit_choice_picks_that_library():
    d = decide({allocator.CHOICE_ENV: "mimalloc"}, "jemalloc", "mimalloc")
    assert d.env["LD_PRELOAD"] == str(MI)


def test_explicit_choice_missing_is_an_error_naming_the_fix():
    with pytest.raises(ConfigError, match=r"TUNESMITH_ALLOCATOR=jemalloc .*apt install libjemalloc2"):
        decide({allocator.CHOICE_ENV: "jemalloc"}, "mimalloc")
    with pytest.raises(ConfigError, match=r"TUNESMITH_ALLOCATOR='hoard': use one of auto, jemalloc, tcmalloc, mimalloc, system"):
        decide({allocator.CHOICE_ENV: "hoard"}, "jemalloc")


def test_find_library_looks_in_the_wheel_prefix_and_system_dirs(tmp_path):
    lib = next(lib for lib in allocator.LIBRARIES if lib.name == "mimalloc")
    (tmp_path / "b").mkdir()
    assert allocator.find_library(lib, [tmp_path / "a", tmp_path / "b"]) is None
    (tmp_path / "b" / "libmimalloc.so.3").write_bytes(b"")
    assert allocator.find_library(lib, [tmp_path / "a", tmp_path / "b"]) == tmp_path / "b" / "libmimalloc.so.3"
    assert any(d.parts[-2:] == ("cmeel.prefix", "lib") for d in allocator.search_dirs())


def test_settle_restores_the_users_environment():
    env = {"PATH": "/bin", "LD_PRELOAD": str(JE), "MALLOC_CONF": "dirty_decay_ms:-1,muzzy_decay_ms:-1",
           allocator.ACTIVE_ENV: f"jemalloc:{JE}"}
    allocator.settle(env)  # this test process has no jemalloc loaded: the name comes back None
    assert env == {"PATH": "/bin"}
    untouched = {"LD_PRELOAD": "/mine.so", "MALLOC_CONF": "x"}
    assert allocator.settle(untouched) is None and untouched == {"LD_PRELOAD": "/mine.so", "MALLOC_CONF": "x"}


def test_loaded_reads_the_maps():
    assert allocator.loaded(f"7f00-7f01 r-xp 0 08:01 1 {JE}\n") == "jemalloc"
    assert allocator.loaded("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libc.so.6\n") is None


# --- the re-exec itself, in a subprocess ----------------------------------------------------------------

PROBE = """
import json, os, sys
from tunesmith.train import allocator
allocator.at_start(sys.argv[1:2] == ["reexec"], find=lambda lib: {lib_path!r} if lib.name == "jemalloc" else None)
print(json.dumps({{"argv": sys.argv[1:], "stdin": sys.stdin.read(), "loaded": allocator.loaded(),
                  "preload": os.environ.get("LD_PRELOAD"), "pid": os.getpid()}}))
sys.exit(int(sys.argv[2]))
"""


@pytest.mark.skipif(not JE.is_file(), reason="needs libjemalloc2 (apt install libjemalloc2)")
def test_reexec_keeps_argv_stdin_pid_and_exit_code(tmp_path):
    script = tmp_path / "probe.py"
    script.write_text(PROBE.format(lib_path=str(JE)))
    src = str(Path(allocator.__file__).resolve().parents[2])
    env = {k: v for k, v in os.environ.items() if k not in allocator.user_allocator_vars(os.environ)}
    env |= {"PYTHONPATH": src, allocator.CHOICE_ENV: "auto"}
    proc = subprocess.run([sys.executable, str(script), "reexec", "3", "two words"], input="from stdin", env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    out = json.loads(proc.stdout)
    assert out["argv"] == ["reexec", "3", "two words"] and out["stdin"] == "from stdin"
    assert out["loaded"] == "jemalloc"  # the new image runs under jemalloc...
    assert out["preload"] is None  # ...and its children would not inherit it


@pytest.mark.skipif(not JE.is_file(), reason="needs libjemalloc2 (apt install libjemalloc2)")
def test_cli_train_under_jemalloc_equals_glibc(make_tiny_config):
    """The same tiny run through `python -m tunesmith.cli train`, re-executed (default) and not
    (TUNESMITH_ALLOCATOR=system): exit 0, the note only in the first, the same losses."""
    src = str(Path(allocator.__file__).resolve().parents[2])
    env = {k: v for k, v in os.environ.items() if k not in allocator.user_allocator_vars(os.environ)}
    env |= {"PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
    results = {}
    for choice in ("auto", "system"):
        config, run_dir = make_tiny_config(choice)
        proc = subprocess.run([sys.executable, "-m", "tunesmith.cli", "train", str(config)],
                              env=env | {allocator.CHOICE_ENV: choice}, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[choice] = ([json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
                            if "loss" in json.loads(line)], proc.stderr)
    assert "note: malloc: jemalloc" in results["auto"][1]
    assert "note: malloc" not in results["system"][1]
    assert results["auto"][0] == pytest.approx(results["system"][0], rel=1e-6)
    assert len(results["auto"][0]) == 3


@pytest.mark.multiprocess
@pytest.mark.skipif(not JE.is_file(), reason="needs libjemalloc2 (apt install libjemalloc2)")
def test_torchrun_ranks_reexec_and_finish(make_tiny_config, monkeypatch):
    """Under torchrun each rank is `python -m tunesmith.cli train` and re-executes itself in place
    (same pid, which the elastic agent watches): the run finishes, rank 0 says jemalloc, and the
    metrics hold the 3 steps once."""
    from torchrun import torchrun_train

    for var in allocator.user_allocator_vars(os.environ) + [allocator.CHOICE_ENV]:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PYTHONPATH", str(Path(allocator.__file__).resolve().parents[2]))
    config, run_dir = make_tiny_config("ddp")
    proc = torchrun_train(config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "note: malloc: jemalloc" in proc.stderr
    assert [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


@pytest.fixture
def make_tiny_config(tmp_path, tiny_dir, alpaca64):
    import yaml

    def make(name: str):
        cfg = {"model": {"path": str(tiny_dir), "dtype": "fp32"},
               "data": {"train": [str(alpaca64)], "format": "alpaca", "max_length": 128},
               "adapter": {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0},
               "train": {"precision": "fp32", "max_steps": 3, "micro_batch_size": 4, "save_every": 0,
                         "progress": False, "seed": 0},
               "output_dir": str(tmp_path / name)}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        return path, tmp_path / name

    return make


def test_only_the_own_command_line_reexecs(monkeypatch):
    """main() called by another program (pytest here, a notebook) must not re-run that program."""
    monkeypatch.setattr(sys, "orig_argv", ["/venv/bin/python", "/venv/bin/tunesmith", "train", "run.yaml"])
    monkeypatch.setattr(sys, "argv", ["/venv/bin/tunesmith", "train", "run.yaml"])
    assert allocator.own_command_line()
    monkeypatch.setattr(sys, "orig_argv", ["/venv/bin/python", "-m", "tunesmith.cli", "train", "run.yaml"])
    monkeypatch.setattr(sys, "argv", ["/src/tunesmith/cli.py", "train", "run.yaml"])
    assert allocator.own_command_line()
    monkeypatch.setattr(sys, "orig_argv", ["/venv/bin/python", "-m", "pytest", "tests"])
    assert not allocator.own_command_line()


def test_a_failed_exec_trains_on(monkeypatch, capsys):
    def fail(decision):
        raise FileNotFoundError("no such interpreter")

    monkeypatch.setattr(allocator, "reexec", fail)
    allocator.at_start(True, {"PATH": "/bin"}, finder("jemalloc"))
    assert "could not re-execute under jemalloc" in capsys.readouterr().err
