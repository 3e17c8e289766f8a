"use strict";
// Diff: files and tensors changed, metric and param deltas, a per-layer heat map of relative change grouped by
// the tensor names' structure, and a chosen tensor's value histograms in both commits.

function heatColor(cell, peak, by) {
  if (!cell) return "#ffffff";
  if (cell.status === "unchanged") return "#eef2f7";
  if (cell.status === "added") return "#bbf7d0";
  if (cell.status === "removed") return "#fecaca";
  if (cell.status === "reshaped") return "#fde68a";
  let t;
  if (by === "frac") {
    t = Math.max(0, Math.min(1, cell.frac_changed || 0));  // the share of elements changed, 0 to 1
  } else {
    // ‖Δ‖/‖old‖ on a log scale over six decades below the largest change: small updates stay visible
    const v = Math.max(cell.rel_l2 || 0, 1e-12), top = Math.max(peak, 1e-12);
    t = Math.max(0, Math.min(1, 1 + Math.log10(v / top) / 6));
  }
  const light = 92 - t * 60;
  return `hsl(12, 85%, ${light}%)`;
}

function cellTitle(cell) {
  if (cell.status !== "changed") return `${cell.name}: ${cell.status}`;
  return `${cell.name}: ‖Δ‖/‖old‖ = ${num(cell.rel_l2)}, ${num(100 * (cell.frac_changed || 0))}% of elements changed`;
}

function heatMap(h, onPick, by) {
  const out = el("div", {class: "heat", id: "heat", "data-by": by});
  for (const g of h.groups) {
    out.append(el("h3", {text: `${g.name}.N (${g.rows.length} layers)`}),
      el("div", {class: "scroll"}, el("table", {"data-group": g.name},
        el("thead", {}, el("tr", {}, el("th", {}), g.cols.map((col) => el("th", {class: "col", text: col})))),
        el("tbody", {}, g.rows.map((r, i) => el("tr", {}, el("th", {text: `${g.name}.${r}`}),
          g.cells[i].map((cell) => cell ? el("td", {class: "cell", "data-name": cell.name, "data-status": cell.status,
                                                    style: `background:${heatColor(cell, h.max_rel_l2, by)}`,
                                                    title: cellTitle(cell), onclick: () => onPick(cell.name)})
                                        : el("td", {class: "empty"}))))))));
  }
  if (h.other.length) {
    out.append(el("h3", {text: "Other tensors"}),
      el("table", {"data-group": ""}, el("tbody", {}, h.other.map((cell) => el("tr", {},
        el("th", {text: cell.name}), el("td", {class: "cell", "data-name": cell.name, "data-status": cell.status,
                                              style: `background:${heatColor(cell, h.max_rel_l2, by)}`,
                                              title: cellTitle(cell), onclick: () => onPick(cell.name)}))))));
  }
  return out;
}

async function diffPage(view, a, b, params) {
  const ia = el("input", {type: "text", id: "rev-a", value: a || "", placeholder: "older (e.g. HEAD~1)"});
  const ib = el("input", {type: "text", id: "rev-b", value: b || "", placeholder: "newer (e.g. HEAD)"});
  const form = el("form", {class: "toolbar", onsubmit: (e) => {
    e.preventDefault();
    location.hash = `#/diff/${encodeURIComponent(ia.value.trim())}/${encodeURIComponent(ib.value.trim())}`;
  }}, ia, ib, el("button", {type: "submit", text: "Compare"}));
  const out = el("div", {id: "diff"});
  view.replaceChildren(el("h2", {text: "Diff"}), form, out);
  if (!a) { a = "HEAD~1"; b = b || "HEAD"; ia.value = a; ib.value = b; }
  let d;
  try { d = await api("diff", {a, b}); } catch (err) { showError(out, err); return; }
  const s = d.summary, t = d.tensors;
  const histBox = el("div", {id: "hist"});
  const pick = (name) => {
    for (const c of out.querySelectorAll("td.cell.sel")) c.classList.remove("sel");
    for (const c of out.querySelectorAll(`td.cell[data-name="${CSS.escape(name)}"]`)) c.classList.add("sel");
    showHist(histBox, d.old, d.new, name);
  };
  const metricRows = Object.entries(d.metrics || {}).map(([k, m]) => [k, num(m.old), num(m.new), num(m.delta)]);
  const params_ = (d.metadata && d.metadata.params) || {};
  out.replaceChildren(
    el("p", {}, el("a", {href: "#/commit/" + d.old, class: "mono", text: short(d.old)}), " → ",
       el("a", {href: "#/commit/" + d.new, class: "mono", text: short(d.new)})),
    el("div", {class: "cards", id: "diff-summary"}, [["tensors changed", s.tensors_changed],
      ["added", s.tensors_added], ["removed", s.tensors_removed], ["unchanged", s.tensors_unchanged],
      ["largest ‖Δ‖/‖old‖", num(s.max_rel_l2)], ["new stored", bytes(s.stored_bytes_added)]].map(([k, v]) =>
      el("div", {class: "card"}, el("div", {class: "v", text: v}), el("div", {class: "k", text: k})))),
    el("h3", {text: "Metrics"}), metricRows.length ? table(["metric", "old", "new", "Δ"], metricRows,
                                                          {numeric: [1, 2, 3], attrs: {id: "metric-deltas"}})
      : el("p", {class: "muted", text: "no metrics"}),
    el("h3", {text: "Parameters"}), kv(Object.fromEntries(Object.entries(params_).map(([k, v]) =>
      [k, v && typeof v === "object" && "old" in v ? `${num(v.old)} → ${num(v.new)}` : v]))),
    el("h3", {text: "Files"}), table(["change", "path"], [
      ...d.files.added.map((p) => ["added", p]), ...d.files.removed.map((p) => ["removed", p]),
      ...d.files.changed.map((p) => ["changed", p])], {attrs: {id: "files-changed"}}),
    el("h3", {text: "Per-layer change"}),
    el("div", {class: "toolbar"}, el("select", {id: "heat-by", "aria-label": "colour by", onchange: (e) => {
      out.querySelector("#heat").replaceWith(heatMap(d.heat, pick, e.target.value));
    }}, el("option", {value: "rel", text: "colour by ‖Δ‖/‖old‖ (log)"}),
        el("option", {value: "frac", text: "colour by fraction of elements changed"}))),
    heatMap(d.heat, pick, "rel"),
    el("h3", {text: "Changed tensors"}),
    table(["tensor", "‖Δ‖/‖old‖", "changed", "cosine", "max |Δ|"], t.changed.map((c) => ({
      attrs: {class: "changed", "data-name": c.name, style: "cursor:pointer", onclick: () => pick(c.name)},
      cells: [c.name, num(c.rel_l2), c.frac_changed !== undefined ? num(100 * c.frac_changed) + "%" : "shape",
              num(c.cosine), num(c.max_abs)]})), {numeric: [1, 2, 3, 4], attrs: {id: "tensors-changed"}}),
    el("h3", {text: "Values"}), histBox);
  const first = params.get("tensor") || (t.changed[0] && t.changed[0].name);
  if (first) pick(first);
}

async function showHist(box, a, b, name) {
  box.replaceChildren(el("p", {class: "muted", text: "loading histograms of " + name + " …"}));
  const get = (rev) => api("hist", {rev, tensor: name}).catch(() => null);
  const [ha, hb] = await Promise.all([a ? get(a) : null, get(b)]);
  const any = hb || ha;
  if (!any) { box.replaceChildren(el("p", {class: "muted", text: "no histogram for " + name})); return; }
  const bins = any.counts.map((_, i) => {
    const lo = any.edges[i], hi = any.edges[i + 1];
    return {lo, hi, a: ha ? ha.counts[i] : undefined, b: hb ? hb.counts[i] : undefined,
            label: num(lo), range: `[${num(lo)}, ${num(hi)})`};
  });
  const sampled = (h) => h.hist_of && h.hist_of < h.count ?
    `, bins over a 1-in-${+(h.count / h.hist_of).toPrecision(3)} sample` : "";
  const extra = (h) => h ? `zeros ${h.zeros}, NaN ${h.nan}, Inf ${h.inf}${sampled(h)}` : "absent";
  box.replaceChildren(el("p", {id: "hist-name", "data-name": name}, el("b", {text: name}), " — old ",
                         el("span", {class: "legend"}, el("i", {style: "background:#94a3b8"})), extra(ha), "; new ",
                         el("span", {class: "legend"}, el("i", {style: "background:#2563eb"})), extra(hb)),
                      histChart(bins, {xLabel: "value (log-spaced magnitude bins, sign-split)",
                                       aLabel: short(a), bLabel: short(b), title: name}));
}
