"use strict";
// The router: #/history, #/metrics, #/commit/REV, #/diff/A/B, #/storage; one page at a time in <main>.

async function route() {
  const view = document.getElementById("view");
  const [path, query] = (location.hash.slice(1) || "/history").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const params = new URLSearchParams(query || "");
  const page = parts[0] || "history";
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.page === page);
  tooltip.hide();
  document.body.dataset.ready = "";
  try {
    if (page === "history") await historyPage(view, params);
    else if (page === "metrics") await metricsPage(view, params);
    else if (page === "commit") await commitPage(view, parts.slice(1).join("/") || "HEAD");
    else if (page === "diff") await diffPage(view, parts[1], parts[2], params);
    else if (page === "storage") await storagePage(view, params);
    else view.replaceChildren(el("p", {class: "error", text: "no page " + page}));
  } catch (err) {
    showError(view, err);
  }
  document.body.dataset.ready = page;  // tests and screenshots wait for this
}

async function start() {
  try {
    const repo = await api("repo");
    window.ckstoreRefs = repo.refs;
    document.getElementById("repo-dir").textContent = repo.dir;
  } catch (err) {
    showError(document.getElementById("view"), err);
    return;
  }
  window.addEventListener("hashchange", route);
  await route();
}

start();
