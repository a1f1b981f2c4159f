/* The Data page: /api/data/{summary,lengths,rows}. The state lives in the URL (?path=&tokenizer=&split=&offset=),
 * so a view can be linked and reloaded. Token text is inserted as text nodes, never markup. */
(function () {
  "use strict";
  const {el, svg, getJSON} = TS;
  const PAGE = 10;
  const $ = id => document.getElementById(id);

  function state() {
    const q = new URLSearchParams(location.search);
    return {path: q.get("path") || "", tokenizer: q.get("tokenizer") || "", split: q.get("split") || "train",
            offset: Math.max(0, parseInt(q.get("offset") || "0", 10) || 0)};
  }

  function api(what, s, extra) {
    const q = new URLSearchParams({path: s.path, tokenizer: s.tokenizer, split: s.split, ...(extra || {})});
    return getJSON(`/api/data/${what}?` + q.toString());
  }

  function showError(e) {
    $("data-error").hidden = false;
    $("data-error").textContent = e.message || String(e);
  }

  function renderSummary(sum) {
    const facts = [["source", sum.path], ["kind", sum.kind], ["tokenizer", sum.tokenizer], ["format", sum.format],
      ["max_length", sum.max_length], ["packing", sum.packing ? "on (examples share rows; shown one by one)" : "off"],
      ["train_on_prompt", String(sum.train_on_prompt)]];
    if (sum.splits) facts.push(["rows", `train ${sum.splits.train}, eval ${sum.splits.eval}`]);
    $("data-summary").replaceChildren(...facts.map(([k, v]) => el("span", {}, el("b", {}, k + ": "), String(v))));
  }

  function barChart(box, h) {
    const W = 640, H = 200, m = {left: 46, right: 12, top: 10, bottom: 30};
    const w = W - m.left - m.right, ht = H - m.top - m.bottom;
    const root = svg("svg", {class: "chart hist", width: W, height: H, viewBox: `0 0 ${W} ${H}`});
    if (!h.bins.length) { box.replaceChildren(el("p", {class: "muted"}, "no example left to measure")); return; }
    const lo = h.bins[0].lo, hi = Math.max(h.bins[h.bins.length - 1].hi, h.max_length < 4 * h.bins[h.bins.length - 1].hi ? h.max_length + 1 : 0);
    const top = Math.max(...h.bins.map(b => b.count));
    const px = x => m.left + (x - lo) / (hi - lo) * w, py = c => m.top + ht - c / top * ht;
    for (const b of h.bins) {
      const r = svg("rect", {class: "bar", x: px(b.lo) + 0.5, y: py(b.count), width: Math.max(1, px(b.hi) - px(b.lo) - 1),
                             height: m.top + ht - py(b.count), "data-lo": b.lo, "data-hi": b.hi, "data-count": b.count});
      r.appendChild(svg("title", {}, `${b.lo}–${b.hi - 1} tokens: ${b.count}`));
      root.appendChild(r);
    }
    if (h.max_length <= hi) {
      root.appendChild(svg("line", {class: "limit", x1: px(h.max_length), x2: px(h.max_length), y1: m.top, y2: m.top + ht}));
      root.appendChild(svg("text", {x: px(h.max_length) - 4, y: m.top + 10, "text-anchor": "end"}, `max_length ${h.max_length}`));
    }
    root.appendChild(svg("text", {x: m.left, y: H - 8}, String(lo)));
    root.appendChild(svg("text", {x: m.left + w, y: H - 8, "text-anchor": "end"}, `${hi} tokens`));
    root.appendChild(svg("text", {x: m.left - 6, y: m.top + 8, "text-anchor": "end"}, String(top)));
    root.appendChild(svg("text", {x: m.left - 6, y: m.top + ht, "text-anchor": "end"}, "0"));
    const st = h.stats;
    const note = el("p", {class: "muted"}, `${h.sampled === h.of ? "all " + h.of : h.sampled + " of " + h.of + " (evenly spread)"} examples of `
      + `the ${h.split} split, as training encodes them: ` + (st.count ? `min ${st.min}, mean ${st.mean}, p50 ${st.p50}, p90 ${st.p90}, `
      + `p99 ${st.p99}, max ${st.max} tokens; ${h.label_tokens} label tokens.` : "none left."));
    box.replaceChildren(root, note);
  }

  function reasonList(dropped, examples) {
    return el("ul", {}, Object.entries(dropped).map(([reason, n]) => el("li", {"data-reason": reason}, `${n} × ${reason}`,
      (examples && examples[reason] && examples[reason].length) ? el("ul", {class: "examples"}, examples[reason].map(x => el("li", {}, x))) : null)));
  }

  function renderDrops(drops, h) {
    const parts = [];
    if (drops.prepare_steps.length) {
      parts.push(el("table", {class: "grid", id: "prepare-steps"},
        el("thead", {}, el("tr", {}, ["step", "rows in", "rows out", "dropped, why, e.g."].map(t => el("th", {}, t)))),
        el("tbody", {}, drops.prepare_steps.map(s => el("tr", {}, el("td", {}, s.step), el("td", {class: "num"}, s.rows_in),
          el("td", {class: "num"}, s.rows_out), el("td", {}, Object.keys(s.dropped).length ? reasonList(s.dropped, s.examples) : "–"))))));
      if (drops.has_report === false) parts.push(el("p", {class: "notice"}, "prepare_report.md is missing; the counts above are from manifest.json."));
    } else if (drops.has_report === null) {
      parts.push(el("p", {class: "muted"}, "A config's data has no prepare report; the counts below are what training would drop."));
    }
    if (Object.keys(drops.skipped_on_read).length) {
      parts.push(el("p", {}, "Rows the reader skips (data.on_error: skip):"), reasonList(drops.skipped_on_read, null),
                 el("ul", {class: "examples"}, drops.first_skipped.map(x => el("li", {}, x))));
    }
    if (h && Object.keys(h.dropped).length) {
      parts.push(el("p", {}, `Dropped at tokenization (in the ${h.sampled} examples measured):`), reasonList(h.dropped, h.examples));
    }
    if (!parts.length || (drops.prepare_steps.length === 0 && !Object.keys(drops.skipped_on_read).length && !(h && Object.keys(h.dropped).length))) {
      parts.push(el("p", {class: "muted"}, "No row is dropped."));
    }
    $("data-drops").replaceChildren(...parts);
  }

  const SPECIAL = /^<[^<>\s]+>$|^<\|[^|]*\|>$/;

  function renderRow(r) {
    const n = r.segments.reduce((a, s) => a + s.n_tokens, 0), l = r.segments.reduce((a, s) => a + s.n_labels, 0);
    const head = el("header", {}, el("b", {}, `#${r.index}`), el("span", {class: "mono"}, r.where),
      r.dropped ? el("span", {class: "problem"}, "dropped: " + r.dropped) : el("span", {}, `${n} tokens, ${l} labels`));
    const segs = r.segments.map((s, k) => el("div", {class: "tokens", "data-segment": k},
      s.tokens.map(([text, lab], i) => el("span", {class: "tok" + (lab ? " lab" : "") + (SPECIAL.test(text) ? " special" : ""), "data-i": i}, text))));
    if (r.dropped && r.messages) {
      segs.push(el("div", {class: "tokens"}, r.messages.map(m => `${m.role}: ${m.content}\n`).join("")));
    }
    return el("section", {class: "data-row" + (r.dropped ? " dropped" : ""), "data-index": r.index}, head, ...segs);
  }

  function pager(s, total) {
    const go = off => { const q = new URLSearchParams(location.search); q.set("offset", off); history.pushState(null, "", "?" + q); loadRows(state()); };
    const last = Math.max(0, total - 1);
    return [el("button", {type: "button", id: "data-prev", disabled: s.offset <= 0, onclick: () => go(Math.max(0, s.offset - PAGE))}, "◀ previous"),
      el("span", {id: "data-range"}, total ? `rows ${s.offset}–${Math.min(total, s.offset + PAGE) - 1} of ${total}` : "no rows"),
      el("button", {type: "button", id: "data-next", disabled: s.offset + PAGE > last, onclick: () => go(s.offset + PAGE)}, "next ▶")];
  }

  async function loadRows(s) {
    try {
      const page = await api("rows", s, {offset: s.offset, limit: PAGE});
      $("data-pager").replaceChildren(...pager(s, page.total));
      $("data-rows").replaceChildren(...page.rows.map(renderRow));
      $("data-rows").dataset.loaded = `${s.split}:${s.offset}`;
    } catch (e) { showError(e); }
  }

  async function load() {
    const s = state();
    $("data-path").value = s.path; $("data-tokenizer").value = s.tokenizer; $("data-split").value = s.split;
    if (!s.path) return;
    $("data-error").hidden = true;
    try {
      const sum = await api("summary", s);
      $("data-view").hidden = false;
      renderSummary(sum);
      renderDrops(sum.drops, null);
      await loadRows(s);
      $("data-hist").replaceChildren(el("p", {class: "muted"}, "measuring…"));
      const h = await api("lengths", s);
      barChart($("data-hist"), h);
      renderDrops(sum.drops, h);
    } catch (e) { showError(e); }
  }

  $("data-form").addEventListener("submit", ev => {
    ev.preventDefault();
    const q = new URLSearchParams({path: $("data-path").value.trim(), split: $("data-split").value});
    if ($("data-tokenizer").value.trim()) q.set("tokenizer", $("data-tokenizer").value.trim());
    history.pushState(null, "", "?" + q);
    load();
  });
  window.addEventListener("popstate", load);
  getJSON("/api/data/sources").then(src => {
    $("data-runs-dir").textContent = src.runs_dir;
    $("data-sources").replaceChildren(...[...src.prepared, ...src.configs].map(p => el("option", {value: p})));
  }).catch(showError);
  load();
})();
