// System: health of the database, executor, broker and workers; queues;
// workers (Celery) or the local pool's numbers; throughput and failures, last hour.

import { ApiError, api } from "./api.js";
import { failureRateChart, throughputChart } from "./charts.js";
import { STATES, clear, errorText, fmtNumber, h, uid } from "./dom.js";

const REFRESH = 10000;

function section(title, ...body) {
  const id = uid("sys");
  return h("section", { class: "card", "aria-labelledby": id }, h("h2", { id }, title), ...body);
}

function value(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") return fmtNumber(v);
  if (typeof v === "boolean") return v ? "yes" : "no";
  if (Array.isArray(v)) return v.length ? v.join(", ") : "none";
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}

function label(key) {
  return key.replace(/_/g, " ").replace(/^\w/, (c) => c.toUpperCase());
}

export function systemView(root, _route, ctx) {
  let alive = true;
  let timer = null;
  const healthBox = h("div", { class: "health" });
  const overall = h("span", { class: "badge" });
  const chartsBox = h("div", { class: "charts" });
  const chartsNote = h("p", { class: "summary" });
  const queuesBox = h("div", { class: "table-wrap" });
  const workersBox = h("div");
  const updated = h("p", { class: "summary", "aria-live": "polite" });
  const refresh = h("button", { type: "button", class: "button small" }, "Refresh");
  const alert = h("div", { class: "notice error", role: "alert", hidden: true });

  root.append(
    h("div", { class: "page-head" }, h("h1", {}, "System"), refresh),
    updated,
    alert,
    section("Health", h("p", {}, "Overall: ", overall), healthBox),
    section("Last hour", chartsNote, chartsBox),
    section("Queues", queuesBox),
    section("Workers", workersBox),
  );

  function showHealth(report) {
    const status = report.overall_status || "unknown";
    overall.className = `badge health-${status}`;
    overall.textContent = status;
    clear(healthBox);
    for (const [name, part] of Object.entries(report)) {
      if (name === "overall_status" || typeof part !== "object" || part === null) continue;
      const details = Object.entries(part).filter(([k]) => k !== "status");
      healthBox.append(
        h(
          "div",
          { class: "health-card", "data-part": name },
          h("h3", {}, label(name)),
          h("span", { class: `badge health-${part.status}` }, part.status),
          details.length ? h("dl", { class: "facts compact" }, details.flatMap(([k, v]) => [h("dt", {}, label(k)), h("dd", {}, value(v))])) : null,
        ),
      );
    }
  }

  function showQueues(queues) {
    if (!queues.data.length) {
      clear(queuesBox).append(h("p", { class: "summary" }, "No tasks in any queue yet."));
      return;
    }
    clear(queuesBox).append(
      h(
        "table",
        { class: "queues" },
        h("caption", { class: "visually-hidden" }, "Tasks per queue and state"),
        h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Queue"), h("th", { scope: "col", class: "num" }, "Depth"), STATES.map((s) => h("th", { scope: "col", class: "num" }, s)))),
        h(
          "tbody",
          {},
          queues.data.map((q) =>
            h(
              "tr",
              {},
              h("th", { scope: "row" }, h("a", { href: `#/tasks?queue=${encodeURIComponent(q.queue)}` }, q.queue)),
              h("td", { class: "num" }, fmtNumber(q.depth)),
              STATES.map((s) => h("td", { class: "num" }, q.counts[s] ? fmtNumber(q.counts[s]) : "·")),
            ),
          ),
        ),
      ),
    );
  }

  function showWorkers(w) {
    const stats = Object.entries(w.stats || {}).filter(([k]) => k !== "worker_id");
    const rows = w.data || [];
    const celery = w.executor !== "local";
    clear(workersBox).append(
      h("p", {}, "Executor: ", h("strong", {}, w.executor), w.stats && w.stats.worker_id ? h("span", { class: "mono sub" }, ` ${w.stats.worker_id}`) : null),
      stats.length ? h("dl", { class: "facts compact" }, stats.flatMap(([k, v]) => [h("dt", {}, label(k)), h("dd", {}, value(v))])) : null,
      rows.length
        ? h(
            "div",
            { class: "table-wrap" },
            h(
              "table",
              { class: "workers" },
              h("caption", { class: "visually-hidden" }, celery ? "Celery workers" : "Worker processes of the local pool"),
              h("thead", {}, h("tr", {}, ["Worker", "PID", "Alive", "Active", celery ? "Processed" : "Reserved"].map((t, i) => h("th", { scope: "col", class: i === 1 || i > 2 ? "num" : null }, t)))),
              h(
                "tbody",
                {},
                rows.map((r) =>
                  h(
                    "tr",
                    {},
                    h("th", { scope: "row", class: "mono" }, r.name),
                    h("td", { class: "num" }, r.pid === null || r.pid === undefined ? "–" : String(r.pid)),
                    h("td", {}, h("span", { class: `badge health-${r.alive ? "ok" : "down"}` }, r.alive ? "alive" : "gone")),
                    h("td", { class: "num" }, fmtNumber((r.active || []).length)),
                    h("td", { class: "num" }, celery ? value(r.processed) : fmtNumber((r.reserved || []).length)),
                  ),
                ),
              ),
            ),
          )
        : h("p", { class: "summary" }, celery ? "No Celery worker answered." : "No worker processes."),
    );
  }

  function showStats(s) {
    clear(chartsBox).append(throughputChart(s.data, s.totals), failureRateChart(s.data, s.failure_rate));
    chartsNote.textContent = `${fmtNumber(s.totals.total)} task${s.totals.total === 1 ? "" : "s"} finished in the last hour.`;
  }

  const operator = Boolean(ctx.session && ctx.session.operator);
  if (!operator) {
    for (const box of [queuesBox, workersBox]) box.append(h("p", { class: "summary" }, "Shown to operators only."));
  }

  async function load() {
    clearTimeout(timer);
    const problems = [];
    const part = async (promise, show, box) => {
      try {
        show(await promise);
      } catch (e) {
        if (e instanceof ApiError && e.status === 503 && e.body && e.body.overall_status) show(e.body);
        // Queues and workers span every tenant: the API shows them to operators only.
        else if (e instanceof ApiError && e.status === 403 && box) clear(box).append(h("p", { class: "summary" }, "Shown to operators only."));
        else problems.push(errorText(e));
      }
    };
    await Promise.all([
      part(api("/health", { allow: [503] }), showHealth),
      part(api("/api/v1/stats", { query: { window: 3600, bucket: 60 } }), showStats),
      ...(operator
        ? [part(api("/api/v1/queues"), showQueues, queuesBox), part(api("/api/v1/workers"), showWorkers, workersBox)]
        : []),
    ]);
    if (!alive) return;
    alert.hidden = !problems.length;
    alert.textContent = problems.length ? `Some parts could not be loaded: ${problems.join("; ")}` : "";
    updated.textContent = `Updated ${new Date().toLocaleTimeString()}; refreshes every ${REFRESH / 1000} s.`;
    timer = setTimeout(load, REFRESH);
  }

  refresh.addEventListener("click", () => {
    load();
    ctx.announce("Refreshing");
  });
  load();
  return () => {
    alive = false;
    clearTimeout(timer);
  };
}
