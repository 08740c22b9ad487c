// The dashboard's shell: session and sign-in, the hash router, the live announcer.

import { api, auth, prepareStreams } from "./api.js";
import { detailView } from "./detail.js";
import { append, clear, errorText, h, uid } from "./dom.js";
import { submitView } from "./submit.js";
import { systemView } from "./system.js";
import { tasksView } from "./tasks.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const account = document.getElementById("account");
const announcer = document.getElementById("announcer");

const CORE_ROUTES = [
  { re: /^\/(tasks)?$/, view: tasksView, nav: "tasks", title: "Tasks" },
  { re: /^\/tasks\/([^/]+)$/, view: detailView, nav: "tasks", title: "Task" },
  { re: /^\/submit$/, view: submitView, nav: "submit", title: "Submit" },
  { re: /^\/system$/, view: systemView, nav: "system", title: "System" },
];

/** The core's routes, then each loaded workload page's (see loadPages). */
let ROUTES = CORE_ROUTES;

let announceTimer = null;
/** Say something to screen readers (role=status, polite). */
function announce(message) {
  clearTimeout(announceTimer);
  announcer.textContent = "";
  // A fresh text node after a tick makes repeated messages be read again.
  announceTimer = setTimeout(() => {
    announcer.textContent = message;
  }, 50);
}

const ctx = {
  session: null,
  announce,
  /** The loaded workloads' page modules: { name, nav?, routes?, submitSections?, resultPanel? }. */
  pages: [],
  _types: null,
  /** Every task type with its params schema, fetched once per session. */
  taskTypes() {
    if (!this._types) {
      this._types = api("/api/v1/task-types").then((r) => r.data);
      this._types.catch(() => {
        this._types = null;
      });
    }
    return this._types;
  },
  hasWorkload(name) {
    return Boolean(this.session && this.session.workloads.includes(name));
  },
};

let cleanup = null;
let rendered = false;

function parseHash() {
  const raw = location.hash.startsWith("#/") ? location.hash.slice(1) : "/tasks";
  const [path, qs] = raw.split("?");
  return { path, query: new URLSearchParams(qs || "") };
}

function stopView() {
  if (cleanup) {
    try {
      cleanup();
    } catch (e) {
      console.warn("view cleanup failed", e);
    }
  }
  cleanup = null;
}

function route() {
  if (!ctx.session) return;
  const { path, query } = parseHash();
  stopView();
  clear(main);
  let found = null;
  let params = [];
  for (const r of ROUTES) {
    const m = path.match(r.re);
    if (m) {
      found = r;
      params = m.slice(1).filter(Boolean).map(decodeURIComponent);
      break;
    }
  }
  for (const a of nav.querySelectorAll("a[data-nav]")) {
    if (found && a.dataset.nav === found.nav) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (!found) {
    document.title = "Not found · Conveyor";
    append(main, h("h1", { tabindex: "-1" }, "Not found"), h("p", {}, "No page here. ", h("a", { href: "#/tasks" }, "Go to the tasks.")));
  } else {
    document.title = `${found.title} · Conveyor`;
    cleanup = found.view(main, { params, query }, ctx) || null;
  }
  // Move focus to the new page's heading on navigation (not on the first load),
  // so keyboard and screen reader users start at the top of what changed.
  if (rendered) {
    const heading = main.querySelector("h1");
    if (heading) {
      heading.setAttribute("tabindex", "-1");
      heading.focus({ preventScroll: false });
    }
  }
  rendered = true;
}

function showSignIn(message) {
  stopView();
  ctx.session = null;
  ctx._types = null;
  nav.hidden = true;
  account.hidden = true;
  document.title = "Sign in · Conveyor";
  const inputId = uid("key");
  const errorId = uid("key-error");
  const input = h("input", {
    id: inputId,
    name: "api_key",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    "aria-describedby": errorId,
  });
  const error = h("p", { id: errorId, class: "field-error", role: "alert" }, message || "");
  const button = h("button", { type: "submit", class: "button primary" }, "Sign in");
  const form = h(
    "form",
    { class: "card signin", novalidate: true },
    h("h1", {}, "Sign in"),
    h("p", {}, "This Conveyor needs an API key. The key stays in this browser tab until you sign out or close it."),
    h("div", { class: "field" }, h("label", { for: inputId }, "API key"), input, error),
    h("div", { class: "actions" }, button),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const key = input.value.trim();
    if (!key) {
      error.textContent = "Enter your API key.";
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    button.disabled = true;
    error.textContent = "";
    auth.set(key);
    try {
      const session = await api("/api/v1/session");
      if (!session.authenticated) {
        auth.clear();
        error.textContent = "That key was not accepted. Check it and try again.";
        input.setAttribute("aria-invalid", "true");
        input.focus();
        return;
      }
      start(session);
    } catch (err) {
      auth.clear();
      error.textContent = errorText(err);
    } finally {
      button.disabled = false;
    }
  });
  clear(main).append(form);
  input.focus();
}

/**
 * Import each loaded workload's page module (GET /api/v1/workloads names them):
 * its routes join the router, its nav entry the nav bar, its stylesheet the page.
 * A page that fails to load is left out; the rest of the dashboard works.
 */
async function loadPages() {
  for (const a of nav.querySelectorAll("li[data-workload]")) a.remove();
  let listing = { data: [] };
  try {
    listing = await api("/api/v1/workloads");
  } catch (e) {
    console.warn("workload pages are not available", e);
  }
  const pages = [];
  const routes = [...CORE_ROUTES];
  const navList = nav.querySelector("ul");
  const systemItem = navList.querySelector('a[data-nav="system"]').parentElement;
  for (const w of listing.data) {
    if (!w.page) continue;
    try {
      const mod = await import(w.page);
      pages.push({ name: w.name, ...mod });
      for (const r of mod.routes || []) routes.push({ nav: w.name, ...r });
      if (w.stylesheet && !document.querySelector(`link[data-workload="${w.name}"]`)) {
        document.head.append(h("link", { rel: "stylesheet", href: w.stylesheet, "data-workload": w.name }));
      }
      if (mod.nav) {
        navList.insertBefore(h("li", { "data-workload": w.name }, h("a", { href: mod.nav.href, "data-nav": w.name }, mod.nav.label)), systemItem);
      }
    } catch (e) {
      console.warn(`the ${w.name} page did not load`, e);
    }
  }
  ctx.pages = pages;
  ROUTES = routes;
}

async function start(session) {
  // Pages and the stream token first: the router ignores hash changes until the session is set.
  await Promise.all([loadPages(), prepareStreams()]);
  ctx.session = session;
  ctx._types = null;
  nav.hidden = false;
  account.hidden = !session.auth_required;
  document.getElementById("tenant").textContent = session.tenant || "";
  rendered = false;
  route();
}

async function boot() {
  let session;
  try {
    session = await api("/api/v1/session");
  } catch (err) {
    clear(main).append(
      h("h1", {}, "Conveyor"),
      h("p", { class: "notice error", role: "alert" }, `The API did not answer: ${errorText(err)}`),
      h("button", { type: "button", class: "button", onclick: boot }, "Try again"),
    );
    return;
  }
  if (session.auth_required && !session.authenticated) {
    const hadKey = Boolean(auth.key);
    auth.clear();
    showSignIn(hadKey ? "Your key is no longer accepted. Sign in again." : "");
    return;
  }
  start(session);
}

document.getElementById("signout").addEventListener("click", () => {
  auth.clear();
  announce("Signed out");
  showSignIn("");
});

document.getElementById("skip").addEventListener("click", (e) => {
  e.preventDefault();
  main.focus();
});

window.addEventListener("conveyor:unauthorized", () => {
  if (!ctx.session) return;
  auth.clear();
  showSignIn("Your key is no longer accepted. Sign in again.");
});

window.addEventListener("hashchange", route);
boot();
