"use strict";
// History: the commit DAG in lanes, refs, key metrics, notes and verdicts; a `find` query filters; two ticked
// commits open their diff. The list is windowed: the page is as tall as the whole history, but only the rows
// on screen (and a margin) exist in the document, drawn from pages of commits fetched when first needed — so
// 10,000 commits cost what 200 do, and jumping to the oldest fetches only the last page.
const LANE = 14, ROW = 28, PAGE = 1000, MARGIN = 60;

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
  view.replaceChildren(el("h2", {text: "History"}), form, list);
  const state = {where, rows: [], spans: new Map(), pages: new Map(), total: 0, width: 1, branches: [],
                 ticked: [], compare, list, shown: null, loaded: 0};
  compare.addEventListener("click", () => { location.hash = `#/diff/${state.ticked[0]}/${state.ticked[1]}`; });

  const first = await loadPage(state, 0);
  status.textContent = where ? `${first.total} of ${first.all} commits match` : `${first.total} commits`;
  list.style.height = state.total * ROW + "px";
  list.dataset.total = state.total;
  let queued = false;
  const onScroll = () => {
    if (!list.isConnected) {  // another page now
      window.removeEventListener("scroll", onScroll);
      window.removeEventListener("resize", onScroll);
      return;
    }
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => { queued = false; draw(state); });
  };
  window.addEventListener("scroll", onScroll, {passive: true});
  window.addEventListener("resize", onScroll, {passive: true});
  state.redraw = onScroll;
  draw(state);
}

function loadPage(state, index) {
  // each page is fetched once; its rows and the lanes crossing it join what the window can draw
  if (!state.pages.has(index)) {
    state.pages.set(index, api("history", {offset: index * PAGE, limit: PAGE, where: state.where}).then((page) => {
      if (!state.branches.length) {  // HEAD's branch takes the first colour
        const head = page.refs.head.branch;
        state.branches = [head, ...Object.keys(page.refs.branches).filter((b) => b !== head).sort()];
      }
      state.total = page.total;
      state.width = Math.max(1, page.width);
      page.commits.forEach((c, i) => { state.rows[page.offset + i] = c; });
      for (const s of page.spans) state.spans.set(`${s[0]}:${s[2]}`, s);
      state.loaded += page.commits.length;
      state.list.dataset.loaded = state.loaded;
      if (state.redraw) state.redraw();
      return page;
    }).catch((err) => {
      state.pages.delete(index);  // a later scroll tries again
      showError(document.getElementById("history-status"), err);
      throw err;
    }));
  }
  return state.pages.get(index);
}

function draw(state) {
  // the rows from MARGIN above the screen to MARGIN below it
  // (in steps of half a margin, so a scroll of a few rows redraws nothing)
  const top = state.list.getBoundingClientRect().top, step = MARGIN / 2;
  const from = Math.max(0, Math.floor((Math.floor(-top / ROW) - MARGIN) / step) * step);
  const to = Math.min(state.total, from + Math.ceil(window.innerHeight / ROW) + 3 * MARGIN);
  const missing = new Set();
  for (let g = from; g < to; g++) if (!state.rows[g]) missing.add(Math.floor(g / PAGE));
  for (const index of missing) loadPage(state, index).catch(() => {});
  const key = `${from}:${to}:${state.loaded}`;
  if (state.shown === key) return;
  state.shown = key;
  state.list.replaceChildren(windowOf(state, from, to));
  state.list.dataset.from = from;
  state.list.dataset.to = to;
}

function windowOf(state, from, to) {
  // Lines to parents: a short piece from each dot to its parent's lane on the next row; lanes that run
  // straight down (spans) are drawn whole in page coordinates and clipped to the window.
  const width = state.width * LANE + 8;
  const box = el("div", {class: "window", style: `top:${from * ROW}px;height:${(to - from) * ROW}px`});
  const svg = el("svg:svg", {class: "lanes", width, height: (to - from) * ROW});
  const g = el("svg:g", {transform: `translate(0,${-from * ROW})`});
  const cx = (c) => 8 + c * LANE, cy = (i) => i * ROW + ROW / 2;
  const line = (d, color, cls) => g.append(el("svg:path", {d, stroke: color, fill: "none", "stroke-width": 2,
                                                            class: cls}));
  for (const [a, b, col, branch] of state.spans.values()) {
    if (a < to && b > from) line(`M${cx(col)},${cy(a)}L${cx(col)},${cy(b)}`, colorOf(branch, state.branches), "lane");
  }
  const dots = [];
  for (let i = Math.max(0, from - 1); i < to; i++) {  // the row above the window reaches into it
    const c = state.rows[i];
    if (!c) continue;
    const color = colorOf(c.branch, state.branches);
    c.edges.forEach(([a, b], k) => {
      const x1 = cx(a), x2 = cx(b), y1 = cy(i), y2 = cy(i + 1);
      const d = x1 === x2 ? `M${x1},${y1}L${x2},${y2}` : `M${x1},${y1}C${x1},${y1 + ROW * 0.6} ${x2},${y2 - ROW * 0.6} ${x2},${y2}`;
      // a first parent's line has the branch's colour down to where it forked; a merged-in one its own branch's
      line(d, k === 0 ? color : colorOf(c.parent_branches[k] || c.branch, state.branches), "edge");
    });
    if (i >= from) dots.push(el("svg:circle", {cx: cx(c.col), cy: cy(i), r: 5, fill: color, class: "node", "data-id": c.id}));
  }
  g.append(...dots);
  svg.append(g);
  const frag = document.createDocumentFragment();
  for (let i = from; i < to; i++) {
    frag.append(state.rows[i] ? commitRow(state.rows[i], width, state)
                              : el("div", {class: "row pending", style: `padding-left:${width}px`, text: "…"}));
  }
  box.append(svg, frag);
  return box;
}

function commitRow(c, width, state) {
  const box = el("input", {type: "checkbox", "aria-label": "tick for diff", checked: state.ticked.includes(c.id),
                           onclick: (e) => {
    e.stopPropagation();
    if (e.target.checked) state.ticked.push(c.id); else state.ticked.splice(state.ticked.indexOf(c.id), 1);
    while (state.ticked.length > 2) state.ticked.shift();
    state.compare.disabled = state.ticked.length !== 2;
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
