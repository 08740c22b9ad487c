// The images workload: submit each of the five image tasks with image pickers,
// follow its progress, and see the result image (and the mask of a background removal).

import { ApiError, api } from "/js/api.js";
import { clear, errorText, h, progressBar, setProgress, shortId, uid } from "/js/dom.js";

const POLL_MS = 400;
const TYPES = {
  image_generation: { label: "Image generation", images: [], text: ["prompt"] },
  face_swap: { label: "Face swap", images: ["source_image", "target_image"] },
  background_removal: { label: "Background removal", images: ["image"] },
  object_removal: { label: "Object removal", images: ["image", "mask"], box: true },
  style_transfer: { label: "Style transfer", images: ["image", "style_image"], style: true },
};
const OPTIONAL = new Set(["mask", "style_image"]);

function readAsDataURL(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function field(labelText, input, hint) {
  const id = uid("img");
  input.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, labelText), input, hint ? h("small", {}, hint) : null);
}

function numberInput(name, value, attrs = {}) {
  return h("input", { type: "number", name, value, ...attrs });
}

function imagesView(main) {
  let alive = true;
  let timer = null;
  const typeSelect = h(
    "select",
    { name: "task_type" },
    ...Object.entries(TYPES).map(([name, t]) => h("option", { value: name }, t.label)),
  );
  const fields = h("div", { class: "fields" });
  const submitButton = h("button", { type: "submit", class: "button primary" }, "Submit");
  const form = h("form", { class: "card images-form", "aria-label": "Submit an image task" }, field("Task type", typeSelect), fields, submitButton);
  const status = h("p", { class: "summary", "aria-live": "polite" });
  const bar = progressBar("Task progress");
  bar.hidden = true;
  const cancelButton = h("button", { type: "button", class: "button small", hidden: true }, "Cancel");
  const output = h("div", { class: "images-output" });
  const errors = h("div", { class: "notice error", role: "alert", hidden: true });
  let describe = null;
  let current = null;

  function renderFields() {
    const t = TYPES[typeSelect.value];
    const parts = [];
    if (t.text) {
      parts.push(field("Prompt", h("textarea", { name: "prompt", rows: 2, required: true }, "beautiful sunset")));
      const dims = describe ? describe.limits.max_side : 2048;
      parts.push(
        h(
          "fieldset",
          {},
          h("legend", {}, "Parameters"),
          field("Width", numberInput("width", 512, { min: 64, max: dims, step: 8 })),
          field("Height", numberInput("height", 512, { min: 64, max: dims, step: 8 })),
          field("Seed", numberInput("seed", "", { min: 0 }), "empty: chosen for you, kept in the record"),
          field("Steps", numberInput("steps", 30, { min: 1, max: describe ? describe.limits.max_steps : 150 })),
        ),
      );
    }
    for (const name of t.images) {
      const input = h("input", { type: "file", name, accept: "image/png,image/jpeg,image/webp,image/bmp,image/gif,image/tiff" });
      if (!OPTIONAL.has(name)) input.required = true;
      const preview = h("img", { class: "images-preview", alt: "", hidden: true });
      input.addEventListener("change", () => {
        const f = input.files[0];
        if (!f) return void (preview.hidden = true);
        preview.src = URL.createObjectURL(f);
        preview.alt = `Preview of ${name}`;
        preview.hidden = false;
      });
      parts.push(h("div", {}, field(name + (OPTIONAL.has(name) ? " (optional)" : ""), input), preview));
    }
    if (t.box) {
      parts.push(field("Box (x, y, width, height)", h("input", { type: "text", name: "box", placeholder: "e.g. 40, 30, 120, 80" }), "instead of a mask"));
    }
    if (t.style) {
      const styles = describe ? describe.styles : ["pencil", "sketch", "oil", "watercolor", "cartoon"];
      parts.push(field("Style", h("select", { name: "style" }, h("option", { value: "" }, "— use the style image —"), ...styles.map((s) => h("option", { value: s }, s)))));
    }
    clear(fields).append(...parts);
  }

  async function body() {
    const name = typeSelect.value;
    const t = TYPES[name];
    const data = new FormData(form);
    const out = { task_type: name };
    if (t.text) {
      out.prompt = data.get("prompt");
      const p = { width: Number(data.get("width")), height: Number(data.get("height")), steps: Number(data.get("steps")) };
      if (data.get("seed") !== "") p.seed = Number(data.get("seed"));
      out.parameters = p;
    }
    for (const f of t.images) {
      const file = form.elements[f].files[0];
      if (file) out[f] = await readAsDataURL(file);
    }
    if (t.box && data.get("box")) out.box = String(data.get("box")).split(",").map((v) => Number(v.trim()));
    if (t.style && data.get("style")) out.style = data.get("style");
    return out;
  }

  function showError(e) {
    const details = e instanceof ApiError && Array.isArray(e.details) ? e.details.map((d) => `${d.field}: ${d.message}`) : [];
    clear(errors).append(h("p", {}, errorText(e)), details.length ? h("ul", {}, ...details.map((d) => h("li", {}, d))) : null);
    errors.hidden = false;
  }

  function showResult(result) {
    const meta = result.metadata || {};
    const figure = h(
      "figure",
      { class: "images-result" },
      h("img", { src: `data:image/png;base64,${result.image_data}`, alt: "Result image", class: "checker" }),
      h("figcaption", {}, `${meta.width} × ${meta.height} · ${meta.generator || meta.method || ""}`),
    );
    const parts = [figure];
    if (result.mask_data) {
      parts.push(h("figure", { class: "images-result" }, h("img", { src: `data:image/png;base64,${result.mask_data}`, alt: "Mask (alpha)" }), h("figcaption", {}, "Mask (alpha)")));
    }
    if (result.prompt_used) parts.push(h("p", {}, `Prompt used: ${result.prompt_used}`));
    parts.push(h("details", {}, h("summary", {}, "Metadata"), h("pre", {}, JSON.stringify({ ...meta, source_landmarks: undefined, target_landmarks: undefined }, null, 2))));
    clear(output).append(...parts);
  }

  async function poll(taskId) {
    if (!alive || current !== taskId) return;
    try {
      const s = await api(`/api/v1/tasks/${encodeURIComponent(taskId)}/status/`);
      setProgress(bar, s.progress, s.status, s.message);
      status.textContent = `Task ${shortId(taskId)}: ${s.status} · ${Math.round(s.progress)} % · ${s.message}`;
      if (s.status === "SUCCESS") {
        cancelButton.hidden = true;
        const r = await api(`/api/v1/tasks/${encodeURIComponent(taskId)}/result/`);
        showResult(r.result);
        return;
      }
      if (s.status === "FAILURE" || s.status === "CANCELLED") {
        cancelButton.hidden = true;
        const r = await api(`/api/v1/tasks/${encodeURIComponent(taskId)}/result/`, { allow: [409] });
        if (r && r.error) status.textContent += ` — ${r.error.message}`;
        return;
      }
    } catch (e) {
      showError(e);
      return;
    }
    timer = setTimeout(() => poll(taskId), POLL_MS);
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    errors.hidden = true;
    clear(output);
    submitButton.disabled = true;
    try {
      const created = await api("/api/v1/tasks/submit/", { method: "POST", body: await body() });
      current = created.task_id;
      bar.hidden = false;
      cancelButton.hidden = false;
      setProgress(bar, 0, created.status, created.message);
      status.textContent = `Task ${shortId(created.task_id)} submitted on queue ${created.queue}`;
      poll(created.task_id);
    } catch (e) {
      showError(e);
    } finally {
      submitButton.disabled = false;
    }
  });
  cancelButton.addEventListener("click", async () => {
    if (!current) return;
    try {
      await api(`/api/v1/tasks/${encodeURIComponent(current)}/cancel/`, { method: "POST" });
    } catch (e) {
      showError(e);
    }
  });
  typeSelect.addEventListener("change", renderFields);

  clear(main).append(
    h("h1", {}, "Images"),
    h("p", { class: "summary" }, "Generate, swap faces, remove backgrounds or objects, restyle. Image generation here is procedural (no text-to-image model is installed)."),
    form,
    errors,
    h("section", { class: "card", "aria-label": "Result" }, status, bar, cancelButton, output),
  );
  renderFields();
  api("/api/v1/images")
    .then((d) => {
      describe = d;
      if (alive) renderFields();
    })
    .catch(() => {});
  return () => {
    alive = false;
    if (timer) clearTimeout(timer);
  };
}

export const nav = { href: "#/images", label: "Images" };
export const routes = [{ re: /^\/images$/, view: imagesView, title: "Images" }];
