// The media workload's dashboard page: upload a recording, photo or clip for correction,
// follow each correction's status and progress, compare before/after figures, and play
// or preview the corrected file. Loaded by the shell from /api/v1/workloads.

import { ApiError, api, auth, url } from "/js/api.js";
import { FINAL, clear, errorText, fmtAge, fmtBytes, fmtTime, h, progressBar, setProgress, stateBadge, uid } from "/js/dom.js";

const POLL_MS = 1000;
const PAGE = 20;

export const nav = { href: "#/media", label: "Media" };

/** A file URL the browser can load in <audio>/<img>/<video> (no headers there: the key goes in the query). */
function mediaUrl(path) {
  return url(path, auth.key ? { api_key: auth.key } : {});
}

function num(v, unit) {
  return typeof v === "number" ? `${v.toFixed(1)} ${unit}` : "–";
}

/** Before → after rows for the figures each media type reports. */
function figures(record) {
  const m = record.result && record.result.measurements;
  if (!m || !m.before) return null;
  const rows = {
    audio: [["Loudness", "integrated_lufs", "LUFS"], ["Loudness range", "loudness_range_lu", "LU"], ["True peak", "true_peak_dbtp", "dBTP"], ["Noise floor", "noise_floor_dbfs", "dBFS"]],
    image: [["Colour cast", "colour_cast", "ΔE ab"], ["Contrast", "contrast", "L* rms"], ["Noise", "noise_sigma", "σ"]],
    video: [["Loudness", "integrated_lufs", "LUFS"], ["True peak", "true_peak_dbtp", "dBTP"], ["Duration", "duration_s", "s"], ["Size", "size_bytes", ""]],
  }[record.media_type] || [];
  const body = rows.map(([label, key, unit]) => {
    const show = (v) => (key === "size_bytes" ? fmtBytes(v) : num(v, unit));
    return h("tr", {}, h("th", { scope: "row" }, label), h("td", {}, show(m.before[key])), h("td", {}, show((m.after || {})[key])));
  });
  return h(
    "table",
    { class: "media-figures" },
    h("caption", {}, "Measured before and after"),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Figure"), h("th", { scope: "col" }, "Before"), h("th", { scope: "col" }, "After"))),
    h("tbody", {}, ...body),
  );
}

function preview(record) {
  const out = record.result && record.result.outputs && record.result.outputs[0];
  if (!out) return null;
  const src = mediaUrl(out.url);
  const link = h("a", { href: src, download: out.name }, `Download ${out.name} (${fmtBytes(out.size_bytes)})`);
  if (record.media_type === "audio") return h("div", { class: "media-preview" }, h("audio", { controls: true, preload: "none", src, "aria-label": `Corrected ${out.name}` }), link);
  if (record.media_type === "image") return h("div", { class: "media-preview" }, h("img", { src, alt: `Corrected ${out.name}`, loading: "lazy" }), link);
  return h("div", { class: "media-preview" }, h("video", { controls: true, preload: "metadata", src, "aria-label": `Corrected ${out.name}` }), link);
}

function card(record, onChange) {
  const bar = progressBar(`Progress of ${record.filename || record.task_id}`);
  setProgress(bar, record.progress, record.status, `${Math.round(record.progress)} % · ${record.message || ""}`);
  const actions = h("div", { class: "media-actions" });
  if (!FINAL.has(record.status)) {
    const cancel = h("button", { type: "button", class: "button small" }, "Cancel");
    cancel.addEventListener("click", async () => {
      cancel.disabled = true;
      try {
        await api(`/corr/tasks/${encodeURIComponent(record.task_id)}/cancel/`, { method: "POST", allow: [409] });
      } finally {
        onChange();
      }
    });
    actions.append(cancel);
  }
  const remove = h("button", { type: "button", class: "button small" }, "Delete");
  remove.addEventListener("click", async () => {
    remove.disabled = true;
    try {
      await api(`/corr/tasks/${encodeURIComponent(record.task_id)}/`, { method: "DELETE", allow: [404] });
    } finally {
      onChange();
    }
  });
  actions.append(remove);
  return h(
    "li",
    { class: "card media-card", "data-status": record.status },
    h("h3", {}, record.filename || record.input, " ", h("span", { class: "summary" }, `· ${record.media_type}`)),
    h("p", {}, stateBadge(record.status), " ", record.message || "", " · ", h("time", { datetime: record.created_at, title: fmtTime(record.created_at) }, fmtAge(record.created_at))),
    bar,
    record.error_message ? h("p", { class: "notice error" }, record.error_message) : null,
    figures(record),
    preview(record),
    actions,
  );
}

function uploadForm(onDone) {
  const fileId = uid("media-file");
  const typeId = uid("media-type");
  const input = h("input", { type: "file", id: fileId, name: "file", accept: "audio/*,image/*,video/*", required: true });
  const type = h("select", { id: typeId, name: "media_type" }, h("option", { value: "" }, "Detect from the file"), h("option", { value: "audio" }, "Audio"), h("option", { value: "image" }, "Image"), h("option", { value: "video" }, "Video"));
  const button = h("button", { type: "submit", class: "button" }, "Correct");
  const error = h("p", { class: "notice error", role: "alert", hidden: true });
  const say = (text) => {
    error.textContent = text;
    error.hidden = !text;
  };
  const form = h("form", { class: "stack" }, h("label", { for: fileId }, "File"), input, h("label", { for: typeId }, "Media type"), type, button, error);
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    say("");
    const file = input.files && input.files[0];
    if (!file) {
      say("Choose a file to correct.");
      input.focus();
      return;
    }
    button.disabled = true;
    const body = new FormData();
    body.append("file", file, file.name);
    if (type.value) body.append("media_type", type.value);
    try {
      const res = await fetch("/corr/tasks/", { method: "POST", body, headers: auth.key ? { Authorization: `Bearer ${auth.key}` } : {} });
      const data = await res.json().catch(() => null);
      if (!res.ok) throw new ApiError(res.status, data);
      form.reset();
      onDone();
    } catch (err) {
      say(errorText(err));
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

function mediaView(main, { query }) {
  const listHeading = uid("corrections");
  const filter = h("select", { "aria-label": "Show" }, ...["", "PENDING", "PROCESSING", "SUCCESS", "FAILURE", "CANCELLED"].map((s) => h("option", { value: s }, s || "All statuses")));
  filter.value = query.get ? query.get("status") || "" : "";
  const summary = h("p", { class: "summary", "aria-live": "polite" });
  const list = h("ul", { class: "media-list" });
  let timer = null;
  let alive = true;

  async function load() {
    clearTimeout(timer);
    try {
      const page = await api("/corr/tasks/", { query: { limit: PAGE, status: filter.value } });
      if (!alive) return;
      summary.textContent = page.count ? `${page.count} correction${page.count === 1 ? "" : "s"}` : "No corrections yet.";
      clear(list).append(...page.data.map((r) => card(r, load)));
      if (page.data.some((r) => !FINAL.has(r.status))) timer = setTimeout(load, POLL_MS);
    } catch (e) {
      if (!alive) return;
      summary.textContent = `Could not load the corrections: ${errorText(e)}`;
      timer = setTimeout(load, POLL_MS * 5);
    }
  }
  filter.addEventListener("change", load);
  const formHeading = uid("media-upload");
  clear(main).append(
    h("h1", {}, "Media corrections"),
    h("section", { class: "card", "aria-labelledby": formHeading }, h("h2", { id: formHeading }, "Correct a file"), uploadForm(load)),
    h("section", { "aria-labelledby": listHeading }, h("h2", { id: listHeading }, "Corrections"), filter, summary, list),
  );
  load();
  return () => {
    alive = false;
    clearTimeout(timer);
  };
}

export const routes = [{ re: /^\/media$/, view: mediaView, title: "Media" }];
