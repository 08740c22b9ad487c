// Movement logs (seed 003): the queue length, the batch history and the latest stored logs, kept live.

import { ApiError, api } from "/js/api.js";
import { clear, errorText, fmtNumber, fmtTime, h, shortId } from "/js/dom.js";

const POLL_MS = 2000;

export const nav = { href: "#/movement-logs", label: "Movement logs" };

function fact(term, value) {
  return [h("dt", {}, term), h("dd", {}, value ?? "–")];
}

function table(caption, headers, rows) {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      {},
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, ...headers.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, ...rows.map((cells) => h("tr", {}, ...cells.map((c) => h("td", {}, c))))),
    ),
  );
}

function movementLogsView(main) {
  const status = h("dl", { class: "facts", "aria-live": "polite" });
  const notice = h("p", { class: "summary", role: "status" });
  const batches = h("div");
  const logs = h("div");
  const processButton = h("button", { type: "button", class: "button primary" }, "Run a batch now");
  const clearButton = h("button", { type: "button", class: "button danger" }, "Clear the queue");
  clear(main).append(
    h("h1", {}, "Movement logs"),
    h("p", { class: "summary" }, "Logs wait in the queue until a batch moves them into the movement_logs table, each exactly once."),
    h("section", { "aria-labelledby": "ml-queue" }, h("h2", { id: "ml-queue" }, "Queue"), status, h("p", {}, processButton, " ", clearButton), notice),
    h("section", { "aria-labelledby": "ml-batches" }, h("h2", { id: "ml-batches" }, "Batches"), batches),
    h("section", { "aria-labelledby": "ml-logs" }, h("h2", { id: "ml-logs" }, "Latest logs"), logs),
  );
  let alive = true;
  let timer = null;

  async function refresh() {
    try {
      // The queue's figures are an operator's; a tenant still sees its own logs.
      const operatorOnly = (e) => {
        if (e instanceof ApiError && e.status === 403) return null;
        throw e;
      };
      const [q, b, m] = await Promise.all([
        api("/api/logs/queue-status/").catch(operatorOnly),
        api("/api/logs/batches/", { query: { limit: 10 } }).catch(operatorOnly),
        api("/api/logs/movements/", { query: { page_size: 20 } }),
      ]);
      if (!alive) return;
      if (q === null) {
        clear(status).append(...fact("Queue", "Its figures are shown to operators only."));
      } else clear(status).append(
        ...fact("Queue", `${q.queue_name} (${q.backend})`),
        ...fact("Waiting", fmtNumber(q.queue_length)),
        ...fact("Oldest waiting", q.oldest_age_seconds === null ? "–" : `${q.oldest_age_seconds.toFixed(1)} s`),
        ...fact("Being processed", fmtNumber(q.processing)),
        ...fact("Set aside (not logs)", fmtNumber(q.dead_letters)),
        ...fact("Batch size", fmtNumber(q.batch_size)),
        ...fact("Every", `${q.interval_seconds} s`),
        ...fact("Next run", q.next_run_at ? fmtTime(q.next_run_at) : "no scheduler here"),
      );
      clear(batches).append(
        b === null
          ? h("p", { class: "summary" }, "The batch history is shown to operators only.")
          : b.count === 0
          ? h("p", { class: "summary" }, "No batch has moved anything yet.")
          : table(
              "The latest batches, newest first",
              ["Finished", "Moved", "Duplicates", "Invalid", "Took", "Recovered", "Task"],
              b.results.map((r) => [
                fmtTime(r.finished_at),
                fmtNumber(r.moved),
                fmtNumber(r.duplicates),
                fmtNumber(r.invalid),
                `${fmtNumber(Math.round(r.duration_ms))} ms`,
                r.recovered ? "yes" : "no",
                r.task_id ? h("a", { href: `#/tasks/${encodeURIComponent(r.task_id)}` }, shortId(r.task_id)) : "–",
              ]),
            ),
      );
      clear(logs).append(
        h("p", { class: "summary" }, `${fmtNumber(m.count)} logs stored`),
        m.count === 0
          ? h("p", {}, "No logs stored yet.")
          : table(
              "The latest logs, newest first",
              ["Time", "User", "Track", "Box", "State", "Store"],
              m.results.map((r) => [fmtTime(r.timestamp), r.user_id, String(r.track_id), r.bbox.join(", "), r.state, r.store]),
            ),
      );
    } catch (e) {
      if (!alive) return;
      notice.textContent = `Could not load the movement logs: ${errorText(e)}`;
      notice.className = "summary notice error";
    } finally {
      if (alive) timer = setTimeout(refresh, POLL_MS);
    }
  }

  processButton.addEventListener("click", async () => {
    try {
      const r = await api("/api/logs/process/", { method: "POST" });
      notice.className = "summary";
      clear(notice).append("Batch started: task ", h("a", { href: `#/tasks/${encodeURIComponent(r.task_id)}` }, shortId(r.task_id)));
    } catch (e) {
      notice.textContent = `Could not start a batch: ${errorText(e)}`;
      notice.className = "summary notice error";
    }
  });
  clearButton.addEventListener("click", async () => {
    if (!confirm("Drop every queued movement log? They will not be stored.")) return;
    try {
      const r = await api("/api/logs/clear-queue/", { method: "POST" });
      notice.className = "summary";
      notice.textContent = r.message;
    } catch (e) {
      notice.textContent = e instanceof ApiError && e.status === 403 ? "Only an operator may clear the queue." : `Could not clear the queue: ${errorText(e)}`;
      notice.className = "summary notice error";
    }
  });
  refresh();
  return () => {
    alive = false;
    if (timer) clearTimeout(timer);
  };
}

export const routes = [{ re: /^\/movement-logs$/, view: movementLogsView, title: "Movement logs" }];
