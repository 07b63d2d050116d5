// The deploy form is generated from an agent's config_schema (JSON Schema 2020-12). This module
// is the model: form values from defaults, which fields show (dependentRequired, if/then),
// browser-side validation, the config sent to the API, and the API's 422 pointers mapped back
// onto fields. Pointers here are relative to the config ("/webhook_url", "/knowledge_base/0/title").
import type { FieldError } from "./api";
import type { JsonSchema } from "./types";

export type FormValue = string | boolean | string[] | FormObject | FormObject[] | undefined;
export interface FormObject {
  [key: string]: FormValue;
}
export type Errors = Record<string, string>;

export type FieldKind =
  | "secret"
  | "enum"
  | "string"
  | "text"
  | "number"
  | "integer"
  | "boolean"
  | "multi" // array of enum strings: checkboxes
  | "list" // array of plain strings: one per line
  | "objects" // array of objects: repeated fieldsets
  | "object";

/** A scalar as text ("" for anything else). */
export function asText(value: unknown): string {
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "boolean") return String(value);
  return "";
}

export function typeOf(schema: JsonSchema): string {
  const t = schema.type;
  if (Array.isArray(t)) return t.find((x) => x !== "null") ?? "string";
  if (t) return t;
  if (schema.enum) return "string";
  if (schema.properties) return "object";
  return "string";
}

export function fieldKind(schema: JsonSchema): FieldKind {
  const type = typeOf(schema);
  if (schema.writeOnly) return "secret";
  if (type === "boolean") return "boolean";
  if (type === "number") return "number";
  if (type === "integer") return "integer";
  if (type === "object") return "object";
  if (type === "array") {
    const items = schema.items ?? {};
    if (typeOf(items) === "object") return "objects";
    return items.enum ? "multi" : "list";
  }
  if (schema.enum) return "enum";
  if (!schema.format && (schema.maxLength ?? 0) > 200) return "text";
  return "string";
}

/** The form value of one field from a stored/default config value. */
export function toFormValue(schema: JsonSchema, value: unknown): FormValue {
  switch (fieldKind(schema)) {
    case "secret":
      return "";
    case "boolean":
      return value === undefined ? false : Boolean(value);
    case "number":
    case "integer":
      return typeof value === "number" ? String(value) : "";
    case "multi":
      return Array.isArray(value) ? value.map(String) : [];
    case "list":
      return Array.isArray(value) ? value.map(String).join("\n") : "";
    case "objects":
      return Array.isArray(value) ? value.map((item) => objectValue(schema.items ?? {}, item)) : [];
    case "object":
      return objectValue(schema, value);
    default:
      return asText(value);
  }
}

function objectValue(schema: JsonSchema, value: unknown): FormObject {
  const source = value && typeof value === "object" ? (value as Record<string, unknown>) : {};
  const out: FormObject = {};
  for (const [key, sub] of Object.entries(schema.properties ?? {})) {
    out[key] = toFormValue(sub, source[key] !== undefined ? source[key] : sub.default);
  }
  return out;
}

/** Form values for a new deployment: the agent's default_config, then the schema's defaults. */
export function initialValues(schema: JsonSchema, defaults: Record<string, unknown>): FormObject {
  return objectValue(schema, defaults);
}

function isEmpty(value: FormValue): boolean {
  if (value === undefined || value === "") return true;
  if (Array.isArray(value)) return value.length === 0;
  if (typeof value === "string") return value.trim() === "";
  return false;
}

function matches(condition: JsonSchema, value: FormObject): boolean {
  for (const key of condition.required ?? []) if (isEmpty(value[key])) return false;
  for (const [key, sub] of Object.entries(condition.properties ?? {})) {
    const current = value[key];
    if (current === undefined) continue;
    if ("const" in sub && asText(current) !== asText(sub.const)) return false;
    if (sub.enum && !sub.enum.map(asText).includes(asText(current))) return false;
  }
  return true;
}

/** `then`/`else` branches of if/then/else (also inside allOf) that apply to this value. */
function activeBranches(schema: JsonSchema, value: FormObject): { on: JsonSchema[]; off: JsonSchema[] } {
  const on: JsonSchema[] = [];
  const off: JsonSchema[] = [];
  for (const part of [schema, ...(schema.allOf ?? [])]) {
    if (!part.if) continue;
    const hit = matches(part.if, value);
    if (part.then) (hit ? on : off).push(part.then);
    if (part.else) (hit ? off : on).push(part.else);
  }
  return { on, off };
}

/**
 * The properties of an object schema, with those of active if/then branches. Stored schemas
 * (jsonb) do not keep the order properties were written in, so the order is: the `required`
 * list's order, then the optional fields, secrets last.
 */
export function properties(schema: JsonSchema, value: FormObject): [string, JsonSchema][] {
  const out = new Map(Object.entries(schema.properties ?? {}));
  for (const branch of activeBranches(schema, value).on) {
    for (const [key, sub] of Object.entries(branch.properties ?? {})) {
      out.set(key, { ...(out.get(key) ?? {}), ...sub });
    }
  }
  const required = schema.required ?? [];
  const rank = ([key, sub]: [string, JsonSchema]): number => {
    const index = required.indexOf(key);
    if (index !== -1) return index;
    return required.length + (sub.writeOnly ? 2 : typeOf(sub) === "boolean" ? 1 : 0);
  };
  return [...out.entries()].map((entry, i) => ({ entry, i })).sort((a, b) => rank(a.entry) - rank(b.entry) || a.i - b.i).map((x) => x.entry);
}

/**
 * Whether a field shows. Fields named only in an inactive if/then branch are hidden, and a
 * dependentRequired field ({"webhook_token": ["webhook_url"]}) shows once what it depends on is set.
 */
export function isVisible(schema: JsonSchema, key: string, value: FormObject): boolean {
  const deps = schema.dependentRequired?.[key];
  if (deps && deps.some((dep) => isEmpty(value[dep]))) return !isEmpty(value[key]);
  const { on, off } = activeBranches(schema, value);
  const inOn = on.some((b) => b.properties && key in b.properties);
  const inOff = off.some((b) => b.properties && key in b.properties);
  const base = Boolean(schema.properties && key in schema.properties);
  return base || inOn || !inOff;
}

export function requiredKeys(schema: JsonSchema, value: FormObject): Set<string> {
  const out = new Set(schema.required ?? []);
  for (const branch of activeBranches(schema, value).on) for (const key of branch.required ?? []) out.add(key);
  for (const [key, deps] of Object.entries(schema.dependentRequired ?? {})) {
    if (!isEmpty(value[key])) for (const dep of deps) out.add(dep);
  }
  return out;
}

function checkFormat(format: string | undefined, text: string): string | null {
  if (format === "uri") {
    try {
      const url = new URL(text);
      if (url.protocol !== "https:" && url.protocol !== "http:") return "must be an http(s) URL";
    } catch {
      return "must be a valid URL";
    }
  }
  if (format === "email" && !/^[^\s@]+@[^\s@]+\.[^\s@]+$/.test(text)) return "must be an email address";
  return null;
}

function checkScalar(schema: JsonSchema, kind: FieldKind, value: FormValue): string | null {
  if (kind === "number" || kind === "integer") {
    const n = Number(value);
    if (!Number.isFinite(n)) return "must be a number";
    if (kind === "integer" && !Number.isInteger(n)) return "must be a whole number";
    if (schema.minimum !== undefined && n < schema.minimum) return `must be at least ${schema.minimum}`;
    if (schema.maximum !== undefined && n > schema.maximum) return `must be at most ${schema.maximum}`;
    if (schema.exclusiveMinimum !== undefined && n <= schema.exclusiveMinimum)
      return `must be more than ${schema.exclusiveMinimum}`;
    if (schema.exclusiveMaximum !== undefined && n >= schema.exclusiveMaximum)
      return `must be less than ${schema.exclusiveMaximum}`;
    return null;
  }
  if (typeof value !== "string") return null;
  const length = [...value].length;
  if (schema.minLength !== undefined && length < schema.minLength)
    return `must have at least ${schema.minLength} character${schema.minLength === 1 ? "" : "s"}`;
  if (schema.maxLength !== undefined && length > schema.maxLength)
    return `must have at most ${schema.maxLength} characters`;
  if (schema.enum && !schema.enum.map(String).includes(value)) return "must be one of the choices";
  if (schema.pattern && !new RegExp(schema.pattern, "u").test(value)) return "is not in the expected format";
  return checkFormat(schema.format, value);
}

export interface ValidateOptions {
  /** Secret fields that already have a stored value (kept when left blank). */
  keptSecrets?: Set<string>;
}

/** Browser-side checks: the same rules the server applies, reported at the same pointers. */
export function validate(schema: JsonSchema, value: FormObject, options: ValidateOptions = {}, base = ""): Errors {
  const errors: Errors = {};
  const required = requiredKeys(schema, value);
  for (const [key, sub] of properties(schema, value)) {
    if (!isVisible(schema, key, value) && !required.has(key)) continue;
    const pointer = `${base}/${key}`;
    const current = value[key];
    const kind = fieldKind(sub);
    if (isEmpty(current) && kind !== "object") {
      const kept = base === "" && kind === "secret" && options.keptSecrets?.has(key);
      if (required.has(key) && !kept && kind !== "boolean") errors[pointer] = "is required";
      continue;
    }
    if (kind === "object") {
      Object.assign(errors, validate(sub, (current as FormObject) ?? {}, options, pointer));
    } else if (kind === "objects") {
      const items = current as FormObject[];
      if (sub.minItems !== undefined && items.length < sub.minItems) errors[pointer] = `needs at least ${sub.minItems}`;
      if (sub.maxItems !== undefined && items.length > sub.maxItems) errors[pointer] = `allows at most ${sub.maxItems}`;
      items.forEach((item, i) => Object.assign(errors, validate(sub.items ?? {}, item, options, `${pointer}/${i}`)));
    } else if (kind === "multi" || kind === "list") {
      const items = kind === "multi" ? (current as string[]) : splitLines(current as string);
      if (sub.minItems !== undefined && items.length < sub.minItems) errors[pointer] = `needs at least ${sub.minItems}`;
      else if (sub.maxItems !== undefined && items.length > sub.maxItems) errors[pointer] = `allows at most ${sub.maxItems}`;
      else if (sub.uniqueItems && new Set(items).size !== items.length) errors[pointer] = "must not repeat an entry";
      else {
        for (const item of items) {
          const problem = checkScalar(sub.items ?? {}, "string", item);
          if (problem) {
            errors[pointer] = `entry "${item.slice(0, 40)}" ${problem}`;
            break;
          }
        }
      }
    } else {
      const problem = checkScalar(sub, kind, current);
      if (problem) errors[pointer] = problem;
    }
  }
  return errors;
}

function splitLines(text: string): string[] {
  return text
    .split("\n")
    .map((line) => line.trim())
    .filter(Boolean);
}

/** The config to send: blanks left out (the server applies defaults; blank secrets are kept). */
export function buildConfig(schema: JsonSchema, value: FormObject): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, sub] of properties(schema, value)) {
    if (!isVisible(schema, key, value)) continue;
    const current = value[key];
    switch (fieldKind(sub)) {
      case "boolean":
        out[key] = Boolean(current);
        break;
      case "number":
      case "integer":
        if (!isEmpty(current)) out[key] = Number(current);
        break;
      case "multi":
        out[key] = [...((current as string[] | undefined) ?? [])];
        break;
      case "list":
        out[key] = splitLines((current as string | undefined) ?? "");
        break;
      case "objects":
        out[key] = ((current as FormObject[] | undefined) ?? []).map((item) => buildConfig(sub.items ?? {}, item));
        break;
      case "object":
        out[key] = buildConfig(sub, (current as FormObject | undefined) ?? {});
        break;
      default:
        if (typeof current === "string" && current !== "") out[key] = current;
    }
  }
  return out;
}

/** The API's 422 errors under /config, as form pointers; other paths are returned apart. */
export function mapServerErrors(errors: FieldError[]): { fields: Errors; other: string[] } {
  const fields: Errors = {};
  const other: string[] = [];
  for (const error of errors) {
    if (error.path.startsWith("/config/")) {
      const pointer = error.path.slice("/config".length);
      fields[pointer] = fields[pointer] ? `${fields[pointer]}; ${error.message}` : error.message;
    } else {
      other.push(error.path ? `${error.path.slice(1)}: ${error.message}` : error.message);
    }
  }
  return { fields, other };
}

/** Sets the value at a pointer, returning a new tree. */
export function setAt(root: FormObject, pointer: string, next: FormValue): FormObject {
  const [head, ...rest] = pointer.split("/").slice(1);
  if (head === undefined) return root;
  const copy: FormObject = { ...root };
  if (rest.length === 0) {
    copy[head] = next;
    return copy;
  }
  const child = copy[head];
  if (Array.isArray(child)) {
    const index = Number(rest[0]);
    const items = [...(child as FormObject[])];
    items[index] = setAt(items[index] ?? {}, `/${rest.slice(1).join("/")}`, next);
    copy[head] = items;
  } else {
    copy[head] = setAt((child as FormObject | undefined) ?? {}, `/${rest.join("/")}`, next);
  }
  return copy;
}

export function fieldId(pointer: string): string {
  return `field${pointer.replace(/[^A-Za-z0-9]/g, "-")}`;
}

export function labelFor(key: string, schema: JsonSchema): string {
  return schema.title ?? key.replace(/_/g, " ").replace(/^./, (c) => c.toUpperCase());
}
