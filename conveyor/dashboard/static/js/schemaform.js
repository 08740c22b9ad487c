// A form generated from a JSON schema (pydantic's): a new task type gets its
// form with no change here. Validates as the server would and shows the
// server's 422 field errors beside their fields.

import { h, uid } from "./dom.js";

function resolve(schema, root) {
  let s = schema || {};
  for (let i = 0; i < 10 && s.$ref; i += 1) {
    const parts = s.$ref.replace(/^#\//, "").split("/");
    let target = root;
    for (const p of parts) target = target ? target[p] : undefined;
    const { $ref, ...rest } = s;
    s = { ...(target || {}), ...rest };
  }
  if (Array.isArray(s.allOf) && s.allOf.length === 1) {
    const { allOf, ...rest } = s;
    s = { ...resolve(allOf[0], root), ...rest };
  }
  return s;
}

/** What kind of input a property needs: {kind, nullable, schema}. */
export function describe(prop, root) {
  let s = resolve(prop, root);
  let nullable = false;
  const union = s.anyOf || s.oneOf;
  if (Array.isArray(union)) {
    const options = union.map((o) => resolve(o, root));
    const nonNull = options.filter((o) => o.type !== "null");
    nullable = nonNull.length < options.length;
    if (nonNull.length === 1) {
      const { anyOf, oneOf, ...rest } = s;
      s = { ...nonNull[0], ...rest };
    } else {
      return { kind: "json", nullable, schema: s };
    }
  }
  let type = s.type;
  if (Array.isArray(type)) {
    nullable = nullable || type.includes("null");
    const rest = type.filter((t) => t !== "null");
    type = rest.length === 1 ? rest[0] : undefined;
  }
  if (Array.isArray(s.enum)) return { kind: "enum", nullable: nullable || s.enum.includes(null), schema: s, options: s.enum.filter((v) => v !== null) };
  if (s.const !== undefined) return { kind: "enum", nullable, schema: s, options: [s.const] };
  if (type === "boolean") return { kind: "boolean", nullable, schema: s };
  if (type === "integer" || type === "number") return { kind: type, nullable, schema: s };
  if (type === "string") return { kind: "string", nullable, schema: s };
  if (type === "array") {
    const items = resolve(s.items || {}, root);
    if (items.type === "string" || Array.isArray(items.enum)) return { kind: "strings", nullable, schema: s, items };
    if (items.type === "integer" || items.type === "number") return { kind: "numbers", nullable, schema: s, items };
  }
  return { kind: "json", nullable, schema: s };
}

function label(name, s) {
  return s.title || name.replace(/_/g, " ").replace(/^\w/, (c) => c.toUpperCase());
}

function rangeHint(s) {
  const bits = [];
  if (s.minimum !== undefined) bits.push(`at least ${s.minimum}`);
  if (s.exclusiveMinimum !== undefined) bits.push(`more than ${s.exclusiveMinimum}`);
  if (s.maximum !== undefined) bits.push(`at most ${s.maximum}`);
  if (s.exclusiveMaximum !== undefined) bits.push(`less than ${s.exclusiveMaximum}`);
  if (s.minLength !== undefined && s.minLength > 0) bits.push(`${s.minLength}+ characters`);
  if (s.maxLength !== undefined) bits.push(`up to ${s.maxLength} characters`);
  if (s.minItems !== undefined && s.minItems > 0) bits.push(`${s.minItems}+ items`);
  if (s.maxItems !== undefined) bits.push(`up to ${s.maxItems} items`);
  return bits.join(", ");
}

function checkNumber(v, s, integer) {
  if (!Number.isFinite(v)) return "Enter a number.";
  if (integer && !Number.isInteger(v)) return "Enter a whole number.";
  if (s.minimum !== undefined && v < s.minimum) return `Must be at least ${s.minimum}.`;
  if (s.exclusiveMinimum !== undefined && v <= s.exclusiveMinimum) return `Must be more than ${s.exclusiveMinimum}.`;
  if (s.maximum !== undefined && v > s.maximum) return `Must be at most ${s.maximum}.`;
  if (s.exclusiveMaximum !== undefined && v >= s.exclusiveMaximum) return `Must be less than ${s.exclusiveMaximum}.`;
  return null;
}

function checkString(v, s) {
  if (s.minLength !== undefined && v.length < s.minLength) return `Must be at least ${s.minLength} characters.`;
  if (s.maxLength !== undefined && v.length > s.maxLength) return `Must be at most ${s.maxLength} characters.`;
  if (s.pattern) {
    try {
      if (!new RegExp(s.pattern, "u").test(v)) return `Must match the pattern ${s.pattern}.`;
    } catch {
      // a pattern JavaScript cannot read is left to the server
    }
  }
  return null;
}

class Field {
  constructor(name, prop, root, required) {
    this.name = name;
    this.d = describe(prop, root);
    this.s = this.d.schema;
    this.required = required && !this.d.nullable;
    this.id = uid(`p-${name}`);
    this.hintId = `${this.id}-hint`;
    this.errorId = `${this.id}-error`;
    this.hasDefault = Object.prototype.hasOwnProperty.call(this.s, "default");
    this.build();
  }

  build() {
    const s = this.s;
    const def = this.hasDefault ? this.s.default : undefined;
    const describedBy = `${this.hintId} ${this.errorId}`;
    const common = { id: this.id, name: this.name, "aria-describedby": describedBy, required: this.required };
    const k = this.d.kind;
    if (k === "boolean" && !this.d.nullable) {
      this.input = h("input", { ...common, type: "checkbox", checked: def === true, required: false });
    } else if (k === "boolean" || k === "enum") {
      const options = k === "boolean" ? [true, false] : this.d.options;
      this.options = options;
      this.input = h("select", common);
      if (this.d.nullable || !this.hasDefault) {
        this.input.append(h("option", { value: "" }, this.d.nullable ? "— none —" : "— choose —"));
      }
      options.forEach((v, i) =>
        this.input.append(h("option", { value: String(i), selected: this.hasDefault && def === v }, String(v))),
      );
    } else if (k === "integer" || k === "number") {
      const min = s.minimum ?? s.exclusiveMinimum;
      const max = s.maximum ?? s.exclusiveMaximum;
      this.input = h("input", {
        ...common,
        type: "number",
        inputmode: k === "integer" ? "numeric" : "decimal",
        step: k === "integer" ? "1" : "any",
        min,
        max,
        value: def === null || def === undefined ? "" : String(def),
      });
    } else if (k === "string") {
      const long = (s.maxLength || 0) > 500 || s.format === "textarea";
      const type = s.format === "email" ? "email" : s.format === "uri" ? "url" : s.format === "password" ? "password" : "text";
      const value = def === null || def === undefined ? "" : String(def);
      this.input = long
        ? h("textarea", { ...common, rows: 4, maxlength: s.maxLength, minlength: s.minLength })
        : h("input", { ...common, type, maxlength: s.maxLength, minlength: s.minLength, value, autocomplete: "off" });
      if (long) this.input.value = value;
    } else if (k === "strings" || k === "numbers") {
      this.input = h("textarea", { ...common, rows: 3, spellcheck: "false" });
      if (Array.isArray(def)) this.input.value = def.join("\n");
    } else {
      this.input = h("textarea", { ...common, rows: 4, class: "mono", spellcheck: "false" });
      if (def !== undefined && def !== null) this.input.value = JSON.stringify(def, null, 2);
    }
    const hints = [];
    if (s.description) hints.push(s.description);
    const range = rangeHint(k === "strings" || k === "numbers" ? { ...s, ...(this.d.items || {}) } : s);
    if (range) hints.push(range);
    if (k === "strings" || k === "numbers") hints.push("one per line");
    if (k === "json") hints.push("JSON");
    if (this.d.nullable && k !== "boolean" && k !== "enum") hints.push("leave empty for none");
    if (this.hasDefault && def !== null && k !== "boolean") hints.push(`default ${JSON.stringify(def)}`);
    this.error = h("p", { class: "field-error", id: this.errorId });
    const labelEl = h(
      "label",
      { for: this.id },
      label(this.name, s),
      this.required ? h("span", { class: "required", "aria-hidden": "true" }, " *") : null,
      this.required ? h("span", { class: "visually-hidden" }, " (required)") : null,
    );
    const hint = h("p", { class: "hint", id: this.hintId }, hints.join(" · "));
    this.element =
      k === "boolean" && !this.d.nullable
        ? h("div", { class: "field check", "data-field": this.name }, h("div", { class: "check-row" }, this.input, labelEl), hint, this.error)
        : h("div", { class: "field", "data-field": this.name }, labelEl, this.input, hint, this.error);
  }

  /** {value} to send, {omit: true} to leave to the server's default, or {error}. */
  read() {
    const k = this.d.kind;
    const s = this.s;
    if (k === "boolean" && !this.d.nullable) return { value: this.input.checked };
    if (k === "boolean" || k === "enum") {
      if (this.input.value === "") return this.empty();
      return { value: this.options[Number(this.input.value)] };
    }
    const raw = this.input.value.trim();
    if (raw === "") return this.empty();
    if (k === "integer" || k === "number") {
      const v = Number(raw);
      const err = checkNumber(v, s, k === "integer");
      return err ? { error: err } : { value: v };
    }
    if (k === "string") {
      const v = this.input.value;
      const err = checkString(v, s);
      return err ? { error: err } : { value: v };
    }
    if (k === "strings" || k === "numbers") {
      const lines = this.input.value.split("\n").map((l) => l.trim()).filter(Boolean);
      const values = k === "numbers" ? lines.map(Number) : lines;
      if (s.minItems !== undefined && values.length < s.minItems) return { error: `Give at least ${s.minItems}.` };
      if (s.maxItems !== undefined && values.length > s.maxItems) return { error: `Give at most ${s.maxItems}.` };
      for (const v of values) {
        const err =
          k === "numbers" ? checkNumber(v, this.d.items, this.d.items.type === "integer") : Array.isArray(this.d.items.enum) ? (this.d.items.enum.includes(v) ? null : `"${v}" is not one of ${this.d.items.enum.join(", ")}.`) : checkString(v, this.d.items);
        if (err) return { error: `${v}: ${err}` };
      }
      return { value: values };
    }
    try {
      return { value: JSON.parse(raw) };
    } catch (e) {
      return { error: `Not valid JSON: ${e.message}` };
    }
  }

  empty() {
    if (this.required) return { error: "Required." };
    // Empty on a nullable field whose default is a value means "none", said explicitly.
    if (this.d.nullable && this.hasDefault && this.s.default !== null) return { value: null };
    return { omit: true };
  }

  setError(message) {
    this.error.textContent = message || "";
    if (message) this.input.setAttribute("aria-invalid", "true");
    else this.input.removeAttribute("aria-invalid");
  }
}

/** Fields for ``schema``: {element, read() → {params, ok}, showErrors(details) → unmatched, clear()}. */
export function schemaFields(schema) {
  const root = schema || {};
  const required = new Set(root.required || []);
  const fields = Object.entries(root.properties || {}).map(([name, prop]) => new Field(name, prop, root, required.has(name)));
  const element = h("div", { class: "schema-fields" });
  if (!fields.length) element.append(h("p", { class: "summary" }, "This task type takes no params."));
  for (const f of fields) element.append(f.element);
  const byName = new Map(fields.map((f) => [f.name, f]));

  return {
    element,
    fields,
    read() {
      const params = {};
      let firstBad = null;
      for (const f of fields) {
        const r = f.read();
        f.setError(r.error);
        if (r.error) firstBad = firstBad || f;
        else if (!r.omit) params[f.name] = r.value;
      }
      if (firstBad) firstBad.input.focus();
      return { params, ok: !firstBad };
    },
    /** Put a 422's field errors beside their fields; returns those that match no field. */
    showErrors(details) {
      const unmatched = [];
      let first = null;
      for (const d of Array.isArray(details) ? details : []) {
        const path = String(d.field || "").replace(/^params\./, "");
        const f = byName.get(path.split(".")[0]);
        if (f) {
          f.setError(d.message);
          first = first || f;
        } else unmatched.push(d);
      }
      if (first) first.input.focus();
      return unmatched;
    },
    clear() {
      for (const f of fields) f.setError("");
    },
  };
}
