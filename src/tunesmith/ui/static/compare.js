/* Compare: /api/compare?runs=A&runs=B (2–5 runs), overlaid curves and the config diff; refreshed
 * while any of the runs is running. */
(function () {
  "use strict";
  const {el} = TS;
  const $ = id => document.getElementById(id);
  const names = new URLSearchParams(location.search).getAll("runs");

  function showDiff(data) {
    const head = $("config-diff").querySelector("thead"), body = $("config-diff").querySelector("tbody");
    head.replaceChildren(el("tr", {}, el("th", {}, "key"), data.runs.map(r => el("th", {}, r.name))));
    body.replaceChildren(...data.config_diff.map(row => el("tr", {class: "diff-changed", "data-key": row.key},
      el("td", {class: "mono"}, row.key),
      row.values.map(v => el("td", {class: "mono"}, typeof v === "string" ? v : JSON.stringify(v))))));
    $("diff-summary").textContent = data.config_diff.length
      ? `${data.config_diff.length} keys differ; ${data.same_keys} are the same (output_dir not compared).`
      : `The configs are the same (${data.same_keys} keys; output_dir not compared).`;
  }

  async function picker() {
    const data = await TS.getJSON("/api/runs");
    const boxes = data.runs.map(r => el("label", {}, el("input", {type: "checkbox", value: r.name, checked: names.includes(r.name)}), " " + r.name));
    const go = el("button", {onclick: () => {
      const q = [...$("compare-picker").querySelectorAll("input:checked")].map(b => "runs=" + encodeURIComponent(b.value));
      location.search = q.join("&");
    }}, "Compare");
    $("compare-picker").replaceChildren(...boxes, go);
  }

  async function refresh() {
    let data;
    try { data = await TS.getJSON("/api/compare?" + names.map(n => "runs=" + encodeURIComponent(n)).join("&")); }
    catch (e) { $("compare-error").replaceChildren(el("div", {class: "error-box"}, e.message)); return false; }
    $("compare-error").replaceChildren(...data.runs.flatMap(r => r.info.problems.map(p => el("div", {class: "error-box"}, `${r.name}: ${p}`))));
    $("compare-legend").replaceChildren(...data.runs.map((r, i) => el("span", {style: `--c: ${TS.color(i)}`},
      el("a", {href: "/runs/" + r.name.split("/").map(encodeURIComponent).join("/")}, r.name), ` (${r.info.status})`)));
    TS.drawCurves($("compare-curves"), data.runs, data.keys);
    showDiff(data);
    return data.runs.some(r => r.info.status === "running");
  }

  picker().catch(e => $("compare-error").replaceChildren(el("div", {class: "error-box"}, e.message)));
  if (names.length) TS.poll(refresh, 3000);
})();
