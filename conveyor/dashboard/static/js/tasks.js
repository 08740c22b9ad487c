// The tasks table: one page at a time from the server, rows kept live by
// Server-Sent Events for the page's unfinished tasks, polling when SSE fails.

import { api, events } from "./api.js";
import {
  FINAL,
  STATES,
  clear,
  errorText,
  fmtAge,
  fmtDuration,
  fmtNumber,
  h,
  progressBar,
  setBadge,
  setProgress,
  shortId,
  stateBadge,
  taskDuration,
  uid,
} from "./dom.js";

const PAGE_SIZES = [25, 50, 100];
/** how often the page is re-read: to show new tasks (live) or every change (polling) */
const REFRESH_LIVE = 5000;
const REFRESH_POLLING = 2000;
/** after SSE fails, poll this long before trying it again */
const SSE_BACKOFF = 30000;

export function tasksView(root, { query }, ctx) {
  const size = Number(query.get("size"));
  const filters = {
    status: query.get("status") || "",
    type: query.get("type") || "",
    queue: query.get("queue") || "",
    q: query.get("q") || "",
    page: Math.max(1, Number.parseInt(query.get("page") || "1", 10) || 1),
    size: PAGE_SIZES.includes(size) ? size : 50,
  };
  const rows = new Map();
  let total = 0;
  let inflight = null;
  let refreshTimer = null;
  let es = null;
  let watchedKey = "";
  let sseErrors = 0;
  let sseBlockedUntil = 0;
  let mode = "live";
  let disposed = false;

  // -- the page ------------------------------------------------------------------
  const select = (label, name, options, value) => {
    const id = uid(`f-${name}`);
    const el = h("select", { id, name });
    for (const [v, text] of options) el.append(h("option", { value: v, selected: v === value }, text));
    return [h("div", { class: "field inline" }, h("label", { for: id }, label), el), el];
  };
  const [stateField, stateSelect] = select(
    "State",
    "status",
    [["", "All states"], ...STATES.map((s) => [s, s])],
    filters.status,
  );
  const [typeField, typeSelect] = select("Type", "type", [["", "All types"]], filters.type);
  const [queueField, queueSelect] = select("Queue", "queue", [["", "All queues"]], filters.queue);
  const [sizeField, sizeSelect] = select(
    "Rows",
    "size",
    PAGE_SIZES.map((n) => [String(n), String(n)]),
    String(filters.size),
  );
  const searchId = uid("f-q");
  const search = h("input", {
    id: searchId,
    name: "q",
    type: "search",
    value: filters.q,
    maxlength: 36,
    placeholder: "id prefix",
    autocomplete: "off",
    spellcheck: "false",
  });
  const searchField = h("div", { class: "field inline" }, h("label", { for: searchId }, "Task id"), search);
  const filterForm = h(
    "form",
    { class: "filters", role: "search", "aria-label": "Filter tasks" },
    stateField,
    typeField,
    queueField,
    searchField,
    sizeField,
  );

  const summary = h("p", { class: "summary", id: uid("summary") }, "Loading tasks…");
  const modeBadge = h("span", { class: "mode", "data-mode": "live" }, "Live");
  const alert = h("div", { class: "notice error", role: "alert", hidden: true });
  const tbody = h("tbody");
  const table = h(
    "table",
    { class: "tasks", "aria-describedby": summary.id },
    h("caption", { class: "visually-hidden" }, "Tasks, newest first"),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", { scope: "col" }, "State"),
        h("th", { scope: "col" }, "Task"),
        h("th", { scope: "col" }, "Progress"),
        h("th", { scope: "col" }, "Message"),
        h("th", { scope: "col" }, "Age"),
        h("th", { scope: "col" }, "Duration"),
      ),
    ),
    tbody,
  );
  const empty = h("p", { class: "empty", hidden: true }, "No tasks match. ", h("a", { href: "#/submit" }, "Submit one."));
  const pageLabel = h("span", { class: "page-label", "aria-live": "polite" });
  const btn = (text, label, onclick) =>
    h("button", { type: "button", class: "button small", "aria-label": label, onclick }, text);
  const first = btn("« First", "First page", () => go(1));
  const prev = btn("‹ Previous", "Previous page", () => go(filters.page - 1));
  const next = btn("Next ›", "Next page", () => go(filters.page + 1));
  const last = btn("Last »", "Last page", () => go(pages()));
  const pager = h("nav", { class: "pager", "aria-label": "Pages of tasks" }, first, prev, pageLabel, next, last);

  root.append(
    h("div", { class: "page-head" }, h("h1", {}, "Tasks"), modeBadge),
    filterForm,
    alert,
    h("div", { class: "summary-row" }, summary),
    h("div", { class: "table-wrap" }, table),
    empty,
    pager,
  );

  // Type and queue choices come from the registry, never from scanning tasks.
  ctx
    .taskTypes()
    .then((types) => {
      if (disposed) return;
      for (const t of types) typeSelect.append(h("option", { value: t.name, selected: t.name === filters.type }, t.name));
      const queues = [...new Set(types.map((t) => t.queue))].sort();
      for (const q of queues) queueSelect.append(h("option", { value: q, selected: q === filters.queue }, q));
    })
    .catch(() => {});

  // -- state in the address ----------------------------------------------------------
  function syncHash() {
    const p = new URLSearchParams();
    for (const k of ["status", "type", "queue", "q"]) if (filters[k]) p.set(k, filters[k]);
    if (filters.page > 1) p.set("page", String(filters.page));
    if (filters.size !== 50) p.set("size", String(filters.size));
    const qs = p.toString();
    history.replaceState(null, "", `#/tasks${qs ? `?${qs}` : ""}`);
  }

  const pages = () => Math.max(1, Math.ceil(total / filters.size));

  function go(page) {
    filters.page = Math.min(Math.max(1, page), pages());
    syncHash();
    load();
  }

  function onFilter() {
    filters.status = stateSelect.value;
    filters.type = typeSelect.value;
    filters.queue = queueSelect.value;
    filters.size = Number(sizeSelect.value);
    filters.q = search.value.trim();
    filters.page = 1;
    syncHash();
    load();
  }
  for (const el of [stateSelect, typeSelect, queueSelect, sizeSelect]) el.addEventListener("change", onFilter);
  let searchTimer = null;
  search.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(onFilter, 300);
  });
  filterForm.addEventListener("submit", (e) => {
    e.preventDefault();
    onFilter();
  });

  // -- loading one page ----------------------------------------------------------------
  async function load() {
    clearTimeout(refreshTimer);
    if (inflight) inflight.abort();
    const controller = new AbortController();
    inflight = controller;
    try {
      const page = await api("/api/v1/tasks", {
        signal: controller.signal,
        query: {
          status: filters.status,
          type: filters.type,
          queue: filters.queue,
          q: filters.q,
          limit: filters.size,
          offset: (filters.page - 1) * filters.size,
        },
      });
      if (disposed || controller.signal.aborted) return;
      total = page.count;
      if (filters.page > pages() && total > 0) {
        filters.page = pages();
        syncHash();
        inflight = null;
        load();
        return;
      }
      alert.hidden = true;
      render(page.data);
      watch();
    } catch (e) {
      if (e.name === "AbortError" || disposed) return;
      alert.hidden = false;
      alert.textContent = `Could not load tasks: ${errorText(e)}`;
    } finally {
      if (inflight === controller) inflight = null;
    }
    if (!disposed) scheduleRefresh();
  }

  function scheduleRefresh() {
    clearTimeout(refreshTimer);
    const polling = mode === "polling" || !es;
    const anyRunning = [...rows.values()].some((r) => !FINAL.has(r.task.status));
    refreshTimer = setTimeout(load, polling && anyRunning ? REFRESH_POLLING : REFRESH_LIVE);
  }

  function render(items) {
    const seen = new Set();
    const order = [];
    for (const task of items) {
      seen.add(task.task_id);
      let row = rows.get(task.task_id);
      if (!row) {
        row = makeRow(task);
        rows.set(task.task_id, row);
      }
      updateRow(row, task, false);
      order.push(row.tr);
    }
    for (const [id, row] of rows) {
      if (!seen.has(id)) {
        row.tr.remove();
        rows.delete(id);
      }
    }
    // Re-insert only when the order changed: moving a row would drop the focus inside it.
    const current = [...tbody.children];
    if (current.length !== order.length || current.some((tr, i) => tr !== order[i])) tbody.append(...order);
    const from = total ? (filters.page - 1) * filters.size + 1 : 0;
    const to = (filters.page - 1) * filters.size + items.length;
    summary.textContent = total
      ? `Showing ${fmtNumber(from)}–${fmtNumber(to)} of ${fmtNumber(total)} task${total === 1 ? "" : "s"}`
      : "No tasks";
    empty.hidden = total > 0;
    table.hidden = total === 0;
    pageLabel.textContent = `Page ${fmtNumber(filters.page)} of ${fmtNumber(pages())}`;
    first.disabled = prev.disabled = filters.page <= 1;
    next.disabled = last.disabled = filters.page >= pages();
    pager.hidden = total <= filters.size;
  }

  function makeRow(task) {
    const badge = stateBadge(task.status);
    const bar = progressBar(`Progress of ${task.type} ${shortId(task.task_id)}`);
    const pct = h("span", { class: "pct" });
    const message = h("span", { class: "message" });
    const age = h("time", { datetime: task.created_at || "" });
    const duration = h("span", { class: "duration" });
    const link = h(
      "a",
      { href: `#/tasks/${encodeURIComponent(task.task_id)}`, class: "task-link" },
      h("span", { class: "type" }, task.type),
      h("span", { class: "sub mono" }, shortId(task.task_id)),
    );
    const tr = h(
      "tr",
      { "data-id": task.task_id },
      h("td", { class: "c-state", "data-label": "State" }, badge),
      h("td", { class: "c-task", "data-label": "Task" }, link, h("span", { class: "sub" }, ` · ${task.queue}`)),
      h("td", { class: "c-progress", "data-label": "Progress" }, h("div", { class: "progress-cell" }, bar, pct)),
      h("td", { class: "c-message", "data-label": "Message" }, message),
      h("td", { class: "c-age", "data-label": "Age" }, age),
      h("td", { class: "c-duration", "data-label": "Duration" }, duration),
    );
    return { tr, badge, bar, pct, message, age, duration, task };
  }

  function updateRow(row, task, announceChange) {
    const before = row.task.status;
    row.task = { ...row.task, ...task };
    const t = row.task;
    setBadge(row.badge, t.status);
    setProgress(row.bar, t.progress, t.status);
    row.pct.textContent = `${Math.round(t.progress)} %`;
    if (row.message.textContent !== (t.message || "")) {
      row.message.textContent = t.message || "";
      row.message.title = t.message || "";
    }
    row.tr.dataset.state = t.status;
    tick(row);
    if (announceChange && before !== t.status && FINAL.has(t.status)) {
      ctx.announce(`${t.type} ${shortId(t.task_id)} finished: ${t.status}`);
    }
  }

  function tick(row, now = Date.now()) {
    row.age.textContent = fmtAge(row.task.created_at, now);
    row.duration.textContent = fmtDuration(taskDuration(row.task, now));
  }

  // -- live updates ---------------------------------------------------------------------
  function setMode(m) {
    mode = m;
    modeBadge.dataset.mode = m;
    modeBadge.textContent = m === "live" ? "Live" : "Polling";
    modeBadge.title =
      m === "live" ? "Rows update as tasks change (Server-Sent Events)" : "Live updates are unavailable; re-reading every 2 s";
  }

  function closeStream() {
    if (es) es.close();
    es = null;
    watchedKey = "";
  }

  function watch() {
    const ids = [...rows.values()].filter((r) => !FINAL.has(r.task.status)).map((r) => r.task.task_id);
    const key = ids.slice().sort().join(",");
    if (es && key === watchedKey) return;
    closeStream();
    if (!ids.length) return;
    if (Date.now() < sseBlockedUntil) return;
    const source = events("/api/v1/events", { ids: ids.join(",") });
    if (!source) {
      setMode("polling");
      return;
    }
    es = source;
    watchedKey = key;
    source.addEventListener("open", () => {
      sseErrors = 0;
      setMode("live");
    });
    source.addEventListener("progress", (e) => {
      sseErrors = 0;
      if (mode !== "live") setMode("live");
      let data;
      try {
        data = JSON.parse(e.data);
      } catch {
        return;
      }
      const row = rows.get(data.task_id);
      if (row) updateRow(row, data, true);
    });
    source.addEventListener("error", () => {
      if (disposed || es !== source) return;
      sseErrors += 1;
      // CLOSED: the server refused the stream; repeated errors: it keeps dropping.
      if (source.readyState === EventSource.CLOSED || sseErrors >= 3) {
        closeStream();
        sseBlockedUntil = Date.now() + SSE_BACKOFF;
        setMode("polling");
        scheduleRefresh();
      }
    });
  }

  const ticker = setInterval(() => {
    const now = Date.now();
    for (const row of rows.values()) tick(row, now);
  }, 1000);

  setMode(typeof EventSource === "undefined" ? "polling" : "live");
  load();

  return () => {
    disposed = true;
    clearInterval(ticker);
    clearTimeout(refreshTimer);
    clearTimeout(searchTimer);
    if (inflight) inflight.abort();
    closeStream();
    clear(root);
  };
}
