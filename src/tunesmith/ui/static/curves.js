/* Curves from metrics.jsonl records, shared by the run page and compare.
 *   TS.curveGroups(keys) -> [{key, keys: [...]}]: "loss" with "eval_loss", X with "eval_X", the rest alone
 *   TS.drawCurves(box, runs, keys): runs [{name, records}], one chart per group, one series per run and key
 */
(function () {
  "use strict";
  const LOG_Y = new Set(["loss", "eval_loss", "grad_norm"]);

  function curveGroups(keys) {
    const all = new Set(keys), groups = [];
    for (const k of keys) {
      if (k.startsWith("eval_") && all.has(k.slice(5))) continue; // drawn with its training twin
      groups.push({key: k, keys: all.has("eval_" + k) ? [k, "eval_" + k] : [k]});
    }
    return groups;
  }

  function points(records, key) {
    const out = [];
    for (const r of records) {
      let v = r[key];
      if (typeof v === "string") v = Number(v); // "nan" / "inf" as written: NaN/Infinity, dropped by the chart
      if (typeof v === "number") out.push([r.step, v]);
    }
    return out;
  }

  function drawCurves(box, runs, keys) {
    const groups = curveGroups(keys);
    const seen = new Set();
    for (const g of groups) {
      const id = "chart-" + g.key.replace(/[^A-Za-z0-9_-]/g, "_");
      seen.add(id);
      let holder = box.querySelector(`[data-chart="${id}"]`);
      if (!holder) { holder = TS.el("div", {"data-chart": id, id}); box.appendChild(holder); }
      const series = [];
      runs.forEach((run, i) => g.keys.forEach((k, j) => {
        const label = runs.length > 1 ? `${run.name} · ${k}` : k;
        series.push({name: label, points: points(run.records, k), color: TS.color(runs.length > 1 ? i : j),
                     dashed: j > 0});
      }));
      const logY = LOG_Y.has(g.key) && series.every(s => s.points.every(p => !(p[1] <= 0)));
      TS.lineChart(holder, series, {title: g.keys.join(" / ") + (logY ? " (log scale)" : ""), logY});
    }
    for (const holder of [...box.querySelectorAll("[data-chart]")]) if (!seen.has(holder.dataset.chart)) holder.remove();
  }

  Object.assign(window.TS, {curveGroups, drawCurves});
})();
