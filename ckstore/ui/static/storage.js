"use strict";
// Storage: where the bytes go, from `du` — per commit, branch, tag or remote, the bytes only it keeps (unique)
// and those it shares; and the repository's bytes on disk by kind.

async function storagePage(view, params) {
  const by = params.get("by") || "branch";
  const tabs = el("div", {class: "toolbar"}, ["branch", "commit", "tag", "remote"].map((k) =>
    el("a", {href: "#/storage?by=" + k, class: k === by ? "badge branch" : "badge note", text: "by " + k})));
  const out = el("div", {id: "storage-view"});
  view.replaceChildren(el("h2", {text: "Storage"}), tabs, out);
  let r;
  try { r = await api("storage", {by}); } catch (err) { showError(out, err); return; }
  const rows = r.rows.filter((x) => x.kind !== "total").sort((x, y) => y.stored - x.stored);
  const disk = r.disk || {};
  const diskParts = [["referenced", "#2563eb"], ["unreferenced", "#f59e0b"], ["tombstones", "#9ca3af"],
                     ["overhead", "#cbd5e1"]].filter(([k]) => disk[k]).map(([k, color]) => ({key: k, value: disk[k], color}));
  out.replaceChildren(
    el("div", {class: "cards"}, Object.entries(disk).filter(([, v]) => typeof v === "number").map(([k, v]) =>
      el("div", {class: "card"}, el("div", {class: "v", text: bytes(v)}), el("div", {class: "k", text: k})))),
    diskParts.length ? el("div", {}, el("h3", {text: "On disk"}),
                          stackedBars([{label: "repository", parts: diskParts}], {title: "on disk"})) : null,
    el("h3", {text: `By ${by} (${rows.length})`}),
    el("div", {class: "legend"}, el("span", {}, el("i", {style: "background:#1d4ed8"}), "unique: dropping it frees"),
       el("span", {}, el("i", {style: "background:#93c5fd"}), "shared with others")),
    rows.length ? stackedBars(rows.map((x) => ({label: x.kind === "commit" ? short(x.name) : x.name, name: x.name,
      parts: [{key: "unique", value: x.unique, color: "#1d4ed8"}, {key: "shared", value: x.shared, color: "#93c5fd"}]})),
      {title: "by " + by, onClick: (row) => { if (by === "commit") location.hash = "#/commit/" + row.name; }})
      : el("p", {class: "muted", text: "nothing to show"}),
    rows.length ? duTable(rows) : null);
}

function duTable(rows) {
  // du's extra columns when it has them: replicas on remotes, where a remote's bytes are (tier), monthly cost
  const extras = [...new Set(rows.flatMap((x) => Object.keys(x.extra || {})))].sort();
  return table(["name", "logical", "stored", "unique", "shared", "commits", ...extras], rows.map((x) =>
    [x.name, bytes(x.logical), bytes(x.stored), bytes(x.unique), bytes(x.shared), x.commits,
     ...extras.map((k) => typeof (x.extra || {})[k] === "object" ? JSON.stringify(x.extra[k]) : num((x.extra || {})[k]))]),
    {numeric: [1, 2, 3, 4, 5], attrs: {id: "du"}});
}
