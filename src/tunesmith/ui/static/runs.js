/* The runs table: /api/runs every few seconds; ticked rows go to /compare?runs=a&runs=b. */
(function () {
  "use strict";
  const {el, fmt, fmtDuration} = TS;
  const body = document.querySelector("#runs-table tbody");
  const button = document.getElementById("compare-selected");
  const picked = new Set();

  const runLink = name => "/runs/" + name.split("/").map(encodeURIComponent).join("/");
  const basename = p => (p ? String(p).replace(/\/+$/, "").split("/").pop() : "–");

  function updateButton() {
    button.disabled = picked.size < 2 || picked.size > 5;
    button.textContent = picked.size ? `Compare selected (${picked.size})` : "Compare selected";
  }

  function row(r) {
    const box = el("input", {type: "checkbox", "aria-label": "select " + r.name, checked: picked.has(r.name),
      onchange: e => { e.target.checked ? picked.add(r.name) : picked.delete(r.name); updateButton(); }});
    const steps = r.max_steps ? `${r.steps} / ${r.max_steps}` : String(r.steps);
    return el("tr", {"data-run": r.name, "data-status": r.status},
      el("td", {}, box),
      el("td", {}, el("a", {href: runLink(r.name)}, r.name)),
      el("td", {}, el("span", {class: "status status-" + r.status, title: r.status_reason}, r.status)),
      el("td", {}, r.method || "–"),
      el("td", {title: r.model || ""}, basename(r.model)),
      el("td", {}, r.adapter || "–"),
      el("td", {class: "num"}, steps),
      el("td", {class: "num"}, fmt(r.last_loss)),
      el("td", {class: "num"}, r.best_eval_loss === null ? "–" : `${fmt(r.best_eval_loss)} @${r.best_eval_step}`),
      el("td", {class: "num"}, r.tokens_per_s === null ? "–" : fmt(r.tokens_per_s, 0)),
      el("td", {class: "num"}, fmtDuration(r.wall_s)),
      el("td", {class: "problem"}, r.problems.map(p => el("div", {}, p))));
  }

  async function refresh() {
    const data = await TS.getJSON("/api/runs");
    document.getElementById("runs-dir").textContent = data.runs_dir;
    const names = new Set(data.runs.map(r => r.name));
    for (const n of [...picked]) if (!names.has(n)) picked.delete(n);
    body.replaceChildren(...data.runs.map(row));
    if (!data.runs.length) body.appendChild(el("tr", {}, el("td", {colspan: 12, class: "muted"},
      "No run directories here yet. Train one with `tunesmith train CONFIG` (output_dir under this directory)" +
      (data.allow_train ? ", or start one from “Start a run”." : "."))));
    document.getElementById("runs-message").textContent = `${data.runs.length} runs`;
    updateButton();
  }

  button.addEventListener("click", () => {
    const q = [...picked].map(n => "runs=" + encodeURIComponent(n)).join("&");
    location.href = "/compare?" + q;
  });
  TS.poll(async () => {
    try { await refresh(); }
    catch (e) { document.getElementById("runs-message").textContent = "could not load the runs: " + e.message; }
  }, 3000);
})();
