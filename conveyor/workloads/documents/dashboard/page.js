// The documents workload's dashboard page: upload with progress to "ready", a
// document's metadata and its chunks. Loaded by the dashboard shell from
// /api/v1/workloads; it uses the shell's helpers by absolute URL.

import { ApiError, api, upload } from "/js/api.js";
import { clear, errorText, fmtAge, fmtBytes, fmtNumber, fmtTime, h, progressBar, setProgress, shortId, uid } from "/js/dom.js";

const CHUNKS_PER_PAGE = 20;
const STATUS_POLL = 500;

function fact(term, value) {
  return [h("dt", {}, term), h("dd", {}, value ?? "–")];
}

/** A document's metadata and its chunks, a page at a time. */
export function documentPanel(documentId, { headingLevel = 2, onTitle } = {}) {
  const H = `h${headingLevel}`;
  const meta = h("dl", { class: "facts" });
  const status = h("p", { class: "summary" }, "Loading the document…");
  const list = h("ol", { class: "chunks", start: 1 });
  const chunksSummary = h("p", { class: "summary", "aria-live": "polite" });
  const prev = h("button", { type: "button", class: "button small" }, "‹ Previous chunks");
  const next = h("button", { type: "button", class: "button small" }, "Next chunks ›");
  const pager = h("nav", { class: "pager", "aria-label": "Pages of chunks", hidden: true }, prev, next);
  const chunksHeadingId = uid("chunks");
  const panel = h(
    "div",
    { class: "document" },
    status,
    meta,
    h("section", { "aria-labelledby": chunksHeadingId }, h(H, { id: chunksHeadingId }, "Chunks"), chunksSummary, list, pager),
  );
  let offset = 0;
  let count = 0;
  let alive = true;

  async function loadMeta() {
    try {
      const d = await api(`/api/documents/${encodeURIComponent(documentId)}`);
      if (!alive) return;
      if (onTitle) onTitle(d.filename);
      status.textContent = d.ready ? "Ready" : d.status === "failed" ? `Failed: ${d.message || d.error_message || ""}` : `${d.status} · ${Math.round(d.progress)} %`;
      status.className = `summary doc-${d.status}`;
      clear(meta).append(
        ...fact("File", d.filename),
        ...fact("Kind", d.kind),
        ...fact("Size", fmtBytes(d.size_bytes)),
        ...fact("Status", d.status),
        ...fact("Chunks", fmtNumber(d.total_chunks || 0)),
        ...fact("Tokens", d.tokens === null ? "–" : fmtNumber(d.tokens)),
        ...fact("Language", d.language),
        ...fact("Uploaded", fmtTime(d.created_at)),
        ...fact("Processed", fmtTime(d.processing_completed_at)),
        ...fact("Task", d.task_id ? h("a", { href: `#/tasks/${encodeURIComponent(d.task_id)}` }, `${shortId(d.task_id)} (${d.task_status || "…"})`) : "–"),
      );
    } catch (e) {
      if (!alive) return;
      status.textContent = e instanceof ApiError && e.status === 404 ? "No document with this id." : `Could not load the document: ${errorText(e)}`;
      status.className = "summary notice error";
    }
  }

  async function loadChunks() {
    try {
      const page = await api(`/api/documents/${encodeURIComponent(documentId)}/chunks`, {
        query: { limit: CHUNKS_PER_PAGE, offset },
      });
      if (!alive) return;
      count = page.count;
      list.setAttribute("start", String(offset + 1));
      clear(list).append(
        ...page.data.map((c) => {
          const pages = !Array.isArray(c.pages) || !c.pages.length ? null : c.pages.length === 1 ? `page ${c.pages[0]}` : `pages ${c.pages[0]}–${c.pages[c.pages.length - 1]}`;
          const bits = [pages, `${fmtNumber(c.tokens)} tokens`, c.language].filter(Boolean).join(" · ");
          return h("li", { class: "chunk" }, h("p", { class: "chunk-meta" }, `Chunk ${c.index + 1}`, bits ? ` · ${bits}` : ""), h("p", { class: "chunk-text" }, c.text));
        }),
      );
      chunksSummary.textContent = count
        ? `Chunks ${fmtNumber(offset + 1)}–${fmtNumber(offset + page.data.length)} of ${fmtNumber(count)}`
        : "No chunks yet.";
      pager.hidden = count <= CHUNKS_PER_PAGE;
      prev.disabled = offset === 0;
      next.disabled = offset + CHUNKS_PER_PAGE >= count;
    } catch (e) {
      if (alive) chunksSummary.textContent = `Could not load chunks: ${errorText(e)}`;
    }
  }
  prev.addEventListener("click", () => {
    offset = Math.max(0, offset - CHUNKS_PER_PAGE);
    loadChunks();
  });
  next.addEventListener("click", () => {
    offset += CHUNKS_PER_PAGE;
    loadChunks();
  });
  loadMeta();
  loadChunks();
  return { element: panel, dispose: () => (alive = false) };
}

export function documentView(root, { params: [id] }) {
  const title = h("h1", {}, "Document");
  const panel = documentPanel(id, {
    onTitle: (name) => {
      title.textContent = name;
      document.title = `${name} · Conveyor`;
    },
  });
  root.append(h("p", { class: "crumbs" }, h("a", { href: "#/submit" }, "‹ Submit and upload")), title, panel.element);
  return () => panel.dispose();
}

/** The upload form: file → XHR upload progress → processing progress → ready, with a link to its chunks. */
export function uploadForm(ctx, onUploaded) {
  const inputId = uid("file");
  const hintId = uid("file-hint");
  const errorId = uid("file-error");
  const input = h("input", {
    id: inputId,
    name: "file",
    type: "file",
    accept: ".pdf,.docx,.html,.htm,.md,.markdown,.txt,text/plain,application/pdf",
    required: true,
    "aria-describedby": `${hintId} ${errorId}`,
  });
  const error = h("p", { class: "field-error", id: errorId });
  const button = h("button", { type: "submit", class: "button primary" }, "Upload");
  const bar = progressBar("Upload and processing");
  const stage = h("p", { class: "stage", "aria-live": "polite" });
  const result = h("p", { class: "upload-result" });
  const progress = h("div", { class: "upload-progress", hidden: true }, h("div", { class: "progress-cell" }, bar), stage, result);
  const form = h(
    "form",
    { class: "upload", novalidate: true },
    h(
      "div",
      { class: "field" },
      h("label", { for: inputId }, "Document"),
      input,
      h("p", { class: "hint", id: hintId }, "PDF, DOCX, HTML, Markdown or plain text. It is split into chunks you can read and search."),
      error,
    ),
    h("div", { class: "actions" }, button),
    progress,
  );
  let timer = null;
  let alive = true;

  function show(value, state, text) {
    setProgress(bar, value, state, text);
    stage.textContent = text;
  }

  async function follow(documentId) {
    try {
      const s = await api(`/api/documents/${encodeURIComponent(documentId)}/status`);
      if (!alive) return;
      if (s.ready) {
        show(100, "SUCCESS", `Ready: ${fmtNumber(s.total_chunks)} chunk${s.total_chunks === 1 ? "" : "s"}`);
        clear(result).append(
          h("a", { href: `#/documents/${encodeURIComponent(documentId)}`, class: "button" }, "View chunks"),
        );
        ctx.announce("The document is ready");
        button.disabled = false;
        if (onUploaded) onUploaded();
        return;
      }
      if (s.status === "failed") {
        show(50 + s.progress / 2, "FAILURE", `Processing failed: ${s.message}`);
        ctx.announce("Processing the document failed");
        button.disabled = false;
        return;
      }
      show(50 + s.progress / 2, "PROCESSING", `Processing ${Math.round(s.progress)} %${s.message ? `: ${s.message}` : ""}`);
    } catch (e) {
      if (!alive) return;
      stage.textContent = `Checking the document failed (${errorText(e)}); trying again…`;
    }
    timer = setTimeout(() => follow(documentId), STATUS_POLL);
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearTimeout(timer);
    error.textContent = "";
    input.removeAttribute("aria-invalid");
    const file = input.files && input.files[0];
    if (!file) {
      error.textContent = "Choose a file to upload.";
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    button.disabled = true;
    progress.hidden = false;
    clear(result);
    show(0, "PENDING", `Uploading ${file.name}…`);
    try {
      const answer = await upload("/api/documents/upload", file, (sent, totalBytes) => {
        // The upload is the first half of the bar; processing is the second.
        const pct = totalBytes ? (100 * sent) / totalBytes : 0;
        show(pct / 2, "PENDING", `Uploading ${Math.round(pct)} % of ${fmtBytes(totalBytes)}`);
      });
      if (!alive) return;
      ctx.announce(`${file.name} uploaded; processing`);
      show(50, "PROCESSING", "Uploaded; processing…");
      follow(answer.document_id);
    } catch (err) {
      button.disabled = false;
      if (!alive) return;
      progress.hidden = true;
      error.textContent = errorText(err);
      input.setAttribute("aria-invalid", "true");
      input.focus();
    }
  });

  return {
    element: form,
    dispose: () => {
      alive = false;
      clearTimeout(timer);
    },
  };
}

/** Document pages open from the Submit tab, so that tab stays current in the nav. */
export const routes = [{ re: /^\/documents\/([^/]+)$/, view: documentView, nav: "submit", title: "Document" }];

/** The Submit tab's upload form and the tenant's recent documents. */
export function submitSections(root, ctx, isAlive) {
  const docsHeading = uid("docs");
  const docsList = h("ul", { class: "link-list" });
  const loadDocuments = async () => {
    try {
      const page = await api("/api/documents", { query: { limit: 10 } });
      if (!isAlive()) return;
      clear(docsList).append(
        ...page.data.map((d) =>
          h("li", {}, h("a", { href: `#/documents/${encodeURIComponent(d.document_id)}` }, d.filename), ` · ${d.status} · ${d.total_chunks} chunks · `, h("time", { datetime: d.created_at, title: fmtTime(d.created_at) }, fmtAge(d.created_at))),
        ),
      );
      if (!page.data.length) docsList.append(h("li", { class: "summary" }, "No documents yet."));
    } catch {
      // the list is a convenience; the upload itself reports its errors
    }
  };
  const form = uploadForm(ctx, () => loadDocuments());
  const uploadHeading = uid("upload");
  root.append(
    h(
      "div",
      { class: "grid-2" },
      h("section", { class: "card", "aria-labelledby": uploadHeading }, h("h2", { id: uploadHeading }, "Upload a document"), form.element),
      h("section", { class: "card", "aria-labelledby": docsHeading }, h("h2", { id: docsHeading }, "Recent documents"), docsList),
    ),
  );
  loadDocuments();
  return form.dispose || null;
}

/** A finished documents.process task shows its document (metadata and chunks) on the task page. */
export function resultPanel(task) {
  const documentId = task.type === "documents.process" && task.result && task.result.document_id;
  if (!documentId) return null;
  const panel = documentPanel(documentId, { headingLevel: 3 });
  return {
    elements: [h("p", {}, h("a", { href: `#/documents/${encodeURIComponent(documentId)}` }, "Open the document")), panel.element],
    dispose: panel.dispose,
  };
}
