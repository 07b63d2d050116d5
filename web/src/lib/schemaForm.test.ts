import { describe, expect, it } from "vitest";
import type { JsonSchema } from "./types";
import {
  buildConfig,
  fieldKind,
  initialValues,
  isVisible,
  mapServerErrors,
  properties,
  setAt,
  validate,
  type FormObject,
} from "./schemaForm";

const schema: JsonSchema = {
  type: "object",
  required: ["team_name", "tone", "temperature", "openai_api_key"],
  dependentRequired: { webhook_token: ["webhook_url"] },
  properties: {
    team_name: { type: "string", minLength: 1, maxLength: 10 },
    tone: { type: "string", enum: ["neutral", "friendly"], default: "neutral" },
    temperature: { type: "number", minimum: 0, maximum: 1.5, default: 0.3 },
    max_items: { type: "integer", minimum: 1 },
    include: { type: "boolean", default: true },
    focus: { type: "array", items: { type: "string", enum: ["bugs", "tests"] }, uniqueItems: true },
    languages: { type: "array", items: { type: "string", maxLength: 5 } },
    webhook_url: { type: "string", format: "uri" },
    webhook_token: { type: "string", writeOnly: true, minLength: 8 },
    openai_api_key: { type: "string", writeOnly: true, pattern: "^sk-[A-Za-z0-9]{4,}$" },
    contact: { type: "string", format: "email" },
    knowledge_base: {
      type: "array",
      minItems: 1,
      items: { type: "object", required: ["title"], properties: { title: { type: "string", minLength: 1 }, body: { type: "string" } } },
    },
    quiet: {
      type: "object",
      properties: { start: { type: "string", pattern: "^[0-2][0-9]:[0-5][0-9]$" } },
    },
  },
};

describe("field kinds", () => {
  it("picks a control per schema", () => {
    const p = schema.properties ?? {};
    expect(fieldKind(p.team_name ?? {})).toBe("string");
    expect(fieldKind(p.tone ?? {})).toBe("enum");
    expect(fieldKind(p.temperature ?? {})).toBe("number");
    expect(fieldKind(p.max_items ?? {})).toBe("integer");
    expect(fieldKind(p.include ?? {})).toBe("boolean");
    expect(fieldKind(p.focus ?? {})).toBe("multi");
    expect(fieldKind(p.languages ?? {})).toBe("list");
    expect(fieldKind(p.openai_api_key ?? {})).toBe("secret");
    expect(fieldKind(p.knowledge_base ?? {})).toBe("objects");
    expect(fieldKind(p.quiet ?? {})).toBe("object");
  });
});

describe("field order", () => {
  it("puts required fields first in their listed order, then optional ones, secrets last", () => {
    const order = properties(
      {
        required: ["b", "a"],
        properties: { z: { writeOnly: true }, y: { type: "boolean" }, x: { type: "string" }, a: {}, b: {} },
      },
      {},
    ).map(([key]) => key);
    expect(order).toEqual(["b", "a", "x", "y", "z"]);
  });
});

describe("initial values", () => {
  it("takes default_config first, then schema defaults, and never fills secrets", () => {
    const v = initialValues(schema, { temperature: 0.9, languages: ["py", "go"], openai_api_key: "sk-leak" });
    expect(v.temperature).toBe("0.9");
    expect(v.tone).toBe("neutral");
    expect(v.include).toBe(true);
    expect(v.languages).toBe("py\ngo");
    expect(v.openai_api_key).toBe("");
  });
});

describe("validation", () => {
  const valid = (): FormObject => ({
    ...initialValues(schema, {}),
    team_name: "Core",
    openai_api_key: "sk-abcd1234",
    knowledge_base: [{ title: "Refunds", body: "" }],
  });

  it("accepts a complete form", () => {
    expect(validate(schema, valid())).toEqual({});
  });

  it("reports each problem at its pointer", () => {
    const v: FormObject = {
      ...valid(),
      team_name: "x".repeat(11),
      temperature: "2",
      max_items: "1.5",
      openai_api_key: "nope",
      webhook_url: "not a url",
      contact: "bob",
      focus: ["bugs", "bugs"],
      languages: "python",
      knowledge_base: [{ title: "" }],
      quiet: { start: "7pm" },
    };
    expect(validate(schema, v)).toEqual({
      "/team_name": "must have at most 10 characters",
      "/temperature": "must be at most 1.5",
      "/max_items": "must be a whole number",
      "/openai_api_key": "is not in the expected format",
      "/webhook_url": "must be a valid URL",
      "/contact": "must be an email address",
      "/focus": "must not repeat an entry",
      "/languages": 'entry "python" must have at most 5 characters',
      "/knowledge_base/0/title": "is required",
      "/quiet/start": "is not in the expected format",
    });
  });

  it("requires missing required fields, except a secret that is already stored", () => {
    const v = { ...valid(), team_name: "", openai_api_key: "" };
    expect(validate(schema, v)).toEqual({ "/team_name": "is required", "/openai_api_key": "is required" });
    expect(validate(schema, v, { keptSecrets: new Set(["openai_api_key"]) })).toEqual({ "/team_name": "is required" });
  });

  it("treats dependentRequired as a conditional field", () => {
    const v = valid();
    expect(isVisible(schema, "webhook_token", v)).toBe(false);
    expect(isVisible(schema, "webhook_token", { ...v, webhook_url: "https://hooks.example.com/x" })).toBe(true);
    // A token without its URL makes the URL required.
    expect(validate(schema, { ...v, webhook_token: "secret-token" })).toEqual({ "/webhook_url": "is required" });
  });

  it("shows and requires if/then fields only when the condition holds", () => {
    const conditional: JsonSchema = {
      type: "object",
      properties: { mode: { type: "string", enum: ["simple", "custom"] } },
      if: { properties: { mode: { const: "custom" } } },
      then: { required: ["prompt"], properties: { prompt: { type: "string" } } },
    };
    expect(isVisible(conditional, "prompt", { mode: "simple" })).toBe(false);
    expect(isVisible(conditional, "prompt", { mode: "custom" })).toBe(true);
    expect(validate(conditional, { mode: "custom", prompt: "" })).toEqual({ "/prompt": "is required" });
    expect(validate(conditional, { mode: "simple" })).toEqual({});
  });
});

describe("building the config", () => {
  it("converts types and leaves blanks out so the server's defaults and kept secrets apply", () => {
    const v: FormObject = {
      ...initialValues(schema, {}),
      team_name: "Core",
      temperature: "0.5",
      max_items: "",
      languages: " py \n\n go ",
      openai_api_key: "",
      knowledge_base: [{ title: "T", body: "" }],
    };
    expect(buildConfig(schema, v)).toEqual({
      team_name: "Core",
      tone: "neutral",
      temperature: 0.5,
      include: true,
      focus: [],
      languages: ["py", "go"],
      knowledge_base: [{ title: "T" }],
      quiet: {},
    });
  });
});

describe("server errors", () => {
  it("maps /config pointers onto fields and keeps the rest apart", () => {
    const { fields, other } = mapServerErrors([
      { path: "/config/webhook_url", message: "must not point to a private address" },
      { path: "/config/knowledge_base/0/title", message: "is required" },
      { path: "/name", message: "too long" },
    ]);
    expect(fields).toEqual({ "/webhook_url": "must not point to a private address", "/knowledge_base/0/title": "is required" });
    expect(other).toEqual(["name: too long"]);
  });

  it("sets values deep in the tree without touching the original", () => {
    const v: FormObject = { knowledge_base: [{ title: "a" }], quiet: { start: "" } };
    const next = setAt(setAt(v, "/knowledge_base/0/title", "b"), "/quiet/start", "07:00");
    expect(next).toEqual({ knowledge_base: [{ title: "b" }], quiet: { start: "07:00" } });
    expect(v).toEqual({ knowledge_base: [{ title: "a" }], quiet: { start: "" } });
  });
});
