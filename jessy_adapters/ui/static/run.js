/* jessy ui: one run. The curves come from /api/events (server-sent events tailing
   metrics.jsonl from a byte offset; the browser resumes from the last offset by itself after
   a dropped connection); everything else from /api/run, fetched again when run.json changes. */
"use strict";

(function () {
  const { h, clear, isNum } = UI;
  const key = document.body.dataset.key;
  const $ = (id) => document.getElementById(id);
  const loss = new LineChart($("loss-chart"), { yLabel: "loss", empty: "waiting for the first loss" });
  const lr = new LineChart($("lr-chart"), { yLabel: "learning rate", empty: "no learning rate yet" });
  let detail = null, progress = null, status = null, attemptsSeen = -1, source = null;

  const color = (n) => UI.COLORS[((n || 1) - 1) % UI.COLORS.length];

  function onEvents(events) {
    for (const e of events) {
      const n = isNum(e.attempt) ? e.attempt : 1;
      const tag = "#" + n + (e.backend ? " " + e.backend : "");
      if (e.type === "train" && isNum(e.loss)) {
        loss.add("train-" + n, e.step, e.loss, { label: "train " + tag, color: color(n) });
      }
      if (isNum(e.eval_loss)) {
        loss.add("eval-" + n, e.step, e.eval_loss, { label: "validation " + tag, color: color(n),
                                                     dashed: true, markers: true });
      }
      if (e.type === "train" && isNum(e.learning_rate)) {
        lr.add("lr-" + n, e.step, e.learning_rate, { label: "lr " + tag, color: color(n) });
      }
    }
  }

  function renderProgress() {
    const p = progress || {};
    const facts = clear($("progress-facts"));
    const planned = p.steps_planned, done = p.steps_done;
    $("progress-bar").style.width = (isNum(p.fraction) ? 100 * p.fraction : 0) + "%";
    const running = status === "running";
    let eta = "–";
    if (running && detail && detail.stale) eta = "none: no jessy process holds this run";
    else if (running && isNum(p.finish_at)) eta = UI.duration(p.finish_at - Date.now() / 1000);
    else if (status && !["running", "unreadable", "unknown"].includes(status)) eta = "finished";
    let elapsed = detail ? detail.wall_s : null;
    if (running && detail && isNum(detail.started_at)) elapsed = Date.now() / 1000 - detail.started_at;
    const rate = isNum(p.trained_tokens_per_second) ? UI.num(p.trained_tokens_per_second, 1) +
      " trained, " + UI.num(p.input_tokens_per_second, 1) + " input"
      : isNum(p.backend_tokens_per_second) ? UI.num(p.backend_tokens_per_second, 1) + " (backend's own)" : "–";
    facts.append(
      UI.fact("step", (done ?? "–") + " / " + (planned ?? "–") +
        (isNum(p.fraction) ? "  (" + UI.pct(p.fraction) + ")" : ""), { "data-fact": "step" }),
      UI.fact("time left", eta, { "data-fact": "eta" }),
      UI.fact("elapsed", UI.duration(elapsed), { "data-fact": "elapsed" }),
      UI.fact("seconds / step", UI.num(p.seconds_per_step)),
      UI.fact("tokens / s", rate, { "data-fact": "tokens" }),
      UI.fact("peak RSS", isNum(p.peak_rss_gb) ? UI.num(p.peak_rss_gb, 2) + " GB" : "–",
              { "data-fact": "memory" }),
      UI.fact("backend's peak memory", isNum(p.backend_peak_memory_gb) ?
        UI.num(p.backend_peak_memory_gb, 2) + " GB" : "–"),
      UI.fact("last loss", UI.loss(p.last_loss)),
      UI.fact("last validation loss", UI.loss(p.last_eval_loss)),
      UI.fact("backend", p.backend ? "#" + p.attempt + " " + p.backend : "–"));
  }

  function logBlock(title, text, url, open, id) {
    if (text === null || text === undefined) return null;
    return h("details", { open: open, "data-id": id },
      h("summary", {}, title + " ", h("a", { href: url, target: "_blank", rel: "noopener",
                                              text: "whole file" })),
      h("pre", { class: "log", text: text || "(empty)" }));
  }

  function attempt(a) {
    const failed = a.status === "failed" || a.status === "skipped";
    const n = a.number;
    const body = h("div", { class: "attempt-body" },
      h("div", { class: "attempt-head" }, h("b", { text: "#" + n + " " + a.backend }),
        UI.pill(a.status), h("span", { class: "muted", text: [
          isNum(a.seconds) ? UI.duration(a.seconds) : null, a.device,
          isNum(a.exit_code) ? "exit " + a.exit_code : null,
          a.started ? "started " + UI.when(a.started) : null].filter(Boolean).join(" · ") })),
      a.availability ? h("div", { class: "muted", text: a.availability }) : null,
      a.failure ? h("div", { class: "reason", "data-kind": a.failure.kind },
        h("span", { class: "kind", text: a.failure.kind || "failure" }), ": " + (a.failure.reason || "")) : null,
      (a.notes || []).length ? h("ul", {}, a.notes.map((t) => h("li", { text: t }))) : null,
      a.continue_adapter ? h("div", { class: "muted", text: "next backend continued from " + a.continue_adapter }) : null);
    if (a.dir) {
      body.append(...[
        logBlock("stderr.log (last lines)", a.stderr_tail, UI.fileUrl(key, a.dir + "/stderr.log"),
                 failed, "stderr-" + n),
        logBlock("stdout.log (last lines)", a.stdout_tail, UI.fileUrl(key, a.dir + "/stdout.log"),
                 false, "stdout-" + n)].filter(Boolean));
      for (const f of a.files || []) {
        body.appendChild(h("details", { "data-id": "file-" + n + "-" + f.name, class: "native" },
          h("summary", {}, (f.name === "command.txt" ? "command: " : "native config: ") + f.name +
            " (" + UI.bytes(f.bytes) + (f.truncated ? ", cut" : "") + ") ",
            h("a", { href: UI.fileUrl(key, f.path), target: "_blank", rel: "noopener", text: "raw" })),
          h("pre", { class: "code", text: f.text })));
      }
    }
    const li = h("li", { class: "st-" + (UI.KNOWN.includes(a.status) ? a.status : "other"),
                         "data-attempt": n, "data-backend": a.backend, "data-status": a.status }, body);
    return li;
  }

  function renderEval(ev) {
    const box = clear($("eval"));
    $("eval-section").hidden = !ev;
    if (!ev) return;
    if (ev.error) { box.appendChild(h("p", { class: "error", text: ev.error })); return; }
    const base = (ev.models || {}).base || {}, tuned = (ev.models || {}).tuned || {};
    const metrics = [...new Set([...Object.keys(base), ...Object.keys(tuned)])];
    const fmt = (k, v) => (k.endsWith("accuracy") ? UI.pct(v) : UI.num(v));
    box.appendChild(h("table", { class: "grid", id: "eval-models" },
      h("thead", {}, h("tr", {}, h("th", { text: "metric" }), h("th", { text: "base" }),
                                  h("th", { text: "tuned" }))),
      h("tbody", {}, metrics.map((k) => h("tr", {}, h("td", { text: k.replace(/_/g, " ") }),
        h("td", { class: "num", text: fmt(k, base[k]) }),
        h("td", { class: "num", text: fmt(k, tuned[k]) }))))));
    if (isNum(ev.general_drop)) {
      box.appendChild(h("p", { class: "muted", text: "general-knowledge drop: " +
        (100 * ev.general_drop).toFixed(1) + " points" }));
    }
    for (const [name, rows] of Object.entries(ev.examples || {})) {
      const mark = (ok) => (ok === true ? "right" : ok === false ? "wrong" : "");
      box.appendChild(h("details", { open: true, "data-id": "eval-" + name },
        h("summary", { text: name.replace(/_/g, " ") + " questions (" + rows.length + ")" }),
        h("table", { class: "grid answers", "data-set": name },
          h("thead", {}, h("tr", {}, ["question", "expected", "base", "tuned"].map((t) => h("th", { text: t })))),
          h("tbody", {}, rows.map((r) => h("tr", {},
            h("td", { class: "prompt", text: r.prompt }),
            h("td", { text: Array.isArray(r.expected) ? r.expected.join(" | ") : (r.expected ?? "") }),
            h("td", { class: mark(r.base_correct), text: r.base ?? "" }),
            h("td", { class: mark(r.tuned_correct), text: (r.tuned ?? "") +
              (r.tuned_correct === true ? "  ✓" : r.tuned_correct === false ? "  ✗" : "") })))))));
    }
  }

  function renderExport(ex) {
    const box = clear($("export"));
    $("export-section").hidden = !ex;
    if (!ex) return;
    const verified = {};
    for (const g of ((ex.info || {}).gguf || [])) if (g && g.path) verified[g.path] = g;
    box.appendChild(h("table", { class: "grid", id: "export-files" },
      h("thead", {}, h("tr", {}, ["file", "size", "verified answer"].map((t) => h("th", { text: t })))),
      h("tbody", {}, ex.files.map((f) => {
        const v = verified[f.name];
        return h("tr", { "data-kind": f.kind }, h("td", { class: "mono", text: f.name }),
          h("td", { class: "num", text: UI.bytes(f.bytes) }),
          h("td", { text: v ? (v.question || "") + " → " + (v.answer || "") : "" }));
      }))));
    if (ex.error) box.appendChild(h("p", { class: "error", text: ex.error }));
    const mf = (ex.info || {}).modelfile || {};
    if (mf.import) box.appendChild(h("p", {}, "Import into Ollama: ", h("code", { text: mf.import })));
    if (ex.modelfile) {
      box.appendChild(h("details", { open: true, "data-id": "modelfile" }, h("summary", { text: "Modelfile" }),
                        h("pre", { class: "code", id: "modelfile", text: ex.modelfile })));
    }
  }

  function renderDetail() {
    const d = detail;
    status = d.status;
    document.title = d.name + " · jessy ui";
    $("run-name").textContent = d.name;
    $("run-id").textContent = d.run_id + "  (" + d.key + ")";
    const st = clear($("run-status"));
    st.className = "";
    st.appendChild(UI.pill(d.status));
    if (d.stale) st.appendChild(h("span", { class: "pill st-stale", text: "no process",
      title: "run.json says running but no jessy process holds the run: `jessy run --resume` continues it" }));
    $("run-error").hidden = !d.error;
    $("run-error").textContent = d.error || "";
    const crumbs = [];
    if (d.group) crumbs.push([d.group, null]);
    crumbs.push([d.name, null]);
    UI.crumbs(crumbs);
    const open = new Set([...document.querySelectorAll("details[data-id]")]
      .filter((x) => x.open).map((x) => x.dataset.id));
    const closed = new Set([...document.querySelectorAll("details[data-id]")]
      .filter((x) => !x.open).map((x) => x.dataset.id));
    const list = clear($("attempts"));
    for (const a of d.attempts) list.appendChild(attempt(a));
    if (!d.attempts.length) list.appendChild(h("li", { class: "muted", text: "no attempt yet" }));
    const summary = d.summary;
    $("summary-section").hidden = !summary;
    const sm = clear($("summary"));
    for (const [k, v] of Object.entries(summary || {})) {
      sm.appendChild(UI.fact(k.replace(/_/g, " "), typeof v === "number" ? UI.num(v) : String(v ?? "–")));
    }
    renderEval(d.eval);
    renderExport(d.export);
    $("spec-section").hidden = !d.spec;
    $("spec").textContent = d.spec ? d.spec.text + (d.spec.truncated ? "\n…" : "") : "";
    $("manifest").textContent = d.manifest ? JSON.stringify(d.manifest, null, 2) : "(unreadable)";
    for (const el of document.querySelectorAll("details[data-id]")) {
      if (open.has(el.dataset.id)) el.open = true;
      if (closed.has(el.dataset.id)) el.open = false;
    }
    if (!progress) progress = d.progress;
    renderProgress();
  }

  async function loadDetail() {
    try {
      detail = await UI.api("/api/run/" + UI.enc(key));
      renderDetail();
    } catch (e) {
      $("run-error").hidden = false;
      $("run-error").textContent = "cannot load this run: " + e.message;
    }
  }

  function connect() {
    source = new EventSource("/api/events/" + UI.enc(key));
    source.onopen = () => UI.setLive(true);
    source.onerror = () => { if (source.readyState !== EventSource.CLOSED) UI.setLive(false); };
    source.addEventListener("metrics", (m) => onEvents(JSON.parse(m.data).events));
    source.addEventListener("progress", (m) => { progress = JSON.parse(m.data); renderProgress(); });
    source.addEventListener("reset", () => { loss.reset(); lr.reset(); });
    source.addEventListener("run", (m) => {
      const r = JSON.parse(m.data);
      if (r.status !== status || r.attempts.length !== attemptsSeen) {
        attemptsSeen = r.attempts.length;
        loadDetail();
      }
    });
    source.addEventListener("end", () => {
      source.close();
      UI.setLive(null);
      loadDetail();
    });
  }

  loadDetail().then(connect);
  setInterval(() => { if (status === "running") renderProgress(); }, 1000);
  setInterval(() => { if (status === "running") loadDetail(); }, 5000);
})();
