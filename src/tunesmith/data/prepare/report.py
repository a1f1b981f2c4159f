"""`prepare_report.md`: what a person reads after `tunesmith prepare` (manifest.json has the same facts)."""

from __future__ import annotations

from typing import Any


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def render_report(m: dict[str, Any]) -> str:
    lines = ["# Data preparation report", ""]
    lines += ["## Inputs", ""]
    lines += _table(["file", "format", "rows", "sha256"], [[f"`{i['path']}`", i["format"], i["rows"], f"`{i['sha256'][:16]}…`"] for i in m["inputs"]])
    for b in m.get("benchmarks", []):
        lines.append(f"\nBenchmark `{b['path']}` sha256 `{b['sha256'][:16]}…`")
    lines += ["", "## Steps", ""]
    lines += _table(
        ["step", "rows in", "rows out", "dropped", "why"],
        [[s["step"], s["rows_in"], s["rows_out"], s["rows_in"] - s["rows_out"],
          "; ".join(f"{n} {_md(r)}" for r, n in s["dropped"].items()) or "-"] for s in m["steps"]],
    )
    for s in m["steps"]:
        if not (s["examples"] or s["counts"] or s["notes"]):
            continue
        lines += ["", f"### {s['step']}", ""]
        lines += [f"- {_md(n)}" for n in s["notes"]]
        lines += [f"- {_md(k)}: {v}" for k, v in s["counts"].items()]
        for reason, shown in s["examples"].items():
            lines.append(f"- e.g. *{_md(reason)}*:")
            lines += [f"  - `{x.replace('`', chr(39))}`" for x in shown]
    lines += ["", "## Output", ""]
    sp = m["splits"]
    lines.append(f"train: **{sp['train']}** rows, eval: **{sp['eval']}** rows (seed {m['prepare']['seed']}, eval fraction "
                 f"{m['prepare']['eval_fraction']} per source)")
    lines += [""] + _table(["source", "kept", "train", "eval"], [[f"`{s['path']}`", s["kept"], s["train"], s["eval"]] for s in m["sources"]])
    if m["prepare"]["weights"]:
        lines.append(f"\nMixed by weights {m['prepare']['weights']}: the train split is downsampled to these shares.")
    st = m.get("stats")
    if st and st.get("rows"):
        u = st["unit"]
        lines += ["", f"## Token statistics (train split, {u})", "", "![lengths](lengths.png)", ""]
        cols = ["min", "mean", "p50", "p90", "p95", "p99", "max"]
        lines += _table(["", *cols], [[k, *(st[k][c] for c in cols)] for k in ("prompt", "response", "total")])
        w = st["padding_waste"]
        lines += [
            "",
            f"- rows over `data.max_length` ({st['max_length']}): **{st['over_max_length']}** of {st['rows']}",
            *(f"- padding waste, {k.replace('_', ' ')}: {v:.1%}" for k, v in w.items()),
            f"- packed into {st['packed_rows']} rows of {st['max_length']}",
        ]
    lines += ["", "## Train on it", "", "Set `data.train` to this directory: tunesmith reads its `train/` split (and `eval/` is there for `data.eval`).", ""]
    return "\n".join(lines)
