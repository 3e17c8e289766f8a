"use strict";
// Small SVG charts (line, histogram bars, stacked bars): every mark is an element a test or a reader can find.

function ticks(lo, hi, n) {
  if (!(hi > lo)) { const d = Math.abs(lo) || 1; lo -= d / 2; hi += d / 2; }
  const raw = (hi - lo) / Math.max(1, n);
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  return {lo, hi, ticks: out};
}

// series: [{label, color, points: [{x, y, id, message}]}]; opts: {width, height, xLabel, yLabel, xTime, onClick}
function lineChart(series, opts) {
  const W = opts.width || 900, H = opts.height || 380, m = {l: 64, r: 16, t: 12, b: 42};
  const all = series.flatMap((s) => s.points);
  const xs = ticks(Math.min(...all.map((p) => p.x)), Math.max(...all.map((p) => p.x)), 8);
  const ys = ticks(Math.min(...all.map((p) => p.y)), Math.max(...all.map((p) => p.y)), 6);
  const sx = (x) => m.l + (x - xs.lo) / (xs.hi - xs.lo) * (W - m.l - m.r);
  const sy = (y) => H - m.b - (y - ys.lo) / (ys.hi - ys.lo) * (H - m.t - m.b);
  const fmtX = opts.xTime ? (v) => when(v).slice(5) : num;
  const svg = el("svg:svg", {width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
                             "aria-label": opts.title || "chart"});
  const grid = el("svg:g", {class: "grid"}), axis = el("svg:g", {class: "axis"});
  for (const t of ys.ticks) {
    grid.append(el("svg:line", {x1: m.l, x2: W - m.r, y1: sy(t), y2: sy(t)}));
    axis.append(el("svg:text", {x: m.l - 6, y: sy(t) + 4, "text-anchor": "end", text: num(t)}));
  }
  for (const t of xs.ticks) axis.append(el("svg:text", {x: sx(t), y: H - m.b + 16, "text-anchor": "middle",
                                                        text: fmtX(t)}));
  axis.append(el("svg:line", {x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b}),
              el("svg:line", {x1: m.l, x2: m.l, y1: m.t, y2: H - m.b}),
              el("svg:text", {x: (W + m.l) / 2, y: H - 6, "text-anchor": "middle", text: opts.xLabel || ""}),
              el("svg:text", {x: 14, y: H / 2, transform: `rotate(-90 14 ${H / 2})`, "text-anchor": "middle",
                              text: opts.yLabel || ""}));
  svg.append(grid, axis);
  for (const s of series) {
    const g = el("svg:g", {class: "series", "data-label": s.label, "data-points": s.points.length});
    const d = s.points.map((p, i) => (i ? "L" : "M") + sx(p.x).toFixed(1) + "," + sy(p.y).toFixed(1)).join("");
    g.append(el("svg:path", {d, fill: "none", stroke: s.color, "stroke-width": 2}));
    for (const p of s.points) {
      const dot = el("svg:circle", {cx: sx(p.x), cy: sy(p.y), r: 3.5, fill: s.color, class: "point",
                                    "data-id": p.id, style: "cursor:pointer;pointer-events:all"});
      dot.addEventListener("mousemove", (e) => tooltip.show(e, `${s.label} · ${short(p.id)} · ${p.message}\n` +
                                                               `${opts.xLabel} ${fmtX(p.x)} → ${num(p.y)}`));
      dot.addEventListener("mouseleave", tooltip.hide);
      if (opts.onClick) dot.addEventListener("click", () => { tooltip.hide(); opts.onClick(p); });
      g.append(dot);
    }
    svg.append(g);
  }
  return svg;
}

// bars: [{lo, hi, a, b}] counts of two versions; drawn mirrored-free as two overlaid outlines
function histChart(bins, opts) {
  const W = opts.width || 900, H = opts.height || 240, m = {l: 56, r: 12, t: 10, b: 46};
  const peak = Math.max(1, ...bins.flatMap((b) => [b.a || 0, b.b || 0]));
  const bw = (W - m.l - m.r) / bins.length;
  const sy = (v) => H - m.b - v / peak * (H - m.t - m.b);
  const svg = el("svg:svg", {width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: "chart hist", role: "img",
                             "aria-label": opts.title || "histogram"});
  const axis = el("svg:g", {class: "axis"});
  axis.append(el("svg:line", {x1: m.l, x2: W - m.r, y1: H - m.b, y2: H - m.b}));
  for (const t of ticks(0, peak, 4).ticks) axis.append(el("svg:text", {x: m.l - 6, y: sy(t) + 4,
                                                                          "text-anchor": "end", text: num(t)}));
  bins.forEach((b, i) => {
    if (i % 8 === 0 || i === bins.length - 1) {
      axis.append(el("svg:text", {x: m.l + (i + 0.5) * bw, y: H - m.b + 14, "text-anchor": "middle",
                                  text: b.label}));
    }
  });
  axis.append(el("svg:text", {x: (W + m.l) / 2, y: H - 8, "text-anchor": "middle", text: opts.xLabel || ""}));
  svg.append(axis);
  for (const [key, color, cls] of [["a", "#94a3b8", "old"], ["b", "#2563eb", "new"]]) {
    const g = el("svg:g", {class: "bars " + cls});
    bins.forEach((b, i) => {
      if (b[key] === undefined) return;
      const r = el("svg:rect", {x: m.l + i * bw + (key === "b" ? bw * 0.45 : 0.5), width: bw * 0.5,
                                y: sy(b[key]), height: H - m.b - sy(b[key]), fill: color, class: "bar"});
      r.addEventListener("mousemove", (e) => tooltip.show(e, `${opts[key + "Label"] || key}: ${b.range} → ${b[key]}`));
      r.addEventListener("mouseleave", tooltip.hide);
      g.append(r);
    });
    svg.append(g);
  }
  return svg;
}

// rows: [{label, parts: [{key, value, color}]}] drawn as horizontal stacked bars with a value at the end
function stackedBars(rows, opts) {
  const W = opts.width || 900, rh = 22, m = {l: 220, r: 110, t: 6, b: 6};
  const H = m.t + m.b + rows.length * rh;
  const peak = Math.max(1, ...rows.map((r) => r.parts.reduce((s, p) => s + p.value, 0)));
  const sx = (v) => v / peak * (W - m.l - m.r);
  const svg = el("svg:svg", {width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: "chart bars", role: "img",
                             "aria-label": opts.title || "bars"});
  rows.forEach((r, i) => {
    const y = m.t + i * rh;
    const g = el("svg:g", {class: "barrow", "data-label": r.label});
    g.append(el("svg:text", {x: m.l - 8, y: y + 15, "text-anchor": "end", text: r.label}));
    let x = m.l;
    for (const p of r.parts) {
      const w = sx(p.value);
      const rect = el("svg:rect", {x, y: y + 3, width: Math.max(0, w), height: rh - 6, fill: p.color,
                                   "data-key": p.key, "data-value": p.value});
      rect.addEventListener("mousemove", (e) => tooltip.show(e, `${r.label}: ${p.key} ${bytes(p.value)}`));
      rect.addEventListener("mouseleave", tooltip.hide);
      if (opts.onClick) rect.addEventListener("click", () => opts.onClick(r));
      g.append(rect);
      x += w;
    }
    g.append(el("svg:text", {x: x + 6, y: y + 15, text: bytes(r.parts.reduce((s, p) => s + p.value, 0))}));
    svg.append(g);
  });
  return svg;
}
