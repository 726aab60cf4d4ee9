/* jessy ui: a `jessy sweep` folder. sweep.json is read defensively (the sweep is younger
   than the dashboard): trials with their parameters, state, values and run; the first
   objective by trial, with the best so far. */
"use strict";

(function () {
  const { h, clear, isNum } = UI;
  const key = document.body.dataset.key;
  const $ = (id) => document.getElementById(id);
  const chart = new LineChart($("history-chart"), { xLabel: "trial", yLabel: "objective",
                                                    empty: "no finished trial yet" });
  let lastVersion = null;

  const show = (v) => (v === null || v === undefined ? "–" : typeof v === "number" ? UI.num(v)
    : typeof v === "object" ? JSON.stringify(v) : String(v));

  function firstValue(t) {
    if (Array.isArray(t.values)) return t.values.find(isNum);
    if (t.values && typeof t.values === "object") return Object.values(t.values).find(isNum);
    return undefined;
  }

  function direction(sweep) {
    const d = sweep.directions || sweep.direction;
    const first = Array.isArray(d) ? d[0] : d;
    return String(first || "").toLowerCase().startsWith("max") ? "max" : "min";
  }

  function render(doc) {
    const sweep = doc.sweep || {};
    $("sweep-name").textContent = "sweep: " + (doc.name || doc.folder);
    document.title = $("sweep-name").textContent + " · jessy ui";
    UI.crumbs([[doc.folder, null]]);
    $("sweep-error").hidden = !doc.error;
    $("sweep-error").textContent = doc.error || "";
    const facts = clear($("sweep-facts"));
    facts.appendChild(UI.fact("trials", String(doc.trials.length)));
    for (const [k, v] of Object.entries(doc.states || {})) facts.appendChild(UI.fact(k, String(v)));
    for (const [k, v] of Object.entries(sweep)) {
      if (["name"].includes(k)) continue;
      facts.appendChild(UI.fact(k.replace(/_/g, " "), show(v)));
    }
    const params = [...new Set(doc.trials.flatMap((t) => Object.keys(t.params || {})))];
    const valueNames = [...new Set(doc.trials.flatMap((t) =>
      t.values && !Array.isArray(t.values) && typeof t.values === "object" ? Object.keys(t.values) : []))];
    const nValues = Math.max(0, ...doc.trials.map((t) => (Array.isArray(t.values) ? t.values.length : 0)));
    const valueCols = valueNames.length ? valueNames : Array.from({ length: nValues }, (_, i) => "value " + (i + 1));
    clear(document.querySelector("#trials thead")).appendChild(h("tr", {},
      ["trial", "state", ...params, ...valueCols, "run"].map((t) => h("th", { text: t }))));
    const best = direction(sweep) === "max" ? Math.max : Math.min;
    const scored = doc.trials.map(firstValue).filter(isNum);
    const bestValue = scored.length ? best(...scored) : null;
    const tbody = clear(document.querySelector("#trials tbody"));
    for (const t of doc.trials) {
      const values = valueNames.length ? valueNames.map((k) => (t.values || {})[k])
        : valueCols.map((_, i) => (Array.isArray(t.values) ? t.values[i] : undefined));
      tbody.appendChild(h("tr", { "data-trial": t.number, "data-state": t.state,
                                  class: firstValue(t) === bestValue && isNum(bestValue) ? "best" : "" },
        h("td", { class: "num", text: show(t.number) }),
        h("td", {}, UI.pill(t.state ? String(t.state).toLowerCase() : "unknown")),
        params.map((p) => h("td", { class: "num", text: show((t.params || {})[p]) })),
        values.map((v) => h("td", { class: "num", text: show(v) })),
        h("td", {}, t.run_key ? h("a", { href: UI.runUrl(t.run_key), text: t.run_status || "run" })
          : h("span", { class: "muted", text: t.run_dir ? "(not under --runs)" : "–" }))));
    }
    chart.reset();
    let bestSoFar = null;
    const ordered = doc.trials.filter((t) => isNum(t.number) && isNum(firstValue(t)))
      .sort((a, b) => a.number - b.number);
    for (const t of ordered) {
      const v = firstValue(t);
      chart.add("trials", t.number, v, { label: "trial", scatter: true, color: UI.COLORS[0] });
      bestSoFar = bestSoFar === null ? v : best(bestSoFar, v);
      chart.add("best", t.number, bestSoFar, { label: "best so far", color: UI.COLORS[2] });
    }
    $("markdown-section").hidden = !doc.markdown;
    $("markdown").textContent = doc.markdown || "";
  }

  async function refresh() {
    try {
      const doc = await UI.api("/api/sweep/" + UI.enc(key));
      UI.setLive(true);
      const version = JSON.stringify(doc);
      if (version !== lastVersion) { lastVersion = version; render(doc); }
    } catch (e) {
      UI.setLive(false);
      $("sweep-error").hidden = false;
      $("sweep-error").textContent = "cannot load this sweep: " + e.message;
    }
  }

  refresh();
  setInterval(refresh, 3000);
})();
