/* One run's page: /api/run/NAME (info, config, report, log) and /api/run-metrics/NAME?after=STEP,
 * polled while the run is running; Stop / Resume when the dashboard runs with --allow-train. */
(function () {
  "use strict";
  const {el, fmt, fmtDuration} = TS;
  const name = decodeURIComponent(location.pathname.replace(/^\/runs\//, ""));
  const enc = name.split("/").map(encodeURIComponent).join("/");
  const state = {records: [], keys: [], lastStep: -1, status: null, report: null};
  const $ = id => document.getElementById(id);
  document.title = name + " · tunesmith";
  $("run-title").textContent = name;

  function showInfo(data) {
    const info = data.info || {name, status: "unknown", status_reason: "", problems: [], checkpoints: []};
    state.status = info.status;
    $("run-status").className = "status status-" + info.status;
    $("run-status").textContent = info.status;
    $("run-reason").textContent = info.status_reason;
    $("run-problems").replaceChildren(...(info.problems || []).map(p => el("div", {class: "error-box"}, p)));
    const bits = [info.method && `method ${info.method}`, info.adapter && `adapter ${info.adapter}`, info.model && `model ${info.model}`,
      `steps ${info.steps || 0}${info.max_steps ? " / " + info.max_steps : ""}`,
      info.best_eval_loss !== null && info.best_eval_loss !== undefined && `best eval loss ${fmt(info.best_eval_loss)} at step ${info.best_eval_step}`,
      info.tokens_per_s && `${fmt(info.tokens_per_s, 0)} tokens/s`, info.wall_s && `wall ${fmtDuration(info.wall_s)}`];
    $("run-numbers").textContent = bits.filter(Boolean).join(" · ");
    $("checkpoints").replaceChildren(...(info.checkpoints.length ? info.checkpoints.map(c => el("li", {class: "mono"}, c))
      : [el("li", {class: "muted"}, "none saved (train.save_every)")]));
    $("run-config").textContent = data.config_text || "(no config.yaml yet)";
    if (data.report_html && data.report_html !== state.report) $("run-report").innerHTML = state.report = data.report_html; // rendered server-side from markdown, raw HTML escaped (ui/report.py)
    $("log-section").hidden = !(data.log && data.log.length);
    $("run-log").textContent = (data.log || []).join("\n");
    const actions = data.allow_train;
    $("run-actions").hidden = !actions;
    if (actions) {
      $("stop-run").disabled = info.status !== "running" || !info.job;
      $("resume-run").disabled = !["interrupted", "failed"].includes(info.status) || !(info.checkpoints || []).length;
    }
  }

  async function loadMetrics() {
    const data = await TS.getJSON(`/api/run-metrics/${enc}?after=${state.lastStep}`);
    if (data.restart) state.records = [];
    state.records = state.records.concat(data.records);
    state.keys = data.keys;
    if (state.records.length) state.lastStep = state.records[state.records.length - 1].step;
    if (data.restart || data.records.length || !$("curves").children.length) {
      TS.drawCurves($("curves"), [{name, records: state.records}], state.keys);
    }
  }

  async function refresh() {
    showInfo(await TS.getJSON(`/api/run/${enc}`));
    await loadMetrics();
    return true; // keep polling: a finished run may be resumed from another shell
  }

  async function act(what) {
    $("action-message").textContent = what === "stop" ? "stopping…" : "resuming…";
    const r = await TS.postJSON(`/api/${what}/${enc}`, {});
    $("action-message").textContent = r.ok ? "" : r.data.error;
    await refresh();
  }
  $("stop-run").addEventListener("click", () => act("stop"));
  $("resume-run").addEventListener("click", () => act("resume"));

  let tick = 0;
  TS.poll(async () => {
    // every 2 s while the run is running (or starting); every 10 s otherwise, in case it is resumed elsewhere
    if (tick++ % 5 !== 0 && state.status !== null && state.status !== "running") return true;
    try { return await refresh(); }
    catch (e) { $("run-reason").textContent = "could not load the run: " + e.message; return true; }
  }, 2000);
})();
