"use strict";
// Shared helpers: DOM building (text only: nothing from the repository is ever parsed as HTML), the API, formats.
const SVGNS = "http://www.w3.org/2000/svg";

function el(tag, attrs, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVGNS, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k === "style") node.style.cssText = v;  // CSSOM, which the page's CSP allows (style attributes not)
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

async function api(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) if (v !== null && v !== undefined && v !== "") q.set(k, v);
  const res = await fetch("/api/" + path + (q.toString() ? "?" + q : ""), {credentials: "same-origin"});
  const data = await res.json();
  if (!res.ok) {
    const err = new Error(data.error || res.statusText);
    err.hint = data.hint;
    throw err;
  }
  return data;
}

function showError(target, err) {
  target.replaceChildren(el("div", {class: "error", role: "alert"}, "error: " + err.message,
                                   err.hint ? el("div", {class: "muted", text: "hint: " + err.hint}) : null));
}

const short = (id) => (id || "").slice(0, 12);

function num(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e6) ? v.toExponential(3) : v.toPrecision(5).replace(/\.?0+$/, "");
}

function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0, v = n;
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? String(v) : v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)) + " " + units[i];
}

function when(ts) {
  const d = new Date(ts * 1000);
  const pad = (x) => String(x).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777",
                 "#4b5563", "#65a30d"];
function colorOf(name, order) {
  // the palette for the first ten of `order`, then hues a golden angle apart, so no two branches share a colour
  const i = order ? order.indexOf(name) : -1;
  if (i >= 0) return i < PALETTE.length ? PALETTE[i] : `hsl(${(i * 137.508) % 360}, 62%, 42%)`;
  let h = 0;
  for (const ch of String(name || "")) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return PALETTE[h % PALETTE.length];
}

const tooltip = {
  show(evt, text) {
    const t = document.getElementById("tooltip");
    t.textContent = text;
    t.hidden = false;
    t.style.left = (evt.clientX + 12) + "px";
    t.style.top = (evt.clientY + 12) + "px";
  },
  hide() { document.getElementById("tooltip").hidden = true; },
};

function refBadges(c) {
  return [...(c.branches || []).map((b) => el("span", {class: "badge branch", text: b})),
          ...(c.tags || []).map((t) => el("span", {class: "badge tag", text: t})),
          ...(c.aliases || []).map((a) => el("span", {class: "badge alias", text: "@" + a}))];
}

function verdictBadge(v) {
  if (v === null || v === undefined) return null;
  return v ? el("span", {class: "badge pass", title: "ckstore verify passed", text: "✓ verified"})
           : el("span", {class: "badge fail", title: "ckstore verify failed", text: "✗ verify failed"});
}

function table(headers, rows, opts) {
  const numeric = (opts && opts.numeric) || [];
  return el("table", opts && opts.attrs,
            el("thead", {}, el("tr", {}, headers.map((h, i) => el("th", {class: numeric.includes(i) ? "num" : null,
                                                                        text: h})))),
            el("tbody", {}, rows.map((r) => el("tr", r.attrs || {}, (r.cells || r).map((c, i) =>
              el("td", {class: numeric.includes(i) ? "num" : null}, c))))));
}
