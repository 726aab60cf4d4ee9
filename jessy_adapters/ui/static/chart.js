/* jessy ui: a small SVG line chart, enough for loss and learning-rate curves that grow live.
   No library: the page must work offline. The chart element's data-points attribute holds
   how many points are drawn (what the browser test watches grow). */
"use strict";

const SVGNS = "http://www.w3.org/2000/svg";
const MAX_DRAWN = 2000;  /* per series; more points are thinned for drawing only */

function svg(tag, attrs) {
  const el = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, String(v));
  return el;
}

function niceTicks(lo, hi, count, integer) {
  if (!(hi > lo)) { const d = integer ? 1 : Math.abs(lo) || 1; lo -= d / 2; hi += d / 2; }
  const raw = (hi - lo) / Math.max(1, count);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  let step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  if (integer) step = Math.max(1, Math.round(step));  /* steps and trial numbers */
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
    ticks.push(Math.abs(v) < step * 1e-9 ? 0 : v);
  }
  return { lo: Math.min(lo, ticks[0] ?? lo), hi: Math.max(hi, ticks[ticks.length - 1] ?? hi), ticks,
           step };
}

function tickLabel(v, step, ticks) {
  const top = Math.max(...ticks.map(Math.abs));
  if (v === 0) return "0";
  if (top < 1e-2 || top >= 1e6) return v.toExponential(step / top < 0.1 ? 2 : 1);
  let digits = Math.max(0, Math.ceil(-Math.log10(step) - 1e-9));
  const scaled = step * Math.pow(10, digits);
  if (Math.abs(scaled - Math.round(scaled)) > 1e-6) digits += 1;  /* 0.25, 2.5e-3 */
  return v.toFixed(Math.min(8, digits));
}

class LineChart {
  constructor(el, opts) {
    this.el = el;
    this.opts = Object.assign({ xLabel: "step", yLabel: "", height: 260, empty: "no data yet" },
                              opts || {});
    this.series = new Map();
    this.timer = null;
    this.hoverX = null;
    UI.clear(el);
    this.legend = UI.h("div", { class: "legend" });
    this.box = UI.h("div", { class: "plot" });
    this.readout = UI.h("div", { class: "readout" });
    el.append(this.legend, this.box, this.readout);
    this.el.dataset.points = "0";
    if (window.ResizeObserver) new ResizeObserver(() => this.draw()).observe(el);
    this.draw();
  }

  line(id, style) {
    if (!this.series.has(id)) {
      this.series.set(id, Object.assign({ id: id, label: id, color: UI.COLORS[this.series.size %
        UI.COLORS.length], dashed: false, scatter: false, points: [] }, style || {}));
    }
    return this.series.get(id);
  }

  add(id, x, y, style) {
    if (!UI.isNum(x) || !UI.isNum(y)) return;
    this.line(id, style).points.push([x, y]);
    this.draw();
  }

  reset() { this.series.clear(); this.draw(); }

  count() { let n = 0; for (const s of this.series.values()) n += s.points.length; return n; }

  draw() {  /* at most every 150 ms, however fast events come */
    if (this.timer) return;
    this.timer = setTimeout(() => { this.timer = null; this.render(); }, 150);
  }

  render() {
    const W = Math.max(300, this.box.clientWidth || this.el.clientWidth || 600);
    const H = this.opts.height, m = { l: 58, r: 14, t: 10, b: 34 };
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H,
                              role: "img", "aria-label": this.opts.yLabel || "chart" });
    const all = [];
    for (const s of this.series.values()) for (const p of s.points) all.push(p);
    UI.clear(this.box).appendChild(root);
    this.renderLegend();
    this.el.dataset.points = String(all.length);  /* what is drawn now */
    if (!all.length) {
      root.appendChild(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }))
        .textContent = this.opts.empty;
      return;
    }
    let xlo = Infinity, xhi = -Infinity, ylo = Infinity, yhi = -Infinity;
    for (const [x, y] of all) {
      xlo = Math.min(xlo, x); xhi = Math.max(xhi, x); ylo = Math.min(ylo, y); yhi = Math.max(yhi, y);
    }
    const pad = (yhi - ylo) * 0.05;
    const xt = niceTicks(xlo, xhi, Math.max(2, Math.floor((W - m.l - m.r) / 80)),
                         this.opts.integerX !== false);
    const yt = niceTicks(ylo - pad, yhi + pad, 5);
    const sx = (x) => m.l + (x - xt.lo) / (xt.hi - xt.lo || 1) * (W - m.l - m.r);
    const sy = (y) => H - m.b - (y - yt.lo) / (yt.hi - yt.lo || 1) * (H - m.t - m.b);
    for (const v of yt.ticks) {
      const g = root.appendChild(svg("g", { class: "tick" }));
      g.appendChild(svg("line", { x1: m.l, x2: W - m.r, y1: sy(v), y2: sy(v), class: "gridline" }));
      g.appendChild(svg("text", { x: m.l - 6, y: sy(v) + 4, "text-anchor": "end" }))
        .textContent = tickLabel(v, yt.step, yt.ticks);
    }
    for (const v of xt.ticks) {
      const g = root.appendChild(svg("g", { class: "tick" }));
      g.appendChild(svg("text", { x: sx(v), y: H - m.b + 16, "text-anchor": "middle" }))
        .textContent = tickLabel(v, xt.step, xt.ticks);
    }
    root.appendChild(svg("line", { x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b, class: "axis" }));
    root.appendChild(svg("line", { x1: m.l, x2: m.l, y1: m.t, y2: H - m.b, class: "axis" }));
    root.appendChild(svg("text", { x: W - m.r, y: H - 4, "text-anchor": "end", class: "label" }))
      .textContent = this.opts.xLabel;
    for (const s of this.series.values()) {
      if (!s.points.length) continue;
      const stride = Math.ceil(s.points.length / MAX_DRAWN);
      const pts = s.points.filter((_, i) => i % stride === 0 || i === s.points.length - 1);
      if (!s.scatter && pts.length > 1) {
        const d = pts.map(([x, y], i) => (i ? "L" : "M") + sx(x).toFixed(1) + " " + sy(y).toFixed(1))
          .join("");
        root.appendChild(svg("path", { d: d, fill: "none", stroke: s.color, "stroke-width": 1.8,
                                       "stroke-dasharray": s.dashed ? "6 4" : "none",
                                       "data-series": s.id }));
      }
      if (s.scatter || s.markers || pts.length === 1) {
        for (const [x, y] of pts) {
          root.appendChild(svg("circle", { cx: sx(x), cy: sy(y), r: s.scatter ? 3.5 : 2.5,
                                           fill: s.color, "data-series": s.id }));
        }
      }
    }
    const cursor = root.appendChild(svg("line", { y1: m.t, y2: H - m.b, class: "cursor",
                                                  visibility: "hidden" }));
    root.addEventListener("mousemove", (ev) => {
      const r = root.getBoundingClientRect();
      const px = (ev.clientX - r.left) * (W / r.width);
      if (px < m.l || px > W - m.r) return;
      const x = xt.lo + (px - m.l) / (W - m.l - m.r) * (xt.hi - xt.lo);
      cursor.setAttribute("x1", px); cursor.setAttribute("x2", px);
      cursor.setAttribute("visibility", "visible");
      this.showReadout(x);
    });
    root.addEventListener("mouseleave", () => {
      cursor.setAttribute("visibility", "hidden");
      this.readout.textContent = "";
    });
  }

  showReadout(x) {
    const parts = [];
    let at = null;
    for (const s of this.series.values()) {
      let best = null;
      for (const p of s.points) if (best === null || Math.abs(p[0] - x) < Math.abs(best[0] - x)) best = p;
      if (best) { parts.push(s.label + " " + UI.num(best[1])); at = at ?? best[0]; }
    }
    this.readout.textContent = (at !== null ? this.opts.xLabel + " " + UI.num(at) + " · " : "") +
      parts.join(" · ");
  }

  renderLegend() {
    UI.clear(this.legend);
    for (const s of this.series.values()) {
      const sw = UI.h("span", { class: "swatch" + (s.dashed ? " dashed" : "") });
      sw.style.borderTopColor = s.color;
      this.legend.appendChild(UI.h("span", {}, sw, s.label + " (" + s.points.length + ")"));
    }
  }
}

window.LineChart = LineChart;
