"use strict";
// Metrics: curves of a metric or note field over step, time or commit order, one line per branch, a dot per
// commit; hover names the commit, click opens it.

async function metricsPage(view, params) {
  const names = await api("metric-names");
  const choices = [...names.metrics, ...names.notes, ...names.params];
  const name = params.get("name") || choices[0] || "";
  const x = params.get("x") || "step", by = params.get("by") || "branch";
  const go = (patch) => {
    const q = new URLSearchParams({name, x, by, ...patch});
    location.hash = "#/metrics?" + q;
  };
  const pick = el("select", {id: "metric", "aria-label": "metric", onchange: (e) => go({name: e.target.value})},
                  choices.map((n) => el("option", {value: n, selected: n === name, text: n})));
  const xPick = el("select", {id: "x-axis", "aria-label": "x axis", onchange: (e) => go({x: e.target.value})},
                   ["step", "time", "index"].map((v) => el("option", {value: v, selected: v === x, text: "over " + v})));
  const byPick = el("select", {id: "by", "aria-label": "group", onchange: (e) => go({by: e.target.value})},
                    [["branch", "one line per branch"], ["none", "one line"]].map(([v, t]) =>
                      el("option", {value: v, selected: v === by, text: t})));
  const out = el("div", {id: "metric-chart"});
  view.replaceChildren(el("h2", {text: "Metrics"}), el("div", {class: "toolbar"}, pick, xPick, byPick), out);
  if (!name) { out.append(el("p", {class: "muted", text: "No commit has a numeric metric yet."})); return; }
  try {
    const data = await api("metrics", {name, x, by});
    if (!data.series.length) {
      out.append(el("p", {class: "muted", text: `No commit has ${name}` + (x === "step" ? " and a step" : "") + "."}));
      return;
    }
    const order = data.series.map((s) => s.label);
    const series = data.series.map((s) => ({...s, color: colorOf(s.label, order)}));
    out.dataset.series = series.length;
    out.append(el("div", {class: "legend"}, series.map((s) =>
                 el("span", {"data-label": s.label}, el("i", {style: `background:${s.color}`}),
                    `${s.label} (${s.points.length})`))),
               lineChart(series, {width: Math.min(1100, view.clientWidth - 20), xLabel: x, yLabel: name,
                                  xTime: x === "time", title: name,
                                  onClick: (p) => { location.hash = "#/commit/" + p.id; }}));
  } catch (err) {
    showError(out, err);
  }
}
