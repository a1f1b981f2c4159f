/* The start-a-run form: fields from /api/form (the config schema), checked by /api/validate as the
 * user types (errors beside their field), started by /api/start, then off to the run's page. */
(function () {
  "use strict";
  const {el} = TS;
  const $ = id => document.getElementById(id);
  const form = $("new-form");
  const inputs = {};
  let timer = null, allowTrain = false;

  const fieldId = key => "f-" + key.replace(/\./g, "-");

  function input(spec) {
    const id = fieldId(spec.key), d = spec.default;
    if (spec.kind === "select") {
      return el("select", {id, name: spec.key}, spec.choices.map(c => el("option", {value: c, selected: c === d}, c)));
    }
    if (spec.kind === "bool") return el("input", {id, name: spec.key, type: "checkbox", checked: !!d});
    if (spec.kind === "list") return el("textarea", {id, name: spec.key, rows: 2, placeholder: "one path per line"});
    const value = Array.isArray(d) ? d.join(", ") : (d === null || d === undefined ? "" : String(d));
    return el("input", {id, name: spec.key, type: "text", value, inputmode: spec.kind === "text" ? null : "decimal"});
  }

  function row(key, label, control, help) {
    inputs[key] = control;
    return el("div", {class: "field", "data-field": key},
      el("label", {for: control.id, title: help || ""}, label),
      control,
      el("div", {}, el("div", {class: "field-error", id: "err-" + control.id}), help ? el("div", {class: "muted"}, help) : null));
  }

  function values() {
    const out = {};
    for (const [key, node] of Object.entries(inputs)) out[key] = node.type === "checkbox" ? node.checked : node.value;
    return out;
  }

  function showErrors(errors) {
    for (const [key, node] of Object.entries(inputs)) {
      const msg = errors[key] || "";
      $("err-" + node.id).textContent = msg;
      node.closest(".field").classList.toggle("invalid", !!msg);
    }
    $("form-errors").replaceChildren(...(errors._form ? [el("div", {class: "error-box"}, errors._form)] : []));
  }

  async function check() {
    const r = await TS.postJSON("/api/validate", values());
    if (!r.ok) { $("start-message").textContent = r.data.error || "could not check the form"; return null; }
    showErrors(r.data.errors);
    $("new-yaml").textContent = r.data.yaml;
    return r.data;
  }

  async function start(event) {
    event.preventDefault();
    $("start-run").disabled = true;
    $("start-message").textContent = "starting…";
    const r = await TS.postJSON("/api/start", values());
    if (r.ok) { location.href = r.data.url; return; }
    showErrors(r.data.errors || {});
    $("start-message").textContent = r.data.error;
    $("start-run").disabled = !allowTrain;
  }

  async function build() {
    const data = await TS.getJSON("/api/form");
    allowTrain = data.allow_train;
    $("new-readonly").hidden = allowTrain;
    $("start-run").disabled = !allowTrain;
    $("new-runs-dir").textContent = data.runs_dir;
    $("new-cwd").textContent = data.cwd;
    const rows = [row("name", "run name", el("input", {id: "f-name", name: "name", type: "text", placeholder: "my-sft-run"}),
      "the run's directory under --runs; must not exist yet")];
    for (const spec of data.fields) rows.push(row(spec.key, spec.key + (spec.required ? " *" : ""), input(spec), spec.help));
    rows.push(row("extra_yaml", "more config (YAML)",
      el("textarea", {id: "f-extra_yaml", name: "extra_yaml", rows: 4, placeholder: "preference:\n  beta: 0.1"}),
      "any other keys, as in a config file; the fields above win over the same keys here"));
    $("new-fields").replaceChildren(...rows);
    form.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(check, 300); });
    form.addEventListener("submit", start);
    await check();
  }

  build().catch(e => $("form-errors").replaceChildren(el("div", {class: "error-box"}, e.message)));
})();
