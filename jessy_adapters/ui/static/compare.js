/* jessy ui: a `jessy compare` folder. Figures from compare.json side by side (one column per
   backend, as compare.md); loss and LR of every backend's run overlaid, each read from
   /api/metrics with its own byte offset, so a refresh fetches only the new lines. */
"use strict";

(function () {
  const { h, clear, isNum } = UI;
  const key = document.body.dataset.key;
  const $ = (id) => document.getElementById(id);
  const loss = new LineChart($("loss-chart"), { yLabel: "loss" });
  const lr = new LineChart($("lr-chart"), { yLabel: "learning rate" });
  const offsets = {};

  const FIGURES = [["optimizer_steps", "optimizer steps (schedule)"], ["steps_done", "steps done"],
    ["first_eval_loss", "first eval loss"], ["final_eval_loss", "final eval loss"],
    ["final_train_loss", "final train loss"], ["trained_tokens", "trained tokens"],
    ["input_tokens", "input tokens"], ["seconds_per_step", "seconds per step"],
    ["input_tokens_per_second", "input tokens / s"],
    ["trained_tokens_per_second", "trained tokens / s"], ["peak_rss_gb", "peak RSS (GB)"],
    ["wall_s", "wall time (s)"]];
  const EVALS = [["held_out_accuracy", "held-out accuracy (tuned)"],
    ["general_accuracy", "general accuracy (tuned)"],
    ["validation_perplexity", "validation perplexity (tuned)"],
    ["validation_bleu", "validation BLEU (tuned)"]];

  function table(doc) {
    const rows = doc.backends;
    const thead = clear(document.querySelector("#figures thead"));
    const tbody = clear(document.querySelector("#figures tbody"));
    thead.appendChild(h("tr", {}, h("th", { text: "" }), rows.map((r) => h("th", { "data-backend": r.backend },
      r.run_key ? h("a", { href: UI.runUrl(r.run_key), text: r.backend }) : r.backend))));
    const line = (label, cells, attrs) => tbody.appendChild(h("tr", attrs || {}, h("th", { text: label }), cells));
    line("status", rows.map((r) => h("td", {}, UI.pill(r.live_status || r.status))));
    line("failure", rows.map((r) => h("td", { class: r.failure_class ? "reason" : "",
      text: r.failure_class ? r.failure_class + ": " + (r.reason || "") : "–" })));
    const winner = ((doc.report || {}).scoring || {}).winner;
    for (const [k, label] of FIGURES) {
      if (!rows.some((r) => r[k] !== undefined)) continue;
      line(label, rows.map((r) => h("td", { class: "num", text: UI.num(r[k]) })));
    }
    for (const [k, label] of EVALS) {
      if (!rows.some((r) => r.eval && r.eval.models && r.eval.models.tuned)) break;
      const v = (r) => ((r.eval || {}).models || {}).tuned ? r.eval.models.tuned[k] : null;
      line(label, rows.map((r) => h("td", { class: "num",
        text: k.endsWith("accuracy") ? UI.pct(v(r)) : UI.num(v(r)) })));
    }
    for (const part of ["quality", "speed", "memory", "total"]) {
      if (!rows.some((r) => r.score && isNum(r.score[part]))) continue;
      line("score: " + part, rows.map((r) => h("td", {
        class: "num" + (part === "total" && r.backend === winner ? " best" : ""),
        text: r.score ? UI.num(r.score[part], part === "total" ? 1 : 2) : "–" })));
    }
  }

  async function follow(r, n) {
    if (!r.run_key) return;
    const id = r.backend;
    for (;;) {
      const offset = offsets[id] || 0;
      const chunk = await UI.api("/api/metrics/" + UI.enc(r.run_key) + "?offset=" + offset);
      offsets[id] = chunk.offset;
      const c = UI.COLORS[n % UI.COLORS.length];
      for (const e of chunk.events) {
        if (e.type === "train" && isNum(e.loss)) loss.add("train-" + id, e.step, e.loss, { label: id + " train", color: c });
        if (isNum(e.eval_loss)) loss.add("eval-" + id, e.step, e.eval_loss, { label: id + " validation", color: c, dashed: true, markers: true });
        if (e.type === "train" && isNum(e.learning_rate)) lr.add("lr-" + id, e.step, e.learning_rate, { label: id, color: c });
      }
      if (chunk.offset === offset || chunk.offset >= chunk.size) break;
    }
  }

  let done = false, busy = false;
  async function refresh() {
    if (done || busy) return;  /* one refresh at a time: offsets advance once */
    busy = true;
    try {
      const doc = await UI.api("/api/compare/" + UI.enc(key));
      UI.setLive(true);
      const spec = (doc.report || {}).spec || {};
      $("compare-name").textContent = "compare: " + (doc.name || spec.name || doc.folder);
      document.title = $("compare-name").textContent + " · jessy ui";
      UI.crumbs([[doc.folder, null]]);
      const state = clear($("compare-state"));
      state.className = "";
      const running = doc.backends.some((r) => (r.live_status || r.status) === "running");
      state.appendChild(UI.pill(running ? "running" : doc.complete === false ? "interrupted" :
                                doc.complete ? "succeeded" : "running"));
      $("compare-error").hidden = !doc.error;
      $("compare-error").textContent = doc.error || "";
      const verdict = ((doc.report || {}).scoring || {}).verdict;
      $("verdict").hidden = !verdict;
      $("verdict").textContent = verdict || "";
      table(doc);
      await Promise.all(doc.backends.map((r, i) => follow(r, i).catch(() => null)));
      $("markdown-section").hidden = !doc.markdown;
      $("markdown").textContent = doc.markdown || "";
      done = !running && doc.complete !== undefined && doc.complete !== null;
      if (done) UI.setLive(null);
    } catch (e) {
      UI.setLive(false);
      $("compare-error").hidden = false;
      $("compare-error").textContent = "cannot load this comparison: " + e.message;
    } finally {
      busy = false;
    }
  }

  refresh();
  setInterval(refresh, 3000);
})();
