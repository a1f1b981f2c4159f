/* tunesmith ui: helpers every page uses, under one global `TS`.
 *   TS.getJSON(url)              -> Promise<data>; rejects with Error(server's message)
 *   TS.postJSON(url, body)       -> Promise<{ok, status, data}>; never rejects on HTTP errors
 *   TS.el(tag, attrs, ...kids)   -> Element; kids are nodes or strings (inserted as text, never markup)
 *   TS.lineChart(box, series, o) -> <svg>; series [{name, points: [[x, y], ...], color?, dashed?}],
 *                                   o {title, xLabel, yLabel, logY, width (default: box's), height=260}; replaces box's content
 *   TS.poll(fn, ms)              -> stop(); calls async fn now and every ms until stop() or fn returns false
 *   TS.fmt(x, digits), TS.fmtDuration(seconds), TS.color(i), TS.allowTrain()
 * Anything read from a run directory is data: put it in with TS.el / textContent, never innerHTML.
 */
(function () {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";
  const PALETTE = ["#2f6fde", "#d9480f", "#2b8a3e", "#862e9c", "#c2255c", "#0b7285", "#5c940d", "#e67700"];

  async function errorText(resp) {
    try {
      const data = await resp.json();
      return typeof data.error === "string" ? data.error : (data.detail ? JSON.stringify(data.detail) : resp.statusText);
    } catch (e) { return resp.statusText || ("HTTP " + resp.status); }
  }

  async function getJSON(url) {
    const resp = await fetch(url, {headers: {"Accept": "application/json"}});
    if (!resp.ok) throw new Error(await errorText(resp));
    return resp.json();
  }

  async function postJSON(url, body) {
    const resp = await fetch(url, {method: "POST", body: JSON.stringify(body === undefined ? {} : body),
      headers: {"Content-Type": "application/json", "X-Tunesmith-UI": "1"}});
    let data = null;
    try { data = await resp.json(); } catch (e) { data = {error: resp.statusText}; }
    return {ok: resp.ok, status: resp.status, data: data};
  }

  function el(tag, attrs, ...kids) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k.startsWith("on") && typeof v === "function") node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const kid of kids.flat()) {
      if (kid === null || kid === undefined) continue;
      node.appendChild(typeof kid === "object" ? kid : document.createTextNode(String(kid)));
    }
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fmt(x, digits) {
    if (x === null || x === undefined || x === "") return "–";
    if (typeof x !== "number") return String(x);
    if (!isFinite(x)) return String(x);
    const a = Math.abs(x);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return x.toExponential(2);
    return Number.isInteger(x) ? String(x) : x.toFixed(digits === undefined ? 4 : digits);
  }

  function fmtDuration(s) {
    if (s === null || s === undefined || !isFinite(s)) return "–";
    s = Math.round(s);
    const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
    return h ? `${h}h ${m}m` : m ? `${m}m ${r}s` : `${r}s`;
  }

  function ticks(lo, hi, n) {
    if (hi <= lo) return [lo];
    const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map(k => k * mag).find(s => s >= raw) || raw;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
    return out;
  }

  /* The domain and plot box are written onto the <svg> (data-xmin ... data-plot-h), so a test can
   * recompute every path vertex from the data: px = left + (x - xmin) / (xmax - xmin) * w,
   * py = top + h - (y' - ymin) / (ymax - ymin) * h with y' = log10(y) when data-log-y is "true". */
  function lineChart(box, series, o) {
    // width: the box's, when it is laid out (the charts grid sizes it), else 440
    o = Object.assign({width: Math.max(360, Math.min(900, box.clientWidth || 440)), height: 260, title: "", xLabel: "step",
                       yLabel: "", logY: false}, o || {});
    const m = {left: 58, right: 14, top: 26, bottom: 32};
    const w = o.width - m.left - m.right, h = o.height - m.top - m.bottom;
    const ty = y => (o.logY ? Math.log10(y) : y);
    const clean = series.map((s, i) => ({name: s.name, color: s.color || PALETTE[i % PALETTE.length], dashed: !!s.dashed,
      points: s.points.filter(([x, y]) => typeof x === "number" && typeof y === "number" && isFinite(x) && isFinite(y) && (!o.logY || y > 0))}));
    const xs = clean.flatMap(s => s.points.map(p => p[0])), ys = clean.flatMap(s => s.points.map(p => ty(p[1])));
    const root = svg("svg", {class: "chart", width: o.width, height: o.height, viewBox: `0 0 ${o.width} ${o.height}`});
    root.appendChild(svg("text", {class: "title", x: m.left, y: 16}, o.title));
    const legend = el("div", {class: "legend"}, clean.map(s => el("span", {style: `--c: ${s.color}`}, s.name)));
    box.replaceChildren(root, legend);
    if (!xs.length) { root.appendChild(svg("text", {x: m.left, y: m.top + h / 2}, "no data yet")); return root; }
    let [xmin, xmax, ymin, ymax] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    if (xmax === xmin) { xmin -= 1; xmax += 1; }
    if (ymax === ymin) { const d = Math.abs(ymin) * 0.05 || 1; ymin -= d; ymax += d; }
    const pad = (ymax - ymin) * 0.05; ymin -= pad; ymax += pad;
    Object.entries({xmin, xmax, ymin, ymax, left: m.left, top: m.top, "plot-w": w, "plot-h": h, "log-y": o.logY})
      .forEach(([k, v]) => root.setAttribute("data-" + k, String(v)));
    const px = x => m.left + (x - xmin) / (xmax - xmin) * w, py = y => m.top + h - (ty(y) - ymin) / (ymax - ymin) * h;
    for (const t of ticks(ymin, ymax, 4)) {
      const y = m.top + h - (t - ymin) / (ymax - ymin) * h;
      root.appendChild(svg("line", {class: "grid-line", x1: m.left, x2: m.left + w, y1: y, y2: y}));
      root.appendChild(svg("text", {x: m.left - 6, y: y + 4, "text-anchor": "end"}, fmt(o.logY ? Math.pow(10, t) : t, 3)));
    }
    for (const t of ticks(xmin, xmax, 5)) {
      root.appendChild(svg("text", {x: px(t), y: m.top + h + 16, "text-anchor": "middle"}, fmt(t, 0)));
    }
    root.appendChild(svg("rect", {class: "axis", x: m.left, y: m.top, width: w, height: h, fill: "none"}));
    root.appendChild(svg("text", {x: m.left + w, y: o.height - 3, "text-anchor": "end"}, o.xLabel));
    for (const s of clean) {
      if (!s.points.length) continue;
      const d = s.points.map(([x, y], i) => `${i ? "L" : "M"}${px(x).toFixed(2)} ${py(y).toFixed(2)}`).join(" ");
      const path = svg("path", {class: "series", d, fill: "none", stroke: s.color, "stroke-width": 1.6, "data-series": s.name});
      if (s.dashed) path.setAttribute("stroke-dasharray", "5 3");
      path.appendChild(svg("title", {}, s.name));
      root.appendChild(path);
      if (s.points.length === 1) root.appendChild(svg("circle", {cx: px(s.points[0][0]), cy: py(s.points[0][1]), r: 3, fill: s.color}));
    }
    hover(root, clean, {m, w, h, xmin, xmax, px, py});
    return root;
  }

  /* Values under the mouse: the step nearest the pointer, and each series' value at its nearest step. */
  function hover(root, series, g) {
    const line = svg("line", {class: "hover", y1: g.m.top, y2: g.m.top + g.h, stroke: "#98a2b3", visibility: "hidden"});
    const tip = svg("text", {class: "hover tip", visibility: "hidden"});
    const overlay = svg("rect", {class: "overlay", x: g.m.left, y: g.m.top, width: g.w, height: g.h, fill: "transparent"});
    root.append(line, tip, overlay);
    const nearest = (pts, x) => pts.reduce((best, p) => (Math.abs(p[0] - x) < Math.abs(best[0] - x) ? p : best), pts[0]);
    overlay.addEventListener("mousemove", ev => {
      const box = root.getBoundingClientRect();
      const x = g.xmin + (ev.clientX - box.left - g.m.left) / g.w * (g.xmax - g.xmin);
      const hits = series.filter(s => s.points.length).map(s => [s, nearest(s.points, x)]);
      if (!hits.length) return;
      const step = nearest(hits.map(([, p]) => p), x)[0], at = g.px(step);
      line.setAttribute("x1", at); line.setAttribute("x2", at); line.setAttribute("visibility", "visible");
      tip.replaceChildren(svg("tspan", {x: 0, dy: 0}, `step ${fmt(step, 0)}`),
        ...hits.map(([s, p]) => svg("tspan", {x: 0, dy: 13, fill: s.color}, `${s.name}: ${fmt(p[1], 5)}${p[0] === step ? "" : ` (step ${p[0]})`}`)));
      const right = at > g.m.left + g.w / 2;
      tip.setAttribute("transform", `translate(${right ? at - 8 : at + 8}, ${g.m.top + 12})`);
      tip.setAttribute("text-anchor", right ? "end" : "start");
      for (const t of tip.children) t.setAttribute("x", 0);
      tip.setAttribute("visibility", "visible");
    });
    overlay.addEventListener("mouseleave", () => { line.setAttribute("visibility", "hidden"); tip.setAttribute("visibility", "hidden"); });
  }

  function poll(fn, ms) {
    let timer = null, stopped = false;
    const tick = async () => {
      let again = true;
      try { again = (await fn()) !== false; } catch (e) { console.error(e); }
      if (again && !stopped) timer = setTimeout(tick, ms);
    };
    tick();
    return () => { stopped = true; clearTimeout(timer); };
  }

  const color = i => PALETTE[i % PALETTE.length];
  const allowTrain = () => document.body.dataset.allowTrain === "true";

  window.TS = {getJSON, postJSON, el, svg, lineChart, poll, fmt, fmtDuration, color, allowTrain};
})();
