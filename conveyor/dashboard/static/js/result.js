// Results rendered for what they hold: a JSON tree always, and inline images,
// audio players, video and download links for the media and files found in it.

import { fmtBytes, h } from "./dom.js";

const TYPE_KEYS = ["content_type", "mime_type", "mimetype", "media_type", "mime"];
const DATA_KEYS = ["data", "base64", "b64", "content", "data_base64", "bytes_base64"];
const IMAGE_EXT = /\.(png|jpe?g|gif|webp|svg|bmp|avif|ico)(\?|#|$)/i;
const AUDIO_EXT = /\.(mp3|wav|ogg|oga|flac|m4a|aac|opus|weba)(\?|#|$)/i;
const VIDEO_EXT = /\.(mp4|webm|mov|m4v|ogv)(\?|#|$)/i;
const URL_KEY = /(^|_)(url|uri|href|link|download|file_url)$/i;
const B64 = /^[A-Za-z0-9+/=\s]+$/;
const SHORT_STRING = 300;

function kindOfType(type) {
  const t = String(type || "").toLowerCase();
  if (t.startsWith("image/")) return "image";
  if (t.startsWith("audio/")) return "audio";
  if (t.startsWith("video/")) return "video";
  return "file";
}

/** Whether ``s`` is a link the page may follow: http(s), or a path on this server. */
export function safeUrl(s) {
  if (typeof s !== "string" || s.length > 4096 || /\s/.test(s)) return false;
  return /^https?:\/\//i.test(s) || /^\/(?!\/)/.test(s);
}

function fromUrl(url, key) {
  if (IMAGE_EXT.test(url)) return { kind: "image", src: url, key };
  if (AUDIO_EXT.test(url)) return { kind: "audio", src: url, key };
  if (VIDEO_EXT.test(url)) return { kind: "video", src: url, key };
  return { kind: "file", src: url, key };
}

/** Media and files inside a result, found by walking it (bounded in depth and count). */
export function findMedia(value) {
  const found = [];
  const walk = (v, key, depth) => {
    if (found.length >= 20 || depth > 6 || v === null || v === undefined) return;
    if (typeof v === "string") {
      const m = /^data:([a-z]+\/[a-z0-9.+-]+)(;[^,]*)?,/i.exec(v);
      if (m) {
        const kind = kindOfType(m[1]);
        found.push({ kind, src: v, key, type: m[1], size: Math.round((v.length - m[0].length) * 0.75) });
      } else if (URL_KEY.test(key || "") && safeUrl(v)) {
        // Only keys that name a link count, so that file-system paths and ids stay text.
        found.push(fromUrl(v, key));
      } else if (/^https?:\/\//i.test(v) && safeUrl(v) && (IMAGE_EXT.test(v) || AUDIO_EXT.test(v) || VIDEO_EXT.test(v))) {
        found.push(fromUrl(v, key));
      }
      return;
    }
    if (Array.isArray(v)) {
      v.slice(0, 50).forEach((item, i) => walk(item, `${key || "item"}[${i}]`, depth + 1));
      return;
    }
    if (typeof v === "object") {
      const typeKey = TYPE_KEYS.find((k) => typeof v[k] === "string");
      const dataKey = DATA_KEYS.find((k) => typeof v[k] === "string" && v[k].length > 16 && B64.test(v[k].slice(0, 200)));
      if (typeKey && dataKey) {
        const type = v[typeKey];
        const b64 = v[dataKey].replace(/\s/g, "");
        found.push({
          kind: kindOfType(type),
          src: `data:${type};base64,${b64}`,
          key: key || dataKey,
          type,
          name: v.filename || v.name,
          size: Math.round(b64.length * 0.75),
        });
      }
      for (const [k, child] of Object.entries(v)) {
        if (typeKey && k === dataKey) continue;
        // "image_base64" beside "content_type": base64 named by its key
        if (typeKey && typeof child === "string" && /_(b64|base64)$/.test(k) && B64.test(child.slice(0, 200))) {
          const type = v[typeKey];
          found.push({ kind: kindOfType(type), src: `data:${type};base64,${child.replace(/\s/g, "")}`, key: k, type });
          continue;
        }
        walk(child, k, depth + 1);
      }
    }
  };
  walk(value, "", 0);
  return found;
}

function mediaFigure(m, index) {
  const caption = h("figcaption", {}, m.name || m.key || `item ${index + 1}`, m.type ? ` · ${m.type}` : "", m.size ? ` · ${fmtBytes(m.size)}` : "");
  const name = m.name || `${(m.key || "result").replace(/[^\w.-]+/g, "_")}`;
  const download = h("a", { href: m.src, download: name, class: "button small" }, "Download");
  if (m.kind === "image") {
    return h("figure", { class: "media" }, h("img", { src: m.src, alt: `Result image: ${m.key || "image"}`, loading: "lazy" }), caption, download);
  }
  if (m.kind === "audio") {
    return h("figure", { class: "media" }, h("audio", { src: m.src, controls: true, preload: "metadata", "aria-label": `Result audio: ${m.key || "audio"}` }), caption, download);
  }
  if (m.kind === "video") {
    return h("figure", { class: "media" }, h("video", { src: m.src, controls: true, preload: "metadata", "aria-label": `Result video: ${m.key || "video"}` }), caption, download);
  }
  const label = m.src.startsWith("data:") ? name : m.src.split("/").pop() || m.src;
  return h("p", { class: "file-link" }, h("a", { href: m.src, download: m.src.startsWith("data:") ? name : null, target: m.src.startsWith("data:") ? null : "_blank", rel: "noopener" }, `Download ${label}`), ` (${m.key || "file"})`);
}

export function mediaList(value) {
  const media = findMedia(value);
  if (!media.length) return null;
  return h("div", { class: "media-list" }, media.map(mediaFigure));
}

function preview(v) {
  if (Array.isArray(v)) return `[ ${v.length} item${v.length === 1 ? "" : "s"} ]`;
  const n = Object.keys(v).length;
  return `{ ${n} key${n === 1 ? "" : "s"} }`;
}

function leaf(v) {
  if (v === null) return h("span", { class: "j-null" }, "null");
  if (typeof v === "string") {
    if (v.startsWith("data:") && v.length > 120) {
      return h("span", { class: "j-string" }, `"${v.slice(0, 40)}…" (${fmtBytes(Math.round(v.length * 0.75))} of data)`);
    }
    if (v.length > SHORT_STRING) {
      const shortText = `"${v.slice(0, SHORT_STRING)}…"`;
      const span = h("span", { class: "j-string" }, shortText);
      const more = h("button", { type: "button", class: "link-button", "aria-expanded": "false" }, `show all ${v.length} characters`);
      more.addEventListener("click", () => {
        const open = more.getAttribute("aria-expanded") === "true";
        span.textContent = open ? shortText : `"${v}"`;
        more.setAttribute("aria-expanded", String(!open));
        more.textContent = open ? `show all ${v.length} characters` : "show less";
      });
      return h("span", {}, span, " ", more);
    }
    return h("span", { class: "j-string" }, `"${v}"`);
  }
  return h("span", { class: `j-${typeof v}` }, String(v));
}

/** A JSON value as nested, keyboard-operable disclosure lists. */
export function jsonTree(value, depth = 0) {
  if (value === null || typeof value !== "object") return leaf(value);
  const entries = Array.isArray(value) ? value.map((v, i) => [i, v]) : Object.entries(value);
  if (!entries.length) return h("span", { class: "j-empty" }, Array.isArray(value) ? "[]" : "{}");
  const shown = entries.slice(0, 200);
  const list = h(
    "ul",
    { class: "j-list" },
    shown.map(([k, v]) => {
      const keyEl = h("span", { class: Array.isArray(value) ? "j-index" : "j-key" }, Array.isArray(value) ? `${k}` : `${k}`);
      if (v !== null && typeof v === "object" && Object.keys(v).length) {
        return h(
          "li",
          {},
          h("details", { open: depth < 2 && Object.keys(v).length <= 30 }, h("summary", {}, keyEl, ": ", h("span", { class: "j-preview" }, preview(v))), jsonTree(v, depth + 1)),
        );
      }
      return h("li", {}, keyEl, ": ", jsonTree(v, depth + 1));
    }),
    entries.length > shown.length ? h("li", { class: "j-more" }, `… ${entries.length - shown.length} more`) : null,
  );
  return depth === 0 ? h("div", { class: "json" }, list) : list;
}
