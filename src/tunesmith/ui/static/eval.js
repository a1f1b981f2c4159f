/* The Eval page: /api/eval/{table,samples,judge}. State in the URL (?dir=&threshold=&task=&offset=). */
(function () {
  "use strict";
  const {el, getJSON, fmt} = TS;
  const PAGE = 5;
  const $ = id => document.getElementById(id);
  const SCORE_KEYS = ["exact_match", "extracted", "acc", "acc_norm", "rouge_l", "json_valid", "schema_match", "passed", "status", "pass@1"];

  function state() {
    const q = new URLSearchParams(location.search);
    return {dir: q.get("dir") || "", threshold: q.get("threshold") || "", task: q.get("task") || "",
            offset: Math.max(0, parseInt(q.get("offset") || "0", 10) || 0), joffset: Math.max(0, parseInt(q.get("joffset") || "0", 10) || 0)};
  }
  function setQuery(changes) {
    const q = new URLSearchParams(location.search);
    for (const [k, v] of Object.entries(changes)) { if (v === "" || v === null) q.delete(k); else q.set(k, v); }
    history.pushState(null, "", "?" + q);
  }
  function showError(e) { $("eval-error").hidden = false; $("eval-error").textContent = e.message || String(e); }
  const who = t => t ? t.path + (t.adapter ? " + adapter " + t.adapter : "") : "–";

  function renderTable(t) {
    $("eval-summary").replaceChildren(el("div", {class: "facts"},
      el("span", {}, el("b", {}, "fine-tune: "), who(t.model)), el("span", {}, el("b", {}, "base: "), who(t.base)),
      el("span", {}, el("b", {}, "threshold: "), fmt(t.threshold, 3) + " (absolute for scores in [0, 1], relative for loss and perplexity, ×10 for ratings)")),
      el("p", {id: "eval-verdict", class: t.regressions ? "problem" : ""}, t.base
        ? `${t.better} of ${t.rows.length} metrics better; ${t.regressions} regression${t.regressions === 1 ? "" : "s"} past the threshold.`
        : "No base was scored (run tunesmith eval with --base to compare)."));
    $("eval-table").tBodies[0].replaceChildren(...t.rows.map(r => el("tr", {class: r.regression ? "regression" : (r.better ? "better" : ""),
        "data-task": r.task, "data-metric": r.metric, "data-regression": String(r.regression)},
      el("td", {}, r.task), el("td", {}, r.metric), el("td", {class: "num"}, fmt(r.base)), el("td", {class: "num"}, fmt(r.model)),
      el("td", {class: "num"}, (r.delta > 0 ? "+" : "") + fmt(r.delta)),
      el("td", {class: "flag"}, r.regression ? el("span", {class: "badge regression"}, "REGRESSION") : (r.better ? el("span", {class: "badge better"}, "better") : "")))));
    $("eval-unpaired").replaceChildren(...(t.unpaired.length ? [el("p", {class: "muted"}, "Scores only one side has:"),
      el("table", {class: "grid"}, el("thead", {}, el("tr", {}, ["task", "metric", "base", "fine-tune"].map(h => el("th", {}, h)))),
        el("tbody", {}, t.unpaired.map(u => el("tr", {}, el("td", {}, u.task), el("td", {}, u.metric),
          el("td", {class: "num"}, fmt(u.base)), el("td", {class: "num"}, fmt(u.model))))))] : []));
  }

  function scoreLine(rec) {
    if (!rec) return el("span", {class: "muted"}, "–");
    const parts = SCORE_KEYS.filter(k => k in rec).map(k => {
      const v = rec[k], good = v === 1 || v === true || v === "passed", bad = v === 0 || v === false || v === "failed";
      return el("span", {class: good ? "score-good" : (bad ? "score-bad" : "")}, `${k} ${fmt(v, 3)}  `);
    });
    return el("div", {}, ...parts);
  }
  const answerOf = rec => !rec ? "" : ("answer" in rec ? String(rec.answer) : ("pick" in rec && rec.choices ? `choice ${rec.pick}: ${rec.choices[rec.pick]}` : ""));
  const expectedOf = rec => !rec ? "" : ("target" in rec ? String(rec.target) : ("gold" in rec && rec.choices ? `choice ${rec.gold}: ${rec.choices[rec.gold]}` : ""));

  function renderSamples(p) {
    const sides = p.sides;
    $("eval-samples").replaceChildren(...p.rows.map(r => {
      const first = r.model || r.base;
      return el("div", {class: "sample", "data-index": r.index},
        el("div", {class: "muted"}, `#${r.index}` + (first && first.id !== undefined ? ` (id ${first.id})` : "")),
        el("pre", {class: "prompt"}, first ? String(first.prompt) : ""),
        el("div", {}, el("b", {}, "expected: "), expectedOf(first)),
        el("div", {class: "pair"}, sides.map(side => el("div", {"data-side": side},
          el("b", {}, side === "model" ? "fine-tune" : side), el("pre", {}, answerOf(r[side])), scoreLine(r[side])))));
    }));
    const go = off => { setQuery({offset: off}); loadSamples(); };
    $("eval-pager").replaceChildren(
      el("button", {type: "button", disabled: p.offset <= 0, onclick: () => go(Math.max(0, p.offset - PAGE))}, "◀"),
      el("span", {}, p.total ? `${p.offset}–${Math.min(p.total, p.offset + PAGE) - 1} of ${p.total}` : "none"),
      el("button", {type: "button", disabled: p.offset + PAGE >= p.total, onclick: () => go(p.offset + PAGE)}, "▶"));
  }

  async function loadSamples() {
    const s = state(), task = s.task || $("eval-task").value;
    if (!task) { $("eval-samples").replaceChildren(el("p", {class: "muted"}, "No task kept samples (perplexity keeps none).")); return; }
    try {
      renderSamples(await getJSON(`/api/eval/samples?` + new URLSearchParams({dir: s.dir, task, offset: s.offset, limit: PAGE})));
    } catch (e) { showError(e); }
  }

  function renderJudge(j) {
    if (!j.ran) { $("eval-judge").replaceChildren(el("p", {class: "muted"}, "No judge ran (tunesmith eval --judge single|pairwise).")); return; }
    const head = el("div", {class: "facts"}, el("span", {}, el("b", {}, "judge: "), String(j.judge)), el("span", {}, el("b", {}, "mode: "), j.mode),
      ...Object.entries(j.scores).map(([side, sc]) => el("span", {}, el("b", {}, side + ": "), Object.entries(sc).map(([k, v]) => `${k} ${fmt(v, 3)}`).join(", "))));
    const rows = j.rows.map((r, i) => {
      if (r.pairwise) {
        const p = r.pairwise;
        return el("tr", {"data-outcome": p.outcome}, el("td", {}, r.question), el("td", {}, el("pre", {}, p.answer)), el("td", {}, el("pre", {}, p.base_answer)),
          el("td", {}, `${p.outcome} (model first: ${p.verdict_model_first ?? "?"}, second: ${p.verdict_model_second ?? "?"})`));
      }
      const cell = side => r[side] ? el("td", {}, el("pre", {}, String(r[side].answer)), el("div", {}, el("b", {}, "rating " + fmt(r[side].rating, 1))),
        el("details", {}, el("summary", {}, "judge's words"), el("pre", {}, String(r[side].judge_output || "")))) : el("td", {}, "–");
      return el("tr", {}, el("td", {}, r.question), cell("model"), cell("base"));
    });
    const header = j.mode === "pairwise" ? ["question", "fine-tune", "base", "verdict (both orders)"] : ["question", "fine-tune", "base"];
    const go = off => { setQuery({joffset: off}); loadJudge(); };
    $("eval-judge").replaceChildren(head, el("div", {class: "pager"},
        el("button", {type: "button", disabled: j.offset <= 0, onclick: () => go(Math.max(0, j.offset - PAGE))}, "◀"),
        el("span", {}, `${j.total} questions`),
        el("button", {type: "button", disabled: j.offset + PAGE >= j.total, onclick: () => go(j.offset + PAGE)}, "▶")),
      el("table", {class: "grid", id: "judge-table"}, el("thead", {}, el("tr", {}, header.map(h => el("th", {}, h)))), el("tbody", {}, rows)));
  }

  async function loadJudge() {
    const s = state();
    try { renderJudge(await getJSON(`/api/eval/judge?` + new URLSearchParams({dir: s.dir, offset: s.joffset, limit: PAGE}))); }
    catch (e) { showError(e); }
  }

  async function load() {
    const s = state();
    $("eval-dir").value = s.dir; $("eval-threshold").value = s.threshold;
    if (!s.dir) return;
    $("eval-error").hidden = true;
    try {
      const q = new URLSearchParams({dir: s.dir});
      if (s.threshold !== "") q.set("threshold", s.threshold);
      const t = await getJSON("/api/eval/table?" + q);
      $("eval-view").hidden = false;
      renderTable(t);
      $("eval-task").replaceChildren(...t.tasks.map(x => el("option", {value: x.task}, `${x.task} (${x.metric}, ${x.n})`)));
      if (s.task) $("eval-task").value = s.task;
      $("eval-view").dataset.loaded = "true";
      await Promise.all([loadSamples(), loadJudge()]);
    } catch (e) { showError(e); }
  }

  $("eval-task").addEventListener("change", () => { setQuery({task: $("eval-task").value, offset: 0}); loadSamples(); });
  $("eval-form").addEventListener("submit", ev => {
    ev.preventDefault();
    history.pushState(null, "", "?" + new URLSearchParams({dir: $("eval-dir").value.trim(), ...($("eval-threshold").value ? {threshold: $("eval-threshold").value} : {})}));
    load();
  });
  window.addEventListener("popstate", load);
  getJSON("/api/eval/sources").then(src => {
    $("eval-runs-dir").textContent = src.runs_dir;
    $("eval-sources").replaceChildren(...src.evals.map(p => el("option", {value: p})));
  }).catch(showError);
  load();
})();
