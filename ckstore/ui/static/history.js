"use strict";
// History: the commit DAG in lanes (one SVG per page of rows), refs, key metrics, notes and verdicts; pages load
// as the list scrolls; a `find` query filters; two ticked commits open their diff.
const LANE = 14, ROW = 28, PAGE = 1000;

async function historyPage(view, params) {
  const where = params.get("where") || "";
  const input = el("input", {type: "text", id: "where", value: where, placeholder: "find query, e.g. metrics.loss < 0.5",
                             "aria-label": "filter"});
  const status = el("span", {class: "muted", id: "history-status"});
  const compare = el("button", {id: "compare", disabled: true, text: "Diff ticked"});
  const form = el("form", {class: "toolbar", onsubmit: (e) => {
    e.preventDefault();
    location.hash = "#/history" + (input.value.trim() ? "?where=" + encodeURIComponent(input.value.trim()) : "");
  }}, input, el("button", {type: "submit", text: "Filter"}), compare, status);
  const list = el("div", {class: "history", id: "history"});
  const sentinel = el("div", {id: "sentinel", style: "height:1px"});
  view.replaceChildren(el("h2", {text: "History"}), form, list, sentinel);
  const ticked = [];
  compare.addEventListener("click", () => { location.hash = `#/diff/${ticked[0]}/${ticked[1]}`; });
  const state = {offset: 0, total: null, loading: false, branches: [], laneColor: [], open: new Set()};

  async function more() {
    if (state.loading || (state.total !== null && state.offset >= state.total)) return;
    state.loading = true;
    try {
      const page = await api("history", {offset: state.offset, limit: PAGE, where});
      if (state.total === null) state.branches = Object.keys(page.refs.branches).sort();
      state.total = page.total;
      list.append(block(page, state, ticked, compare));
      state.offset += page.commits.length;
      status.textContent = where ? `${page.total} of ${page.all} commits match` : `${page.total} commits`;
      list.dataset.loaded = state.offset;
      list.dataset.total = page.total;
    } catch (err) {
      showError(status, err);
    } finally {
      state.loading = false;
    }
    if (state.offset < state.total && sentinel.getBoundingClientRect().top < window.innerHeight + 400) more();
  }
  new IntersectionObserver((entries) => { if (entries.some((e) => e.isIntersecting)) more(); },
                           {rootMargin: "400px"}).observe(sentinel);
  await more();
}

function block(page, state, ticked, compare) {
  const width = Math.max(1, page.width) * LANE + 8;
  const rows = page.commits;
  const svg = el("svg:svg", {class: "lanes", width, height: rows.length * ROW});
  const lines = el("svg:g", {}), dots = el("svg:g", {});
  const cx = (c) => 8 + c * LANE, cy = (i) => i * ROW + ROW / 2;
  const div = el("div", {class: "block"}, svg);
  rows.forEach((c, i) => {
    const color = colorOf(c.branch, state.branches);
    for (const [a, b, kind] of c.edges) {
      // a lane keeps the colour of the commit that opened it, so a branch's line is one colour down the page
      if (kind === "parent" && (a === b || !state.open.has(b))) state.laneColor[b] = color;
      const x1 = cx(a), x2 = cx(b), y1 = cy(i), y2 = cy(i + 1);
      const d = x1 === x2 ? `M${x1},${y1}L${x2},${y2}` : `M${x1},${y1}C${x1},${y1 + ROW * 0.6} ${x2},${y2 - ROW * 0.6} ${x2},${y2}`;
      lines.append(el("svg:path", {d, stroke: kind === "parent" ? color : state.laneColor[b] || "#cbd5e1", fill: "none", "stroke-width": 2,
                                   class: "edge"}));
    }
    state.open = new Set(c.edges.map((e) => e[1]));
    dots.append(el("svg:circle", {cx: cx(c.col), cy: cy(i), r: 5, fill: color, class: "node", "data-id": c.id}));
    const box = el("input", {type: "checkbox", "aria-label": "tick for diff", onclick: (e) => {
      e.stopPropagation();
      if (e.target.checked) ticked.push(c.id); else ticked.splice(ticked.indexOf(c.id), 1);
      while (ticked.length > 2) ticked.shift();
      compare.disabled = ticked.length !== 2;
    }});
    const metrics = Object.entries(c.metrics || {}).slice(0, 3).map(([k, v]) => `${k}=${num(v)}`).join("  ");
    div.append(el("div", {class: "row commit", "data-id": c.id, style: `padding-left:${width}px`,
                          onclick: () => { location.hash = "#/commit/" + c.id; }},
                  box, el("span", {class: "id", text: short(c.id)}), refBadges(c),
                  el("span", {class: "msg", text: c.message}),
                  c.step !== null && c.step !== undefined ? el("span", {class: "muted", text: "step " + c.step}) : null,
                  el("span", {class: "metrics", text: metrics}),
                  (c.notes || []).filter((n) => n !== "verify").map((n) => el("span", {class: "badge note", text: n})),
                  verdictBadge(c.verified),
                  el("span", {class: "muted", text: when(c.time)})));
  });
  svg.append(lines, dots);
  return div;
}
