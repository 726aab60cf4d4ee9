/* jessy ui: shared helpers. Every text from a run folder goes in through textContent (h()),
   never as HTML, so a log or spec can never run code in the page. */
"use strict";

const UI = {};

UI.h = function (tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    el.appendChild(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
};

UI.clear = function (el) { while (el.firstChild) el.removeChild(el.firstChild); return el; };

UI.api = async function (path) {
  const resp = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
  if (!resp.ok) {
    let why = resp.status + " " + resp.statusText;
    try { why = (await resp.json()).error || why; } catch (e) { /* not JSON */ }
    throw new Error(why);
  }
  return resp.json();
};

UI.enc = function (key) { return String(key).split("/").map(encodeURIComponent).join("/"); };
UI.runUrl = (key) => "/run/" + UI.enc(key);
UI.compareUrl = (key) => "/compare/" + UI.enc(key);
UI.sweepUrl = (key) => "/sweep/" + UI.enc(key);
UI.fileUrl = (key, path) => "/api/file/" + UI.enc(key) + "?path=" + encodeURIComponent(path);

UI.isNum = (v) => typeof v === "number" && isFinite(v);

UI.num = function (v, digits) {
  if (!UI.isNum(v)) return "–";
  if (digits !== undefined) return v.toFixed(digits);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(2);
  if (Number.isInteger(v)) return String(v);
  return a >= 100 ? v.toFixed(1) : a >= 1 ? v.toFixed(3) : v.toPrecision(3);
};

UI.loss = (v) => (UI.isNum(v) && Math.abs(v) >= 1e-2 && Math.abs(v) < 1e4 ? v.toFixed(3) : UI.num(v));

UI.pct = (v) => (UI.isNum(v) ? (100 * v).toFixed(1) + "%" : "–");

UI.duration = function (s) {
  if (!UI.isNum(s)) return "–";
  s = Math.max(0, s);
  if (s < 60) return s.toFixed(s < 10 ? 1 : 0) + " s";
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = Math.floor(s % 60);
  if (h) return h + " h " + String(m).padStart(2, "0") + " min";
  return m + " min " + String(sec).padStart(2, "0") + " s";
};

UI.bytes = function (n) {
  if (!UI.isNum(n)) return "–";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return (i ? n.toFixed(n < 10 ? 2 : 1) : n) + " " + units[i];
};

UI.when = function (epochOrText) {
  if (epochOrText === null || epochOrText === undefined) return "–";
  const d = UI.isNum(epochOrText) ? new Date(epochOrText * 1000)
    : new Date(String(epochOrText).replace(/([+-]\d\d)(\d\d)$/, "$1:$2"));
  if (isNaN(d)) return String(epochOrText);
  const pad = (x) => String(x).padStart(2, "0");
  return d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " +
    pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
};

UI.KNOWN = ["running", "succeeded", "failed", "interrupted", "skipped", "pruned", "unreadable",
            "complete", "fail"];  /* the last two: Optuna's trial states, lower-cased */

UI.pill = function (status, extra) {
  const s = status || "unknown";
  const cls = UI.KNOWN.includes(s) ? "st-" + s : "st-other";
  return UI.h("span", { class: "pill " + cls + (extra ? " " + extra : ""), "data-status": s,
                        text: s });
};

UI.fact = (label, value, attrs) =>
  UI.h("div", attrs || {}, UI.h("dt", { text: label }), UI.h("dd", { text: value }));

UI.setLive = function (state) {
  const el = document.getElementById("live");
  if (!el) return;
  el.className = "live " + (state === true ? "on" : state === false ? "off" : "");
  el.title = state === true ? "live: following the run folder" :
    state === false ? "not connected: retrying" : "not live (finished)";
};

UI.crumbs = function (items) {
  const nav = UI.clear(document.getElementById("crumbs"));
  nav.appendChild(UI.h("a", { href: "/", text: "runs" }));
  for (const [label, href] of items) {
    nav.appendChild(document.createTextNode(" / "));
    nav.appendChild(href ? UI.h("a", { href: href, text: label }) : UI.h("span", { text: label }));
  }
};

/* Series colours, one per attempt or backend, the same order everywhere. */
UI.COLORS = ["#2a6fdb", "#d9572b", "#1f8a4c", "#8e44ad", "#b8860b", "#17a2b8", "#c2185b",
             "#5d6d7e"];
