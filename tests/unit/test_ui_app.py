"""The dashboard's rules over HTTP (FastAPI's TestClient, no browser): who may connect, what may be
written, the start-a-run form's errors beside their fields, report.md rendered without a run's markup."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from ui_runs import write_run  # noqa: E402

from tunesmith.errors import UserError  # noqa: E402
from tunesmith.ui import create_app  # noqa: E402
from tunesmith.ui.form import field_for, form_to_config, validate  # noqa: E402
from tunesmith.ui.launch import check_options  # noqa: E402
from tunesmith.ui.report import render_markdown  # noqa: E402

WRITE = {"X-Tunesmith-UI": "1"}


def client(runs: Path, **kw) -> TestClient:
    return TestClient(create_app(runs, **kw), base_url="http://127.0.0.1:7860")


def test_any_other_host_needs_a_token():
    with pytest.raises(UserError, match=r"--host 0.0.0.0 makes the dashboard reachable from other machines; set --token"):
        check_options("runs", "0.0.0.0", 7860, None)
    with pytest.raises(UserError, match="--host example.org"):
        check_options("runs", "example.org", 7860, "")
    check_options("runs", "0.0.0.0", 7860, "s3cret-token")
    for host in ("127.0.0.1", "localhost", "::1"):
        check_options("runs", host, 7860, None)
    for bad in ("short", "has space in it", "semi;colon-token", "plus+sign+token"):
        with pytest.raises(UserError, match="--token: use at least 8 letters"):
            check_options("runs", "0.0.0.0", 7860, bad)
    with pytest.raises(UserError, match="--port must be between 1 and 65535"):
        check_options("runs", "127.0.0.1", 0, None)


def test_cli_refuses_a_public_bind_without_a_token(capsys, monkeypatch):
    from tunesmith.cli import main

    monkeypatch.delenv("TUNESMITH_UI_TOKEN", raising=False)
    assert main(["ui", "--host", "0.0.0.0", "--runs", "runs"]) == 2
    assert "tunesmith ui: error: --host 0.0.0.0 makes the dashboard reachable" in capsys.readouterr().err


def test_token_is_required_and_the_url_token_becomes_a_cookie(tmp_path):
    c = client(tmp_path, token="s3cret", loopback=False)
    assert c.get("/api/runs").status_code == 401
    assert "needs its token" in c.get("/api/runs").json()["error"]
    assert c.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert c.get("/api/runs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    first = c.get("/?token=s3cret")
    assert first.status_code == 200 and "HttpOnly" in first.headers["set-cookie"]
    assert c.get("/api/runs").status_code == 200  # the cookie from the URL carries on


def test_loopback_app_answers_only_to_local_host_names(tmp_path):
    c = client(tmp_path)
    assert c.get("/api/runs").status_code == 200
    assert c.get("/api/runs", headers={"Host": "localhost:7860"}).status_code == 200
    r = c.get("/api/runs", headers={"Host": "attacker.example:7860"})  # DNS rebinding to 127.0.0.1
    assert r.status_code == 403 and "only requests to localhost" in r.json()["error"]


def test_writes_need_the_pages_header_and_allow_train(tmp_path):
    c = client(tmp_path)
    r = c.post("/api/start", json={"name": "x"})
    assert r.status_code == 403 and "X-Tunesmith-UI" in r.json()["error"]
    r = c.post("/api/start", json={"name": "x"}, headers=WRITE)
    assert r.status_code == 403 and "--allow-train" in r.json()["error"]
    for path in ("/api/stop/x", "/api/resume/x"):
        assert "--allow-train" in c.post(path, headers=WRITE).json()["error"]
    assert not (tmp_path / "x").exists() and not (tmp_path / ".tunesmith-ui").exists()


def test_form_errors_land_beside_their_field(tmp_path):
    data = tmp_path / "rows.jsonl"
    data.write_text('{"text": "hi"}\n')
    c = client(tmp_path / "runs", allow_train=True)
    write_run(tmp_path / "runs", "taken", full_report=False)
    values = {"name": "taken", "model.path": "/m", "train.lr": "fast", "train.warmup_steps": "2",
              "adapter.type": "ia3", "adapter.r": "8", "data.train": f"{data}\nmissing.jsonl",
              "extra_yaml": "train:\n  warmup_ratio: 0.1\n  bogus: 1\n"}
    errors = c.post("/api/validate", json=values, headers=WRITE).json()["errors"]
    assert "already exists" in errors["name"]
    assert errors["train.lr"].startswith("`train.lr` = 'fast': Input should be a valid number")
    assert errors["adapter.r"] == "`adapter`: `adapter.r` applies to adapter.type lora / dora, not ia3; remove it"
    assert "no such file: missing.jsonl" in errors["data.train"]
    assert "`train.bogus` is not a config key" in errors["extra_yaml"]
    r = c.post("/api/start", json=values, headers=WRITE)
    assert r.status_code == 422 and r.json()["errors"] == errors
    assert not (tmp_path / "runs" / ".tunesmith-ui").exists()  # nothing written, nothing launched


def test_cross_field_errors_go_to_the_key_they_name():
    raw, errors = form_to_config({"model.path": "/m", "train.warmup_steps": "3", "extra_yaml": "train: {warmup_ratio: 0.1}"}, "/r/x")
    assert errors == {}
    assert validate(raw)[1] == {"train.warmup_steps": "`train`: `train.warmup_steps` and `train.warmup_ratio` are exclusive; set one"}
    assert field_for("", "something about the whole config") == "_form"
    assert field_for("preference.beta", "`preference.beta` = -1: ...") == "extra_yaml"


def test_defaults_are_not_written_and_the_yaml_box_is_checked():
    raw, errors = form_to_config({"model.path": "/m", "train.lr": "0.0002", "adapter.r": "16", "data.packing": False,
                                  "train.max_steps": "5", "data.train": "a.jsonl, b.jsonl"}, "/r/x")
    assert raw == {"model": {"path": "/m"}, "train": {"max_steps": 5}, "data": {"train": ["a.jsonl", "b.jsonl"]}, "output_dir": "/r/x"}
    assert validate(raw)[0].train.max_steps == 5
    _, errors = form_to_config({"model.path": "/m", "extra_yaml": "train: [unclosed"}, "/r/x")
    assert errors["extra_yaml"].startswith("not valid YAML")
    _, errors = form_to_config({"model.path": "/m", "extra_yaml": "output_dir: /elsewhere"}, "/r/x")
    assert "set by the run name" in errors["extra_yaml"]


def test_report_markup_from_a_run_is_shown_as_text():
    html = render_markdown('# Run <script>alert(1)</script>\n\n<img src=x onerror=alert(1)>\n\n'
                           '![loss](loss.png) [a](javascript:alert(1)) [b](/etc/passwd) [c](https://example.org)\n', "/api/run-file/r?file=")
    assert "<script>" not in html and "<img src=x" not in html and "&lt;script&gt;" in html
    assert '<img src="/api/run-file/r?file=loss.png" alt="loss" />' in html
    assert 'href="javascript' not in html and "<a>b</a>" in html
    assert '<a href="https://example.org" rel="noopener noreferrer">c</a>' in html


def test_run_files_are_only_images_inside_the_run(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "r")
    (tmp_path / "secret.png").write_bytes(b"\x89PNG not yours")
    c = client(runs)
    ok = c.get("/api/run-file/r?file=loss.png")
    assert ok.status_code == 200 and ok.headers["content-type"] == "image/png" and ok.content.startswith(b"\x89PNG")
    for f in ("config.yaml", "../../secret.png", "/etc/passwd", "metrics.jsonl"):
        assert c.get("/api/run-file/r", params={"file": f}).status_code == 404, f


def test_api_lists_runs_and_compares_two(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "a", full_report=False)
    write_run(runs, "b", lr=5e-4, full_report=False)
    c = client(runs)
    assert [r["name"] for r in c.get("/api/runs").json()["runs"]] == ["a", "b"]
    r = c.get("/api/compare", params={"runs": ["a", "b"]}).json()
    assert r["config_diff"] == [{"key": "train.lr", "values": [1e-3, 5e-4]}]
    assert len(r["runs"][0]["records"]) == 20
    assert "2 to 5 different runs, got 1" in c.get("/api/compare", params={"runs": ["a", "a"]}).json()["error"]
    assert c.get("/api/compare", params={"runs": ["a", "zzz"]}).status_code == 404
    m = c.get("/api/run-metrics/a", params={"after": 15}).json()
    assert [x["step"] for x in m["records"]] == [16, 17, 18, 19, 20]
    assert c.get("/api/run-metrics/a", params={"after": 25}).json()["restart"]  # cut back by a resume


def test_every_static_file_ships_in_the_package_and_every_reference_exists():
    """A page that loads /static/X needs X in static/, and the wheel needs every file in static/
    (pyproject's package-data globs; setuptools takes nothing else)."""
    import fnmatch
    import re
    import tomllib

    import tunesmith.ui.layout as layout

    pkg = Path(layout.__file__).parents[1]  # src/tunesmith
    root = pkg.parents[1]
    globs = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["tunesmith"]
    files = [p.relative_to(pkg).as_posix() for p in (pkg / "ui" / "static").rglob("*") if p.is_file()]
    assert files and not [f for f in files if not any(fnmatch.fnmatch(f, g) and f.count("/") == g.count("/") for g in globs)]
    html = [layout.STATIC / "layout.html", *(layout.STATIC / "pages").glob("*.html")]
    refs = {m for page in html for m in re.findall(r'(?:src|href)="/static/([^"]+)"', page.read_text())}
    assert {"common.js", "base.css", "runs.js", "run.js", "curves.js", "compare.js", "new.js"} <= refs
    assert not [r for r in refs if not (layout.STATIC / r).is_file()]


def test_resume_and_stop_refusals(tmp_path):
    runs = tmp_path / "runs"
    write_run(runs, "done", full_report=False)
    c = client(runs, allow_train=True)
    r = c.post("/api/resume/done", headers=WRITE)
    assert r.status_code == 409 and "has finished" in r.json()["error"]
    r = c.post("/api/stop/done", headers=WRITE)
    assert r.status_code == 409 and "no process running from this dashboard" in r.json()["error"]
    assert c.post("/api/resume/nope", headers=WRITE).status_code == 404
    assert not (runs / ".tunesmith-ui").exists()


def test_resume_plan_finds_the_directory_a_relative_output_dir_starts_at(tmp_path):
    import yaml

    from tunesmith.ui.launch_api import resume_plan

    run = write_run(tmp_path / "proj" / "runs", "r", finished=False).resolve()
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    assert resume_plan(run, None) == (run / "config.yaml", run.parent)  # absolute output_dir
    for out, ok in (("runs/r", True), ("r", True), ("elsewhere/r", False)):
        (run / "config.yaml").write_text(yaml.safe_dump({**cfg, "output_dir": out}))
        if ok:
            config, cwd = resume_plan(run, None)
            assert (cwd / out).resolve() == run
        else:
            with pytest.raises(LookupError, match="not where it is"):
                resume_plan(run, None)
    launched = tmp_path / "launched.yaml"
    launched.write_text("x")
    assert resume_plan(run, {"config": str(launched), "cwd": "/somewhere"}) == (launched, Path("/somewhere"))
