import type { JSX } from "preact";
import {
  asText,
  fieldId,
  fieldKind,
  isVisible,
  labelFor,
  properties,
  requiredKeys,
  toFormValue,
  type Errors,
  type FormObject,
  type FormValue,
} from "../lib/schemaForm";
import type { JsonSchema } from "../lib/types";

interface Props {
  schema: JsonSchema;
  value: FormObject;
  errors: Errors;
  onChange: (pointer: string, value: FormValue) => void;
  keptSecrets?: Record<string, string>;
  base?: string;
}

function newItem(schema: JsonSchema): FormObject {
  const value = toFormValue(schema, {});
  return value && typeof value === "object" && !Array.isArray(value) ? value : {};
}

function Described({ pointer, schema, error, extra }: { pointer: string; schema: JsonSchema; error?: string; extra?: string }) {
  const id = fieldId(pointer);
  return (
    <>
      {(schema.description || extra) && (
        <p class="hint" id={`${id}-hint`}>
          {schema.description} {extra}
        </p>
      )}
      {error && (
        <p class="field-error" id={`${id}-error`}>
          <span aria-hidden="true">⚠ </span>
          {error}
        </p>
      )}
    </>
  );
}

function describedBy(pointer: string, schema: JsonSchema, error: string | undefined, extra?: string): string | undefined {
  const id = fieldId(pointer);
  const parts = [];
  if (schema.description || extra) parts.push(`${id}-hint`);
  if (error) parts.push(`${id}-error`);
  return parts.length ? parts.join(" ") : undefined;
}

function Field({
  name,
  schema,
  pointer,
  value,
  required,
  props,
}: {
  name: string;
  schema: JsonSchema;
  pointer: string;
  value: FormValue;
  required: boolean;
  props: Props;
}): JSX.Element {
  const kind = fieldKind(schema);
  const id = fieldId(pointer);
  const error = props.errors[pointer];
  const label = labelFor(name, schema);
  const mark = required ? <span class="required"> (required)</span> : <span class="optional"> (optional)</span>;
  const common = {
    id,
    name: pointer,
    "aria-invalid": error ? true : undefined,
    "aria-required": required && kind !== "boolean" ? true : undefined,
  };

  if (kind === "object") {
    return (
      <fieldset class="nested">
        <legend>{label}</legend>
        {schema.description && <p class="hint">{schema.description}</p>}
        <SchemaFields {...props} schema={schema} value={(value as FormObject) ?? {}} base={pointer} />
      </fieldset>
    );
  }

  if (kind === "objects") {
    const items = (value as FormObject[] | undefined) ?? [];
    const itemSchema = schema.items ?? {};
    const itemLabel = itemSchema.title ?? "Item";
    return (
      <fieldset class="nested" aria-describedby={describedBy(pointer, schema, error)}>
        <legend>
          {label}
          {mark}
        </legend>
        <Described pointer={pointer} schema={schema} error={error} />
        {items.map((item, i) => (
          <fieldset class="item" key={i}>
            <legend>
              {itemLabel} {i + 1}
            </legend>
            <SchemaFields {...props} schema={itemSchema} value={item} base={`${pointer}/${i}`} />
            <button
              type="button"
              class="secondary"
              onClick={() => props.onChange(pointer, items.filter((_, j) => j !== i))}
            >
              Remove {itemLabel.toLowerCase()} {i + 1}
            </button>
          </fieldset>
        ))}
        <button
          type="button"
          class="secondary"
          onClick={() => props.onChange(pointer, [...items, newItem(itemSchema)])}
        >
          Add {itemLabel.toLowerCase()}
        </button>
      </fieldset>
    );
  }

  if (kind === "multi") {
    const selected = (value as string[] | undefined) ?? [];
    const options = (schema.items?.enum ?? []).map(String);
    return (
      <fieldset class="choices" aria-describedby={describedBy(pointer, schema, error)}>
        <legend>
          {label}
          {mark}
        </legend>
        <Described pointer={pointer} schema={schema} error={error} />
        <div class="choice-grid">
          {options.map((option) => (
            <label key={option} class="check">
              <input
                type="checkbox"
                checked={selected.includes(option)}
                onChange={(e) =>
                  props.onChange(
                    pointer,
                    e.currentTarget.checked ? [...selected, option] : selected.filter((s) => s !== option),
                  )
                }
              />{" "}
              {option}
            </label>
          ))}
        </div>
      </fieldset>
    );
  }

  if (kind === "boolean") {
    return (
      <div class="field field-check">
        <label class="check">
          <input
            {...common}
            type="checkbox"
            checked={Boolean(value)}
            aria-describedby={describedBy(pointer, schema, error)}
            onChange={(e) => props.onChange(pointer, e.currentTarget.checked)}
          />{" "}
          {label}
        </label>
        <Described pointer={pointer} schema={schema} error={error} />
      </div>
    );
  }

  const kept = kind === "secret" && props.base === undefined ? props.keptSecrets?.[name] : undefined;
  const extra =
    kind === "list"
      ? "One per line."
      : kept
        ? `A value is stored (${kept}); leave this empty to keep it.`
        : undefined;
  const aria = describedBy(pointer, schema, error, extra);
  let control: JSX.Element;
  if (kind === "enum") {
    control = (
      <select {...common} value={asText(value)} aria-describedby={aria} onChange={(e) => props.onChange(pointer, e.currentTarget.value)}>
        {!required && <option value="">(not set)</option>}
        {(schema.enum ?? []).map((option) => (
          <option key={String(option)} value={String(option)}>
            {String(option).replace(/_/g, " ")}
          </option>
        ))}
      </select>
    );
  } else if (kind === "text" || kind === "list") {
    control = (
      <textarea
        {...common}
        rows={kind === "list" ? 3 : 4}
        value={asText(value)}
        aria-describedby={aria}
        onInput={(e) => props.onChange(pointer, e.currentTarget.value)}
      />
    );
  } else {
    const type =
      kind === "secret" ? "password" : kind === "number" || kind === "integer" ? "number" : schema.format === "email" ? "email" : schema.format === "uri" ? "url" : "text";
    control = (
      <input
        {...common}
        type={type}
        value={asText(value)}
        autoComplete={kind === "secret" ? "new-password" : "off"}
        step={kind === "integer" ? 1 : kind === "number" ? "any" : undefined}
        min={schema.minimum}
        max={schema.maximum}
        aria-describedby={aria}
        onInput={(e) => props.onChange(pointer, e.currentTarget.value)}
      />
    );
  }
  return (
    <div class={`field${error ? " has-error" : ""}`}>
      <label for={id}>
        {label}
        {mark}
      </label>
      {control}
      <Described pointer={pointer} schema={schema} error={error} extra={extra} />
    </div>
  );
}

export function SchemaFields(props: Props) {
  const { schema, value } = props;
  const base = props.base ?? "";
  const required = requiredKeys(schema, value);
  return (
    <>
      {properties(schema, value)
        .filter(([key]) => isVisible(schema, key, value))
        .map(([key, sub]) => (
          <Field
            key={key}
            name={key}
            schema={sub}
            pointer={`${base}/${key}`}
            value={value[key]}
            required={required.has(key) && !(sub.writeOnly && props.keptSecrets?.[key] && base === "")}
            props={props}
          />
        ))}
    </>
  );
}
