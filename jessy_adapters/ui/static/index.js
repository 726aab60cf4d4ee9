/* jessy ui: the runs list. Polls /api/runs (a light document, cached server-side by file
   stats) and redraws only when its version changes; running rows' wall time ticks locally. */
"use strict";

(function () {
  const { h, clear } = UI;
  const tbody = document.querySelector("#runs tbody");
  const statusSel = document.getElementById("filter-status");
  const backendSel = document.getElementById("filter-backend");
  const nameInput = document.getElementById("filter-name");
  const params = new URLSearchParams(location.search);
  let doc = null, version = null;

  function options(select, values, wanted) {
    const current = select.value || wanted || "";
    clear(select).appendChild(h("option", { value: "", text: "all" }));
    for (const v of values) select.appendChild(h("option", { value: v, text: v }));
    if (current && !values.includes(current)) select.appendChild(h("option", { value: current, text: current }));
    select.value = current;
  }

  function groupLink(row) {
    if (!row.group) return h("span", { class: "muted", text: "" });
    const kind = doc.compares.some((c) => c.key === row.group) ? "compare" : "sweep";
    const url = kind === "compare" ? UI.compareUrl(row.group) : UI.sweepUrl(row.group);
    return h("a", { href: url, text: kind + " " + row.group.split("/").slice(1).join("/") });
  }

  function steps(row) {
    const done = UI.isNum(row.steps_done) ? row.steps_done : null;
    const planned = UI.isNum(row.steps_planned) ? row.steps_planned : null;
    const cell = h("td", { class: "num" }, (done ?? "–") + " / " + (planned ?? "–"));
    if (done !== null && planned) {
      const bar = h("span");
      bar.style.width = Math.min(100, 100 * done / planned) + "%";
      cell.appendChild(h("span", { class: "mini" }, bar));
    }
    return cell;
  }

  function row(r) {
    const status = h("td", {}, UI.pill(r.status));
    if (r.stale) status.appendChild(h("span", { class: "pill st-stale", title:
      "run.json says running but no jessy process holds the run: it was killed; " +
      "`jessy run --resume` continues it", text: "no process" }));
    if (r.error) status.appendChild(h("div", { class: "error", text: r.error }));
    const fallbacks = h("td", {}, r.fallbacks.map((f) => h("span", {
      class: "fallback", title: f.reason || "" }, f.backend + " ", h("span", { class: "kind",
      text: f.kind || f.status }))));
    const tr = h("tr", { "data-key": r.key, "data-status": r.status },
      h("td", {}, h("a", { href: UI.runUrl(r.key), text: r.name }),
        h("div", { class: "muted mono", text: r.run_id })),
      status,
      h("td", { text: r.winner || (r.plan || []).join(" → ") || "–" }),
      fallbacks,
      steps(r),
      h("td", { class: "num", text: UI.loss(r.final_loss) }),
      h("td", { class: "num wall", "data-started": r.status === "running" ? r.started_at : null,
                text: UI.duration(r.wall_s) }),
      h("td", { class: "num", text: UI.when(r.started || r.started_at) }),
      h("td", {}, groupLink(r)));
    return tr;
  }

  function render() {
    if (!doc) return;
    options(statusSel, doc.statuses, params.get("status"));
    options(backendSel, doc.backends, params.get("backend"));
    const st = statusSel.value, be = backendSel.value, name = nameInput.value.trim().toLowerCase();
    const rows = doc.runs.filter((r) => (!st || r.status === st) &&
      (!be || r.backends.includes(be)) &&
      (!name || (r.name + " " + r.run_id + " " + r.key).toLowerCase().includes(name)));
    clear(tbody);
    for (const r of rows) tbody.appendChild(row(r));
    document.getElementById("runs-empty").hidden = doc.runs.length > 0;
    document.getElementById("roots").textContent = "Folders: " + doc.roots.map((r) =>
      r.path + (r.exists ? "" : " (does not exist yet)")).join(", ");
    const ctb = clear(document.querySelector("#compares tbody"));
    for (const c of doc.compares) {
      ctb.appendChild(h("tr", { "data-key": c.key },
        h("td", {}, h("a", { href: UI.compareUrl(c.key), text: c.name || c.folder }),
          c.error ? h("div", { class: "error", text: c.error }) : null),
        h("td", {}, c.backends.map((b) => h("span", { class: "fallback" }, b.backend + " ",
          UI.pill(b.status || "running")))),
        h("td", { text: c.winner || "–" }),
        h("td", { text: c.complete === true ? "yes" : c.complete === false ? "no" : "–" }),
        h("td", { text: UI.when(c.updated) })));
    }
    document.getElementById("compares-section").hidden = !doc.compares.length;
    const stb = clear(document.querySelector("#sweeps tbody"));
    for (const s of doc.sweeps) {
      stb.appendChild(h("tr", { "data-key": s.key },
        h("td", {}, h("a", { href: UI.sweepUrl(s.key), text: s.name || s.folder }),
          s.error ? h("div", { class: "error", text: s.error }) : null),
        h("td", { class: "num", text: s.trials }),
        h("td", { text: Object.entries(s.states || {}).map(([k, v]) => k + " " + v).join(", ") })));
    }
    document.getElementById("sweeps-section").hidden = !doc.sweeps.length;
  }

  async function refresh() {
    try {
      const next = await UI.api("/api/runs");
      UI.setLive(true);
      if (next.version !== version) { doc = next; version = next.version; render(); }
    } catch (e) {
      UI.setLive(false);
    }
  }

  function tick() {
    for (const cell of document.querySelectorAll("td.wall[data-started]")) {
      const started = parseFloat(cell.dataset.started);
      if (isFinite(started)) cell.textContent = UI.duration(Date.now() / 1000 - started);
    }
  }

  for (const el of [statusSel, backendSel]) el.addEventListener("change", () => {
    const q = new URLSearchParams();
    if (statusSel.value) q.set("status", statusSel.value);
    if (backendSel.value) q.set("backend", backendSel.value);
    history.replaceState(null, "", q.toString() ? "?" + q : location.pathname);
    params.set("status", statusSel.value); params.set("backend", backendSel.value);
    render();
  });
  nameInput.addEventListener("input", render);
  UI.crumbs([]);
  refresh();
  setInterval(refresh, 2000);
  setInterval(tick, 1000);
})();
