// The speech workload's dashboard page: resources with their ratings and
// impressions, a form to add one, and a resource's reference audio and
// attempts (transcript, score). Uses the shell's helpers by absolute URL.

import { api, auth, url } from "/js/api.js";
import { clear, errorText, fmtNumber, h } from "/js/dom.js";

const fmtScore = (x) => (x === null || x === undefined ? "–" : Number(x).toFixed(1));

function resourceRow(r) {
  return h(
    "tr",
    {},
    h("td", {}, h("a", { href: `#/speech/${encodeURIComponent(r.id)}` }, r.title)),
    h("td", { class: "num" }, fmtScore(r.rating)),
    h("td", { class: "num" }, fmtScore(r.average_score)),
    h("td", { class: "num" }, fmtNumber(r.attempts_count || 0)),
  );
}

function listView(main) {
  const status = h("p", { class: "summary", "aria-live": "polite" }, "Loading resources…");
  const body = h("tbody");
  const title = h("input", { name: "title", required: true, maxlength: 300, "aria-label": "Title" });
  const text = h("textarea", { name: "reference_text", required: true, rows: 3, "aria-label": "Reference text" });
  const form = h(
    "form",
    { class: "card" },
    h("h2", {}, "New resource"),
    h("label", {}, "Title ", title),
    h("label", {}, "Reference text ", text),
    h("button", { type: "submit", class: "button" }, "Create"),
  );
  const formStatus = h("p", { class: "summary", "aria-live": "polite" });
  async function load() {
    try {
      const page = await api("/api/resources", { query: { limit: 100 } });
      clear(body).append(...page.data.map(resourceRow));
      status.textContent = `${fmtNumber(page.count)} resources`;
    } catch (e) {
      status.textContent = errorText(e);
    }
  }
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      const r = await api("/api/resources", { method: "POST", body: { title: title.value, reference_text: text.value } });
      formStatus.textContent = `Created ${r.title}`;
      form.reset();
      await load();
    } catch (e) {
      formStatus.textContent = errorText(e);
    }
  });
  clear(main).append(
    h("h1", {}, "Speech"),
    form,
    formStatus,
    status,
    h(
      "table",
      { class: "table" },
      h("thead", {}, h("tr", {}, h("th", {}, "Resource"), h("th", {}, "Rating"), h("th", {}, "Average score"), h("th", {}, "Attempts"))),
      body,
    ),
  );
  load();
  return null;
}

function resourceView(main, { params }) {
  const id = params[0];
  const heading = h("h1", {}, "Resource");
  const facts = h("dl", { class: "facts" });
  const attempts = h("tbody");
  const status = h("p", { class: "summary", "aria-live": "polite" }, "Loading…");
  clear(main).append(
    h("p", {}, h("a", { href: "#/speech" }, "‹ All resources")),
    heading,
    status,
    facts,
    h("h2", {}, "Attempts"),
    h(
      "table",
      { class: "table" },
      h("thead", {}, h("tr", {}, h("th", {}, "User"), h("th", {}, "Status"), h("th", {}, "Transcript"), h("th", {}, "Score"))),
      attempts,
    ),
  );
  (async () => {
    try {
      const r = await api(`/api/resources/${encodeURIComponent(id)}`);
      heading.textContent = r.title;
      clear(facts).append(
        h("dt", {}, "Reference text"), h("dd", {}, r.reference_text),
        h("dt", {}, "Rating"), h("dd", {}, fmtScore(r.rating)),
        h("dt", {}, "Impressions"), h("dd", {}, `${fmtNumber(r.impressions)} (+${fmtNumber(r.impressions_pending)} not synced)`),
      );
      if (r.has_audio) {
        facts.append(h("dt", {}, "Reference audio"), h("dd", {}, h("audio", { controls: true, src: url(`/api/resources/${encodeURIComponent(id)}/audio`, { api_key: auth.key }) })));
      }
      const page = await api(`/api/resources/${encodeURIComponent(id)}/attempts`, { query: { limit: 100 } });
      clear(attempts).append(
        ...page.data.map((a) =>
          h("tr", {}, h("td", {}, a.user_name), h("td", {}, a.status), h("td", {}, a.transcript || a.error_message || "–"), h("td", { class: "num" }, fmtScore(a.score))),
        ),
      );
      status.textContent = `${fmtNumber(page.count)} attempts`;
    } catch (e) {
      status.textContent = errorText(e);
    }
  })();
  return null;
}

export const nav = { href: "#/speech", label: "Speech" };
export const routes = [
  { re: /^\/speech$/, view: listView, title: "Speech" },
  { re: /^\/speech\/([^/]+)$/, view: resourceView, title: "Resource" },
];
