"""What the Data/Eval/Playground routers share: paths confined to --runs and the working directory,
the pickers' bounded scan, the source cache, and the serve options of `tunesmith ui`."""

from __future__ import annotations


import pytest

pytest.importorskip("fastapi")

from tunesmith.errors import UserError  # noqa: E402
from tunesmith.ui.views_common import SCAN_DEPTH, Cache, scan, user_path  # noqa: E402


def test_paths_are_confined_to_runs_and_cwd(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    (runs / "a").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "runs")
    assert user_path("a", runs) == (runs / "a").resolve()
    assert user_path(str(runs / "a"), runs) == (runs / "a").resolve()
    for outside in ("../elsewhere", "/etc/passwd", str(tmp_path)):
        with pytest.raises(UserError, match="outside --runs"):
            user_path(outside, runs)
    monkeypatch.chdir(tmp_path)  # the working directory is the other allowed root
    assert user_path(str(tmp_path / "data"), runs) == (tmp_path / "data").resolve()
    with pytest.raises(UserError, match="no path given"):
        user_path("  ", runs)


def test_scan_finds_marked_directories_within_its_depth(tmp_path):
    for rel in ("e1", "group/e2", "group/e2/nested", "a/b/c/too-deep", ".hidden/e3", "r/checkpoints/e4"):
        (tmp_path / rel).mkdir(parents=True)
        (tmp_path / rel / "results.json").write_text("{}")
    found = scan(tmp_path, lambda p: (p / "results.json").is_file())
    assert found == ["e1", "group/e2"] and SCAN_DEPTH == 3  # a/b/c/too-deep is 4 levels down


def test_cache_reuses_and_evicts_the_oldest():
    made = []
    cache = Cache(size=2)
    make = lambda k: lambda: made.append(k) or k  # noqa: E731
    for k in ("a", "b", "a", "c", "b"):
        cache.get(k, make(k))
    assert made == ["a", "b", "c", "b"]  # a reused; b evicted by c (a was used more recently)


def test_ui_settings_never_show_the_serve_key(tmp_path):
    from tunesmith.ui import create_app

    app = create_app(tmp_path, serve_url="http://127.0.0.1:1", serve_key="sk-hidden")
    assert app.state.ui.serve_key == "sk-hidden" and "sk-hidden" not in repr(app.state.ui)


def test_bad_serve_url_stops_tunesmith_ui_before_it_listens(tmp_path):
    from tunesmith.ui.launch import run_ui

    with pytest.raises(UserError, match="--serve-url"):
        run_ui(tmp_path, port=7861, serve_url="127.0.0.1:8000")  # no scheme


def test_cli_passes_the_serve_options(monkeypatch):
    from tunesmith import api, cli

    got = {}
    monkeypatch.setattr(api, "ui", lambda runs, **kw: got.update(kw) or 0)
    monkeypatch.setenv("TUNESMITH_API_KEY", "sk-env")
    assert cli.main(["ui", "--runs", "r", "--serve-url", "http://127.0.0.1:9000"]) == 0
    assert got["serve_url"] == "http://127.0.0.1:9000"
    assert got["serve_key"] == "sk-env"  # serve's own variable, read when the parser is built
    assert cli.main(["ui", "--serve-key", "sk-flag"]) == 0 and got["serve_key"] == "sk-flag"
    assert cli.main(["ui"]) == 0 and got["serve_url"] == "http://127.0.0.1:8000"
