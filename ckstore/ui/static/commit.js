"use strict";
// Commit: metadata, environment, files, tensors with statistics, storage, probe and verdicts, notes, audit.

function kv(obj) {
  const rows = Object.entries(obj || {}).map(([k, v]) => [k, typeof v === "object" && v !== null ?
    el("code", {text: JSON.stringify(v)}) : num(v)]);
  return rows.length ? table(["key", "value"], rows) : el("p", {class: "muted", text: "none"});
}

function miniHist(counts) {
  // the stored 64-bin histogram as a sparkline: negative magnitudes left of the centre, positive right
  if (!counts) return null;
  const W = 96, H = 18, peak = Math.max(1, ...counts), bw = W / counts.length;
  const svg = el("svg:svg", {width: W, height: H, class: "minihist"});
  counts.forEach((c, i) => {
    if (c) svg.append(el("svg:rect", {x: i * bw, width: bw, y: H - c / peak * H, height: c / peak * H,
                                     fill: "#64748b"}));
  });
  return svg;
}

async function commitPage(view, rev) {
  view.replaceChildren(el("p", {class: "muted", text: "loading " + rev + " …"}));
  let c;
  try { c = await api("commit", {rev}); } catch (err) { showError(view, err); return; }
  const s = c.storage;
  const parent = (c.parents || [])[0];
  const refs = refBadges({branches: [], tags: [], aliases: [], ...classify(c.refs)});
  view.replaceChildren(
    el("h2", {}, el("span", {class: "mono", id: "commit-id", text: c.id}), " ", refs),
    el("p", {id: "commit-message", text: c.message}),
    el("p", {class: "muted"}, `${c.author} · ${when(c.time)}` + (c.step !== null ? ` · step ${c.step}` : "") +
       (c.describe ? ` · ${c.describe}` : ""), " ", verdictBadge(c.verdict ? c.verdict.passed : null),
       parent ? el("span", {}, " · ", el("a", {href: `#/diff/${parent}/${c.id}`, id: "diff-parent",
                                              text: "diff with parent " + short(parent)})) : null),
    el("div", {class: "cards", id: "storage"}, [["logical", s.logical], ["own frames", s.frames],
      ["new vs parents", s.new], ["stored with bases", s.stored], ["unique: dropping it frees", s.unique]].map(([k, v]) =>
      el("div", {class: "card"}, el("div", {class: "v", text: bytes(v)}), el("div", {class: "k", text: k})))),
    el("h3", {text: "Metrics"}), kv(c.metrics),
    el("h3", {text: "Parameters"}), kv(c.params),
    el("h3", {text: "Data, seeds and extra"}), kv({...c.meta.data, ...prefixed("seeds", c.meta.seeds),
                                                  ...prefixed("extra", c.meta.extra)}),
    el("h3", {text: "Environment"}), kv(c.env),
    el("h3", {text: `Files (${c.files.length})`}),
    table(["path", "size", "hash"], c.files.map((f) => [f.path, bytes(f.size), el("code", {text: f.hash.slice(0, 16)})]),
          {numeric: [1], attrs: {id: "files"}}),
    el("h3", {text: `Tensors (${c.tensors.length})`}),
    el("div", {class: "scroll"}, table(["name", "dtype", "shape", "size", "mean", "std", "min", "max", "L2", "zeros",
                                        "NaN", "Inf", "values"],
      c.tensors.map((t) => ({attrs: {class: "tensor", "data-name": t.name}, cells: [
        t.name, t.dtype, JSON.stringify(t.shape), bytes(t.nbytes), num(t.stats.mean), num(t.stats.std),
        num(t.stats.min), num(t.stats.max), num(t.stats.l2), num(t.stats.zeros), num(t.stats.nan), num(t.stats.inf),
        miniHist(t.stats.hist)]})), {numeric: [3, 4, 5, 6, 7, 8, 9, 10, 11], attrs: {id: "tensors"}})),
    el("h3", {text: "Probe and verdicts"}),
    c.probe ? el("div", {id: "probe"}, kv({loader: c.probe.loader, atol: c.probe.atol, rtol: c.probe.rtol,
                                           "made by": c.probe.made_by, "made at": c.probe.made_at ? when(c.probe.made_at) : null}),
                 table(["output", "dtype", "shape"], Object.entries(c.probe.outputs || {}).map(([k, o]) =>
                   [k, o.dtype, JSON.stringify(o.shape)])))
            : el("p", {class: "muted", text: "no probe"}),
    c.verdict ? table(["output", "passed", "detail"], (c.verdict.outputs || []).map((o) =>
      [o.name, o.passed ? "✓" : "✗", o.detail]), {attrs: {id: "verdict"}}) : null,
    el("h3", {text: "Notes"}), Object.keys(c.notes || {}).length ?
      el("div", {id: "notes"}, Object.entries(c.notes).filter(([ns]) => ns !== "verify").map(([ns, data]) =>
        el("div", {}, el("span", {class: "badge note", text: ns}), kv(data))))
      : el("p", {class: "muted", text: "no notes"}),
    el("h3", {text: "Audit"}),
    c.audit.length ? table(["seq", "when", "who", "action", "ref", "message"], c.audit.map((e) =>
      [e.seq, when(e.time), e.user, e.action, e.ref, e.message]), {attrs: {id: "audit"}})
      : el("p", {class: "muted", text: "no ref moved to or from this commit"}));
}

function prefixed(p, obj) {
  return Object.fromEntries(Object.entries(obj || {}).map(([k, v]) => [`${p}.${k}`, v]));
}

function classify(refs) {
  // show's refs are short names: "main", "tags/v1", "aliases/prod"
  const out = {branches: [], tags: [], aliases: []};
  for (const r of refs || []) {
    if (r.startsWith("tags/")) out.tags.push(r.slice(5));
    else if (r.startsWith("aliases/")) out.aliases.push(r.slice(8));
    else out.branches.push(r.replace(/^heads\//, ""));
  }
  return out;
}
