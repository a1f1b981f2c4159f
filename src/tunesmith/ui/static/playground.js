/* The Playground: models from /api/playground/models; each column streams POST /api/playground/chat
 * (the server's SSE chunks, relayed). Side by side = two columns, two concurrent streams, the same
 * messages. Each column keeps its own history: the models' earlier answers differ.
 * For tests, a column carries data-state (idle|streaming|done|error), data-model and data-updates
 * (how many times streamed text was appended to the answer). */
(function () {
  "use strict";
  const {el, getJSON} = TS;
  const $ = id => document.getElementById(id);
  let models = [], columns = [], controllers = [];

  function showError(e) { $("pg-error").hidden = false; $("pg-error").textContent = e.message || String(e); }

  async function loadModels() {
    $("pg-error").hidden = true;
    try {
      const data = await getJSON("/api/playground/models");
      $("pg-server").textContent = data.serve_url;
      models = data.models;
      const opts = () => models.map(m => el("option", {value: m.id}, m.parent ? `${m.id} (adapter on ${m.parent})` : `${m.id} (base)`));
      const [a, b] = [$("pg-model-a").value, $("pg-model-b").value];
      $("pg-model-a").replaceChildren(...opts());
      $("pg-model-b").replaceChildren(...opts());
      const base = models.find(m => !m.parent), tuned = models.find(m => m.parent);
      $("pg-model-a").value = a && models.some(m => m.id === a) ? a : (base || models[0] || {}).id || "";
      $("pg-model-b").value = b && models.some(m => m.id === b) ? b : (tuned || models[0] || {}).id || "";
      document.body.dataset.models = models.map(m => m.id).join(",");
    } catch (e) { showError(e); }
  }

  function column(id, model) {
    const turns = el("div", {class: "turns"}), stats = el("div", {class: "stats"});
    const node = el("section", {class: "chat-col", id, "data-model": model, "data-state": "idle", "data-updates": "0"},
      el("header", {}, el("b", {}, model), el("span", {class: "muted"}, (models.find(m => m.id === model) || {}).parent ? "adapter" : "base")),
      turns, stats);
    return {id, model, node, turns, stats, history: []};
  }

  function layout() {
    const side = $("pg-side").checked;
    $("pg-b-label").hidden = !side;
    const wanted = side ? [$("pg-model-a").value, $("pg-model-b").value] : [$("pg-model-a").value];
    if (columns.length !== wanted.length || columns.some((c, i) => c.model !== wanted[i])) {
      columns = wanted.map((m, i) => column(i ? "col-b" : "col-a", m));
      $("pg-columns").replaceChildren(...columns.map(c => c.node));
    }
    $("pg-columns").classList.toggle("side-by-side", side);
  }

  function parseEvents(buffer, onData) {
    // SSE: events end with a blank line; we use only `data:` lines (the server sends nothing else)
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) if (line.startsWith("data:")) onData(line.slice(5).trim());
    }
    return buffer;
  }

  async function stream(col, messages, params, signal) {
    const answer = el("div", {class: "turn assistant"});
    col.turns.appendChild(answer);
    col.node.dataset.state = "streaming";
    col.node.dataset.updates = "0";
    const t0 = performance.now();
    let text = "", finish = null, usage = null, firstAt = null, failed = null;
    try {
      const resp = await fetch("/api/playground/chat", {method: "POST", signal,
        headers: {"Content-Type": "application/json", "X-Tunesmith-UI": "1"},
        body: JSON.stringify({model: col.model, messages, ...params})});
      if (!resp.ok) {
        let msg = resp.statusText;
        try { const d = await resp.json(); msg = typeof d.error === "string" ? d.error : JSON.stringify(d.detail || d); } catch (e) { /* keep statusText */ }
        throw new Error(msg);
      }
      const reader = resp.body.getReader(), decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer = parseEvents(buffer + decoder.decode(value, {stream: true}), data => {
          if (data === "[DONE]") return;
          const chunk = JSON.parse(data);
          if (chunk.error) { failed = chunk.error.message || JSON.stringify(chunk.error); return; }
          if (chunk.usage) usage = chunk.usage;
          for (const c of chunk.choices || []) {
            const piece = (c.delta && c.delta.content) || "";
            if (piece) {
              if (firstAt === null) firstAt = performance.now();
              text += piece;
              answer.textContent = text;  // text, never markup
              col.node.dataset.updates = String(parseInt(col.node.dataset.updates, 10) + 1);
            }
            if (c.finish_reason) finish = c.finish_reason;
          }
        });
      }
      if (failed) throw new Error(failed);
      col.history.push({role: "assistant", content: text});
      col.node.dataset.state = "done";
    } catch (e) {
      if (e.name === "AbortError") { col.node.dataset.state = "done"; finish = "stopped"; col.history.push({role: "assistant", content: text}); }
      else { col.node.dataset.state = "error"; col.turns.appendChild(el("div", {class: "turn error"}, e.message || String(e))); }
    }
    const secs = (performance.now() - t0) / 1000, n = usage ? usage.completion_tokens : null;
    const rate = n && firstAt !== null && n > 1 ? ` · ${((n - 1) / ((performance.now() - firstAt) / 1000)).toFixed(1)} tokens/s after the first` : "";
    col.stats.textContent = `${n ?? "?"} tokens in ${secs.toFixed(1)} s` + rate + (finish ? ` · finish: ${finish}` : "");
  }

  async function send(ev) {
    if (ev) ev.preventDefault();
    const content = $("pg-message").value;
    if (!content.trim() || controllers.length) return;
    layout();
    const system = $("pg-system").value.trim();
    const params = {max_tokens: parseInt($("pg-max-tokens").value, 10) || 256, temperature: parseFloat($("pg-temperature").value) || 0};
    controllers = columns.map(() => new AbortController());
    $("pg-send").disabled = true; $("pg-stop").disabled = false;
    await Promise.all(columns.map((col, i) => {
      col.turns.appendChild(el("div", {class: "turn user"}, content));
      col.history.push({role: "user", content});
      const messages = (system ? [{role: "system", content: system}] : []).concat(col.history);
      return stream(col, messages, params, controllers[i].signal);
    }));
    controllers = [];
    $("pg-send").disabled = false; $("pg-stop").disabled = true;
    $("pg-message").value = "";
  }

  $("pg-form").addEventListener("submit", send);
  $("pg-message").addEventListener("keydown", ev => { if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) send(ev); });
  $("pg-stop").addEventListener("click", () => controllers.forEach(c => c.abort()));
  $("pg-clear").addEventListener("click", () => { columns = []; layout(); });
  $("pg-reload").addEventListener("click", loadModels);
  for (const id of ["pg-side", "pg-model-a", "pg-model-b"]) $(id).addEventListener("change", () => { if (!controllers.length) layout(); });
  loadModels().then(layout);
})();
