"use strict";
// History: the commit DAG in lanes (one SVG per page of rows), refs, key metrics, notes and verdicts; pages load
// as the list scrolls; a `find` query filters; two ticked commits open their diff.
const LANE = 14, ROW = 28, FIRST_PAGE = 300, PAGE = 2000;

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
  const state = {offset: 0, total: null, loading: false, branches: [], lanes: [], spill: [], next: null};

  const fetchPage = (offset) => api("history", {offset, limit: offset ? PAGE : FIRST_PAGE, where});
  async function more() {
    if (state.loading || (state.total !== null && state.offset >= state.total)) return;
    state.loading = true;
    try {
      // a small first page draws at once; each later page was fetched while the one before was read
      const page = await (state.next || fetchPage(state.offset));
      state.next = page.offset + page.commits.length < page.total ? fetchPage(page.offset + page.commits.length) : null;
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
    if (state.offset < state.total && near()) more();
  }
  // Load the next page whenever the end of the list comes within 400 px of the view: checked on every scroll
  // (once per frame) and after every page, so a fast scroll to the end never misses a page.
  let queued = false;
  const near = () => sentinel.getBoundingClientRect().top < window.innerHeight + 400;
  const onScroll = () => {
    if (!list.isConnected) { window.removeEventListener("scroll", onScroll); return; }  // another page now
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => { queued = false; if (near()) more(); });
  };
  window.addEventListener("scroll", onScroll, {passive: true});
  window.addEventListener("resize", onScroll, {passive: true});
  await more();
}

function block(page, state, ticked, compare) {
  // Lines to parents: a short piece from each dot to its parent's lane on the next row, then (for the lane's
  // opener) straight down to the parent's row. Every block's SVG draws in page-wide coordinates whatever line
  // crosses it, and the block's paint containment clips the rest: a block off screen can skip painting
  // (content-visibility) without cutting a line, and a branch is one path per block however long it is.
  const width = Math.max(1, page.width) * LANE + 8;
  const rows = page.commits, first = page.offset, last = first + rows.length;
  const svg = el("svg:svg", {class: "lanes", width, height: rows.length * ROW});
  const lines = el("svg:g", {transform: `translate(0,${-first * ROW})`});
  const dots = el("svg:g", {transform: `translate(0,${-first * ROW})`});
  const cx = (c) => 8 + c * LANE, cy = (g) => g * ROW + ROW / 2;
  const div = el("div", {class: "block", style: `height:${rows.length * ROW}px;contain-intrinsic-size:auto ${rows.length * ROW}px`}, svg);
  const frag = document.createDocumentFragment();
  const path = (d, color, cls) => lines.append(el("svg:path", {d, stroke: color, fill: "none", "stroke-width": 2,
                                                               class: cls}));
  for (const [d, color] of state.spill) path(d, color, "edge");  // the previous block's last pieces, lower half
  state.spill = [];
  rows.forEach((c, i) => {
    const g = first + i, color = colorOf(c.branch, state.branches);
    c.edges.forEach(([a, b, end], k) => {
      const x1 = cx(a), x2 = cx(b), y1 = cy(g), y2 = cy(g + 1);
      const d = x1 === x2 ? `M${x1},${y1}L${x2},${y2}` : `M${x1},${y1}C${x1},${y1 + ROW * 0.6} ${x2},${y2 - ROW * 0.6} ${x2},${y2}`;
      // a first parent's lane keeps the branch's colour down to where it forked; a merged-in parent's lane
      // takes that parent's branch colour
      const laneColor = a === b || k === 0 ? color : colorOf(c.parent_branches[k] || c.branch, state.branches);
      path(d, laneColor, "edge");
      if (g === last - 1) state.spill.push([d, laneColor]);
      if (end !== null && end > g + 1) state.lanes.push({col: b, from: g + 1, end, color: laneColor});
    });
    dots.append(el("svg:circle", {cx: cx(c.col), cy: cy(g), r: 5, fill: color, class: "node", "data-id": c.id}));
    frag.append(commitRow(c, width, ticked, compare));
  });
  state.lanes = state.lanes.filter((lane) => {
    if (lane.from < last && lane.end >= first) {
      path(`M${cx(lane.col)},${cy(lane.from)}L${cx(lane.col)},${cy(lane.end)}`, lane.color, "lane");
    }
    return lane.end >= last;  // still to be drawn in a later block
  });
  svg.append(lines, dots);
  div.append(frag);
  return div;
}

function commitRow(c, width, ticked, compare) {
  const box = el("input", {type: "checkbox", "aria-label": "tick for diff", onclick: (e) => {
    e.stopPropagation();
    if (e.target.checked) ticked.push(c.id); else ticked.splice(ticked.indexOf(c.id), 1);
    while (ticked.length > 2) ticked.shift();
    compare.disabled = ticked.length !== 2;
  }});
  const metrics = Object.entries(c.metrics || {}).slice(0, 3).map(([k, v]) => `${k}=${num(v)}`).join("  ");
  return el("div", {class: "row commit", "data-id": c.id, style: `padding-left:${width}px`,
                    onclick: () => { location.hash = "#/commit/" + c.id; }},
            box, el("span", {class: "id", text: short(c.id)}), refBadges(c),
            el("span", {class: "msg", text: c.message}),
            c.step !== null && c.step !== undefined ? el("span", {class: "muted", text: "step " + c.step}) : null,
            el("span", {class: "metrics", text: metrics}),
            (c.notes || []).filter((n) => n !== "verify").map((n) => el("span", {class: "badge note", text: n})),
            verdictBadge(c.verified),
            el("span", {class: "muted", text: when(c.time)}));
}
