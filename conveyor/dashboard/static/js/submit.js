// Submit: a form generated from the chosen task type's params schema, the
// tasks submitted from this tab with live progress, and each workload's own sections.

import { ApiError, api, events } from "./api.js";
import { FINAL, clear, errorText, fmtAge, fmtTime, h, progressBar, setBadge, setProgress, shortId, stateBadge, uid } from "./dom.js";
import { schemaFields } from "./schemaform.js";

/** Tasks submitted from this tab, newest first (kept while the tab lives). */
const recent = [];
const RECENT_MAX = 8;
const POLL = 1000;

function optionField(name, labelText, attrs, hintText) {
  const id = uid(`o-${name}`);
  const input = h("input", { id, name, ...attrs, "aria-describedby": `${id}-hint ${id}-error` });
  const error = h("p", { class: "field-error", id: `${id}-error` });
  const element = h("div", { class: "field" }, h("label", { for: id }, labelText), input, h("p", { class: "hint", id: `${id}-hint` }, hintText), error);
  return {
    name,
    input,
    element,
    setError(m) {
      error.textContent = m || "";
      if (m) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
    },
  };
}

export function submitView(root, { query }, ctx) {
  let alive = true;
  let fields = null;
  let types = [];
  let es = null;
  let pollTimer = null;
  let esKey = "";

  const typeId = uid("type");
  const typeSelect = h("select", { id: typeId, name: "task_type", "aria-describedby": `${typeId}-about` });
  const about = h("p", { class: "hint", id: `${typeId}-about` });
  const fieldsBox = h("div");
  const options = [
    optionField("priority", "Priority", { type: "number", min: 0, max: 9, step: 1, inputmode: "numeric" }, "0 to 9; higher runs first · default: the task type's"),
    optionField("delay", "Delay (seconds)", { type: "number", min: 0, step: "any", inputmode: "decimal" }, "run no sooner than this"),
    optionField("idempotency_key", "Idempotency key", { type: "text", maxlength: 200, autocomplete: "off" }, "a second submit with the same key returns the first task"),
  ];
  const formError = h("div", { class: "notice error", role: "alert", hidden: true });
  const submitButton = h("button", { type: "submit", class: "button primary" }, "Submit task");
  const form = h(
    "form",
    { class: "card submit", novalidate: true, "aria-labelledby": `${typeId}-heading` },
    h("h2", { id: `${typeId}-heading` }, "New task"),
    h("div", { class: "field" }, h("label", { for: typeId }, "Task type"), typeSelect, about),
    fieldsBox,
    h("details", { class: "options" }, h("summary", {}, "Options"), options.map((o) => o.element)),
    formError,
    h("div", { class: "actions" }, submitButton),
  );
  const recentList = h("ul", { class: "recent" });
  const recentEmpty = h("p", { class: "summary" }, "Tasks you submit here appear with their progress.");
  const recentHeading = uid("recent");
  const recentSection = h("section", { class: "card", "aria-labelledby": recentHeading }, h("h2", { id: recentHeading }, "Submitted from this tab"), recentEmpty, recentList);

  root.append(h("h1", {}, "Submit"), h("div", { class: "grid-2 submit-grid" }, form, recentSection));

  // Workloads add their own sections (an upload form, their recent items) below the form.
  const sectionCleanups = [];
  for (const page of ctx.pages) {
    if (typeof page.submitSections !== "function") continue;
    try {
      const done = page.submitSections(root, ctx, () => alive);
      if (typeof done === "function") sectionCleanups.push(done);
    } catch (e) {
      console.warn("a workload's submit section failed", e);
    }
  }

  function chooseType(name) {
    const t = types.find((x) => x.name === name) || types[0];
    if (!t) return;
    typeSelect.value = t.name;
    about.textContent = [t.description, `queue ${t.queue}`, t.max_retries ? `retries ${t.max_retries}` : null].filter(Boolean).join(" · ");
    fields = schemaFields(t.params_schema);
    clear(fieldsBox).append(fields.element);
    formError.hidden = true;
    for (const o of options) o.setError("");
  }

  ctx
    .taskTypes()
    .then((list) => {
      if (!alive) return;
      // Upkeep tasks are run by the scheduler; they are listed last.
      types = [...list].sort((a, b) => (a.queue === "maintenance") - (b.queue === "maintenance") || a.name.localeCompare(b.name));
      for (const t of types) typeSelect.append(h("option", { value: t.name }, t.name));
      chooseType(query.get("type") || (types.find((t) => t.name === "system.sleep") || types[0] || {}).name);
    })
    .catch((e) => {
      formError.hidden = false;
      formError.textContent = `Could not load the task types: ${errorText(e)}`;
    });

  typeSelect.addEventListener("change", () => {
    chooseType(typeSelect.value);
    history.replaceState(null, "", `#/submit?type=${encodeURIComponent(typeSelect.value)}`);
  });

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!fields) return;
    formError.hidden = true;
    for (const o of options) o.setError("");
    const { params, ok } = fields.read();
    if (!ok) return;
    const body = { task_type: typeSelect.value, params };
    for (const o of options) {
      const v = o.input.value.trim();
      if (v !== "") body[o.name] = o.name === "idempotency_key" ? v : Number(v);
    }
    submitButton.disabled = true;
    try {
      const created = await api("/api/v1/tasks", { method: "POST", body });
      if (!alive) return;
      fields.clear();
      recent.unshift({ task_id: created.task_id, type: created.type, status: created.status, progress: 0, message: created.message, created_at: created.created_at });
      recent.splice(RECENT_MAX);
      ctx.announce(`Submitted ${created.type} ${shortId(created.task_id)}`);
      renderRecent();
      watch();
    } catch (err) {
      if (!alive) return;
      let unmatched = [];
      if (err instanceof ApiError && err.status === 422) {
        unmatched = fields.showErrors(err.details);
        unmatched = unmatched.filter((d) => {
          const o = options.find((x) => x.name === d.field);
          if (o) o.setError(d.message);
          return !o;
        });
        if (!unmatched.length) {
          formError.hidden = false;
          formError.textContent = "Some params were not accepted; see the messages beside them.";
          return;
        }
      }
      formError.hidden = false;
      formError.textContent = `Not submitted: ${errorText(err)}${unmatched.length ? ` (${unmatched.map((d) => `${d.field}: ${d.message}`).join("; ")})` : ""}`;
    } finally {
      submitButton.disabled = false;
    }
  });

  const items = new Map();
  function renderRecent() {
    recentEmpty.hidden = recent.length > 0;
    const order = [];
    for (const t of recent) {
      let item = items.get(t.task_id);
      if (!item) {
        const badge = stateBadge(t.status);
        const bar = progressBar(`Progress of ${t.type} ${shortId(t.task_id)}`);
        const pct = h("span", { class: "pct" });
        const message = h("span", { class: "message" });
        const li = h(
          "li",
          { "data-id": t.task_id },
          h("div", { class: "recent-head" }, badge, h("a", { href: `#/tasks/${encodeURIComponent(t.task_id)}` }, `${t.type} `, h("span", { class: "mono sub" }, shortId(t.task_id)))),
          h("div", { class: "progress-cell" }, bar, pct),
          message,
        );
        item = { li, badge, bar, pct, message };
        items.set(t.task_id, item);
      }
      setBadge(item.badge, t.status);
      setProgress(item.bar, t.progress, t.status);
      item.pct.textContent = `${Math.round(t.progress)} %`;
      item.message.textContent = t.message || "";
      order.push(item.li);
    }
    for (const [id, item] of items) {
      if (!recent.some((t) => t.task_id === id)) {
        item.li.remove();
        items.delete(id);
      }
    }
    recentList.append(...order);
  }

  function update(data) {
    const t = recent.find((x) => x.task_id === data.task_id);
    if (!t) return;
    const before = t.status;
    Object.assign(t, data);
    if (before !== t.status && FINAL.has(t.status)) ctx.announce(`${t.type} ${shortId(t.task_id)} finished: ${t.status}`);
    renderRecent();
  }

  function stopWatching() {
    if (es) es.close();
    es = null;
    esKey = "";
    clearTimeout(pollTimer);
  }

  /** One stream for every unfinished task of the list; polling their status when it fails. */
  function watch(forcePolling = false) {
    const ids = recent.filter((t) => !FINAL.has(t.status)).map((t) => t.task_id);
    const key = ids.join(",");
    if (es && key === esKey) return;
    stopWatching();
    if (!ids.length) return;
    const source = forcePolling ? null : events("/api/v1/events", { ids: key });
    if (!source) {
      pollTimer = setTimeout(poll, POLL);
      return;
    }
    es = source;
    esKey = key;
    let errors = 0;
    source.addEventListener("progress", (e) => {
      errors = 0;
      update(JSON.parse(e.data));
      if (!recent.some((t) => !FINAL.has(t.status))) stopWatching();
      else watch();
    });
    source.addEventListener("error", () => {
      if (!alive || es !== source) return;
      errors += 1;
      if (source.readyState === EventSource.CLOSED || errors >= 3) {
        stopWatching();
        pollTimer = setTimeout(poll, POLL);
      }
    });
  }

  async function poll() {
    const unfinished = recent.filter((t) => !FINAL.has(t.status));
    for (const t of unfinished) {
      try {
        update(await api(`/api/v1/tasks/${encodeURIComponent(t.task_id)}/status/`));
      } catch {
        // tried again next round
      }
    }
    if (alive && recent.some((t) => !FINAL.has(t.status))) pollTimer = setTimeout(poll, POLL);
  }

  renderRecent();
  watch();

  return () => {
    alive = false;
    stopWatching();
    for (const done of sectionCleanups) done();
  };
}
