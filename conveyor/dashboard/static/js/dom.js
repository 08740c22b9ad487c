// Small DOM helpers: elements without innerHTML, and the formats every view shares.

const SVG_NS = "http://www.w3.org/2000/svg";

function setAttrs(el, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.setAttribute("class", v);
    else if (k === "text") el.textContent = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
}

export function append(el, ...children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

/** h("a", {href: "#/x", class: "y"}, "text", child) */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  return append(el, children);
}

export function svg(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  return append(el, children);
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

let ids = 0;
export function uid(prefix = "id") {
  ids += 1;
  return `${prefix}-${ids}`;
}

const numberFormat = new Intl.NumberFormat();
export const fmtNumber = (n) => numberFormat.format(n);

export function parseTime(iso) {
  return iso ? Date.parse(iso) : NaN;
}

export function fmtAge(iso, now = Date.now()) {
  const t = parseTime(iso);
  if (Number.isNaN(t)) return "–";
  const s = Math.max(0, (now - t) / 1000);
  if (s < 60) return `${Math.floor(s)} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return "–";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  const m = Math.floor(seconds / 60);
  if (m < 60) return `${m} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** A task's duration: finished ones from their record, running ones up to now. */
export function taskDuration(task, now = Date.now()) {
  if (typeof task.duration === "number" && task.finished_at) return task.duration;
  const started = parseTime(task.started_at);
  if (Number.isNaN(started)) return null;
  const end = task.finished_at ? parseTime(task.finished_at) : now;
  return Math.max(0, (end - started) / 1000);
}

export function fmtTime(iso) {
  const t = parseTime(iso);
  return Number.isNaN(t) ? "–" : new Date(t).toLocaleString();
}

export function fmtBytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i += 1;
  }
  return `${i ? v.toFixed(1) : v} ${units[i]}`;
}

export const FINAL = new Set(["SUCCESS", "FAILURE", "CANCELLED"]);
export const STATES = ["PENDING", "PROCESSING", "RETRY", "SUCCESS", "FAILURE", "CANCELLED"];
const GLYPH = { PENDING: "◷", PROCESSING: "▶", RETRY: "↻", SUCCESS: "✓", FAILURE: "✕", CANCELLED: "⊘" };

export function stateBadge(state) {
  const el = h("span", { class: "badge" });
  setBadge(el, state);
  return el;
}

export function setBadge(el, state) {
  if (el.dataset.state === state) return;
  el.dataset.state = state;
  el.className = `badge state-${state}`;
  clear(el).append(h("span", { "aria-hidden": "true", class: "glyph" }, GLYPH[state] || "•"), ` ${state}`);
}

/** A labelled progress bar (role=progressbar) that setProgress moves. */
export function progressBar(label) {
  const fill = h("span", { class: "bar-fill" });
  return h(
    "div",
    { class: "bar", role: "progressbar", "aria-valuemin": 0, "aria-valuemax": 100, "aria-label": label },
    fill,
  );
}

export function setProgress(bar, value, state, text) {
  const v = Math.max(0, Math.min(100, Number(value) || 0));
  const rounded = Math.round(v * 10) / 10;
  if (bar.getAttribute("aria-valuenow") !== String(rounded)) {
    bar.setAttribute("aria-valuenow", String(rounded));
    bar.firstChild.style.width = `${v}%`;
  }
  if (text) bar.setAttribute("aria-valuetext", text);
  else bar.removeAttribute("aria-valuetext");
  if (state) bar.dataset.state = state;
}

/** The end of an id: ids are UUIDv7, whose first digits are a timestamp shared by tasks of one moment. */
export function shortId(id) {
  return id ? `…${id.slice(-8)}` : "";
}

/** Text for an ApiError (or anything thrown). */
export function errorText(e) {
  if (!e) return "Something went wrong.";
  if (e.status === 0) return e.message;
  return e.status ? `${e.message} (HTTP ${e.status})` : String(e.message || e);
}
