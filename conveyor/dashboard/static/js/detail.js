// One task: its params, live progress, timeline, result or error, Cancel and Retry.

import { ApiError, api, events } from "./api.js";
import {
  FINAL,
  append,
  clear,
  errorText,
  fmtDuration,
  fmtTime,
  h,
  progressBar,
  setBadge,
  setProgress,
  shortId,
  stateBadge,
  taskDuration,
  uid,
} from "./dom.js";
import { jsonTree, mediaList } from "./result.js";

const POLL = 1000;
const TIMELINE_SHOWN = 500;

function section(title, ...body) {
  const id = uid("sec");
  return h("section", { class: "card", "aria-labelledby": id }, h("h2", { id }, title), ...body);
}

export function detailView(root, { params: [taskId] }, ctx) {
  const path = `/api/v1/tasks/${encodeURIComponent(taskId)}`;
  let task = null;
  let es = null;
  let pollTimer = null;
  let timelineTimer = null;
  let lastSeq = 0;
  let alive = true;
  let workloadPanel = null;
  let renderedResultFor = null;

  const title = h("h1", {}, "Task");
  const idLine = h("p", { class: "mono sub" }, taskId);
  const badge = stateBadge("PENDING");
  const bar = progressBar("Task progress");
  const pct = h("span", { class: "pct" });
  const message = h("p", { class: "message", "aria-live": "polite" });
  const cancel = h("button", { type: "button", class: "button danger" }, "Cancel");
  const retry = h("button", { type: "button", class: "button" }, "Retry");
  const actionNote = h("p", { class: "summary", role: "status" });
  const facts = h("dl", { class: "facts" });
  const params = h("div");
  const resultBody = h("div");
  const errorBody = h("div");
  const timeline = h("ol", { class: "timeline" });
  const timelineNote = h("p", { class: "summary" });
  const resultSection = section("Result", resultBody);
  const errorSection = section("Error", errorBody);
  const alert = h("div", { class: "notice error", role: "alert", hidden: true });

  root.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/tasks" }, "‹ All tasks")),
    title,
    idLine,
    alert,
    h(
      "div",
      { class: "card status-card" },
      h("div", { class: "status-line" }, badge, h("div", { class: "progress-cell wide" }, bar, pct)),
      message,
      h("div", { class: "actions" }, cancel, retry),
      actionNote,
    ),
    h("div", { class: "grid-2" }, section("Overview", facts), section("Params", params)),
    resultSection,
    errorSection,
    section("Timeline", timelineNote, timeline),
  );
  resultSection.hidden = true;
  errorSection.hidden = true;

  function showHeader() {
    title.textContent = task.type;
    document.title = `${task.type} ${shortId(taskId)} · Conveyor`;
    setBadge(badge, task.status);
    setProgress(bar, task.progress, task.status);
    pct.textContent = `${Math.round(task.progress)} %`;
    message.textContent = task.message || "";
    cancel.disabled = FINAL.has(task.status) || task.cancel_requested;
    retry.disabled = !(task.status === "FAILURE" || task.status === "CANCELLED");
  }

  function showFacts() {
    const rows = [
      ["Queue", task.queue],
      ["Attempts", String(task.attempts)],
      ["Automatic retries", task.max_retries ? `up to ${task.max_retries}` : "none"],
      ["Priority", String(task.priority)],
      ["Created", fmtTime(task.created_at)],
      ["Started", fmtTime(task.started_at)],
      ["Finished", fmtTime(task.finished_at)],
      ["Duration", fmtDuration(taskDuration(task))],
      ["Result kept until", task.expires_at ? fmtTime(task.expires_at) : "–"],
    ];
    clear(facts).append(...rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  }

  function showOutcome() {
    errorSection.hidden = !task.error;
    if (task.error) {
      const e = task.error;
      clear(errorBody).append(
        h("p", { class: "error-message" }, h("strong", {}, e.type || "Error"), `: ${e.message || ""}`),
        e.traceback
          ? h("details", { class: "traceback" }, h("summary", {}, "Traceback"), h("pre", { tabindex: "0" }, e.traceback))
          : null,
      );
    }
    const hasResult = task.status === "SUCCESS" && task.result !== null && task.result !== undefined;
    resultSection.hidden = !hasResult;
    const key = `${task.status}:${task.finished_at}`;
    if (!hasResult || renderedResultFor === key) return;
    renderedResultFor = key;
    if (workloadPanel && workloadPanel.dispose) workloadPanel.dispose();
    workloadPanel = null;
    clear(resultBody);
    // A workload may show its own kind of result (a document, an image) on the task page.
    for (const page of ctx.pages) {
      const panel = typeof page.resultPanel === "function" ? page.resultPanel(task, ctx) : null;
      if (!panel) continue;
      workloadPanel = panel;
      append(resultBody, ...panel.elements, h("details", { class: "raw" }, h("summary", {}, "Raw result"), jsonTree(task.result)));
      return;
    }
    append(resultBody, mediaList(task.result), jsonTree(task.result));
  }

  function show() {
    showHeader();
    showFacts();
    showOutcome();
  }

  async function load() {
    try {
      task = await api(path);
    } catch (e) {
      if (!alive) return false;
      if (e instanceof ApiError && e.status === 404) {
        clear(root).append(
          h("p", { class: "crumbs" }, h("a", { href: "#/tasks" }, "‹ All tasks")),
          h("h1", {}, "Task not found"),
          h("p", {}, `No task with id ${taskId} (or it belongs to another tenant, or its record expired).`),
        );
        stop();
        return false;
      }
      alert.hidden = false;
      alert.textContent = `Could not load the task: ${errorText(e)}`;
      return true;
    }
    if (!alive) return false;
    alert.hidden = true;
    clear(params).append(Object.keys(task.params || {}).length ? jsonTree(task.params) : h("p", { class: "summary" }, "No params."));
    show();
    return true;
  }

  async function loadTimeline() {
    try {
      const page = await api(`${path}/timeline`, { query: { after: lastSeq } });
      if (!alive) return;
      for (const e of page.data) {
        lastSeq = Math.max(lastSeq, e.seq);
        timeline.append(
          h(
            "li",
            { class: `tl-${e.kind}` },
            h("time", { datetime: e.at }, new Date(Date.parse(e.at)).toLocaleTimeString(undefined, { hour12: false }) + `.${String(Date.parse(e.at) % 1000).padStart(3, "0")}`),
            e.kind === "state" ? stateBadge(e.status) : h("span", { class: "tl-kind" }, "progress"),
            h("span", { class: "tl-pct" }, `${Math.round(e.progress)} %`),
            h("span", { class: "tl-msg" }, e.message),
          ),
        );
      }
      while (timeline.children.length > TIMELINE_SHOWN) timeline.firstChild.remove();
      timelineNote.textContent = timeline.children.length ? "" : "Nothing has happened yet.";
      if (timeline.children.length >= TIMELINE_SHOWN) timelineNote.textContent = `The latest ${TIMELINE_SHOWN} steps.`;
    } catch {
      // the next change tries again
    }
  }

  function timelineSoon() {
    if (timelineTimer) return;
    timelineTimer = setTimeout(() => {
      timelineTimer = null;
      loadTimeline();
    }, 300);
  }

  function stop() {
    if (es) es.close();
    es = null;
    clearTimeout(pollTimer);
    pollTimer = null;
  }

  /** Follow the task until it finishes: its SSE stream, or polling when that fails. */
  function follow() {
    stop();
    if (!task || FINAL.has(task.status)) return;
    const source = events(`${path}/events`);
    if (!source) {
      poll();
      return;
    }
    es = source;
    let errors = 0;
    source.addEventListener("progress", (e) => {
      errors = 0;
      const data = JSON.parse(e.data);
      const before = task.status;
      task = { ...task, ...data };
      showHeader();
      if (before !== task.status) showFacts();
      timelineSoon();
    });
    source.addEventListener("end", async () => {
      source.close();
      if (es === source) es = null;
      actionNote.textContent = "";
      await load();
      await loadTimeline();
      if (task) ctx.announce(`Task ${task.type} finished: ${task.status}`);
    });
    source.addEventListener("error", () => {
      if (!alive || es !== source) return;
      errors += 1;
      if (source.readyState === EventSource.CLOSED || errors >= 3) {
        source.close();
        es = null;
        poll();
      }
    });
  }

  async function poll() {
    clearTimeout(pollTimer);
    const before = task && task.status;
    if (!(await load()) || !alive) return;
    await loadTimeline();
    if (FINAL.has(task.status)) {
      if (before !== task.status) ctx.announce(`Task ${task.type} finished: ${task.status}`);
      return;
    }
    pollTimer = setTimeout(poll, POLL);
  }

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      const s = await api(`${path}/cancel/`, { method: "POST" });
      actionNote.textContent = s.status === "CANCELLED" ? "Cancelled." : "Cancellation requested; the task stops at its next check.";
      task = { ...task, ...s, cancel_requested: true };
      showHeader();
      if (FINAL.has(s.status)) {
        await load();
        await loadTimeline();
      }
    } catch (e) {
      actionNote.textContent = `Could not cancel: ${errorText(e)}`;
      cancel.disabled = false;
    }
  });

  retry.addEventListener("click", async () => {
    retry.disabled = true;
    try {
      await api(`${path}/retry/`, { method: "POST" });
      actionNote.textContent = "Queued to run again.";
      renderedResultFor = null;
      await load();
      await loadTimeline();
      follow();
    } catch (e) {
      actionNote.textContent = `Could not retry: ${errorText(e)}`;
      retry.disabled = false;
    }
  });

  (async () => {
    if (await load()) {
      await loadTimeline();
      follow();
    }
  })();

  // Running tasks: the duration counts up.
  const ticker = setInterval(() => {
    if (task && task.started_at && !task.finished_at) showFacts();
  }, 1000);

  return () => {
    alive = false;
    stop();
    clearInterval(ticker);
    clearTimeout(timelineTimer);
    if (workloadPanel && workloadPanel.dispose) workloadPanel.dispose();
  };
}
