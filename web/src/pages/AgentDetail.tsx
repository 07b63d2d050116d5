import { useEffect, useRef, useState } from "preact/hooks";
import { SchemaFields } from "../components/SchemaForm";
import { ErrorBox, humanize, Loading, price } from "../components/Status";
import { api, ApiError } from "../lib/api";
import { session } from "../lib/auth";
import { navigate } from "../lib/router";
import {
  buildConfig,
  fieldId,
  initialValues,
  mapServerErrors,
  setAt,
  validate,
  type Errors,
  type FormObject,
} from "../lib/schemaForm";
import { useStore } from "../lib/store";
import type { AgentDetail, Deployment } from "../lib/types";
import { useAsync } from "../lib/useAsync";

export const draftKey = (slug: string) => `agentmarket.draft.${slug}`;

interface Draft {
  name: string;
  values: FormObject;
  open?: boolean;
}

/** Drafts never hold secrets: those are blanked before saving. */
function stripSecrets(agent: AgentDetail, values: FormObject): FormObject {
  const copy = { ...values };
  for (const key of agent.secret_fields) if (key in copy) copy[key] = "";
  return copy;
}

function loadDraft(agent: AgentDetail): Draft | null {
  try {
    const raw = localStorage.getItem(draftKey(agent.slug));
    if (!raw) return null;
    const draft = JSON.parse(raw) as Draft;
    return { name: draft.name, values: { ...initialValues(agent.config_schema, agent.default_config), ...draft.values } };
  } catch {
    return null;
  }
}

function focusFirstError(form: HTMLFormElement | null, errors: Errors) {
  const first = Object.keys(errors)[0];
  if (!first || !form) return;
  const el = form.querySelector<HTMLElement>(`#${CSS.escape(fieldId(first))}`);
  el?.focus();
}

function DeployDialog({ agent, onClose }: { agent: AgentDetail; onClose: () => void }) {
  const dialog = useRef<HTMLDialogElement>(null);
  const form = useRef<HTMLFormElement>(null);
  const draft = loadDraft(agent);
  const [name, setName] = useState(draft?.name ?? "");
  const [values, setValues] = useState<FormObject>(
    draft?.values ?? initialValues(agent.config_schema, agent.default_config),
  );
  const [errors, setErrors] = useState<Errors>({});
  const [failure, setFailure] = useState<unknown>(undefined);
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    dialog.current?.showModal();
  }, []);
  useEffect(() => {
    const draft = { name, values: stripSecrets(agent, values), open: true };
    localStorage.setItem(draftKey(agent.slug), JSON.stringify(draft));
  }, [name, values, agent]);

  const submit = async (e: Event) => {
    e.preventDefault();
    const local = validate(agent.config_schema, values);
    if (name.length > 100) local["/name"] = "must have at most 100 characters";
    setErrors(local);
    setFailure(undefined);
    if (Object.keys(local).length) {
      focusFirstError(form.current, local);
      return;
    }
    setBusy(true);
    try {
      const body: Record<string, unknown> = { agent_id: agent.slug, config: buildConfig(agent.config_schema, values) };
      if (name.trim()) body.name = name.trim();
      const deployment = await api<Deployment>("/api/marketplace/deploy", { body });
      localStorage.removeItem(draftKey(agent.slug));
      dialog.current?.close();
      navigate(`/chat/${deployment.id}`);
    } catch (error) {
      if (error instanceof ApiError && error.status === 422) {
        const { fields, other } = mapServerErrors(error.errors);
        for (const e2 of error.errors) if (e2.path === "/name") fields["/name"] = e2.message;
        setErrors(fields);
        if (other.length && !fields["/name"]) setFailure(new ApiError(other.join("; "), 422, error.code));
        else setFailure(error);
        focusFirstError(form.current, fields);
      } else {
        setFailure(error);
      }
    } finally {
      setBusy(false);
    }
  };

  return (
    <dialog
      ref={dialog}
      class="dialog"
      aria-labelledby="deploy-title"
      onClose={() => {
        const raw = localStorage.getItem(draftKey(agent.slug));
        if (raw) localStorage.setItem(draftKey(agent.slug), JSON.stringify({ ...(JSON.parse(raw) as Draft), open: false }));
        onClose();
      }}
    >
      <form ref={form} noValidate onSubmit={(e) => void submit(e)}>
        <h2 id="deploy-title">Deploy {agent.name}</h2>
        <p class="hint">Your settings are saved as a draft in this browser until you deploy (secrets excepted).</p>
        <div class={`field${errors["/name"] ? " has-error" : ""}`}>
          <label for={fieldId("/name")}>
            Deployment name <span class="optional">(optional)</span>
          </label>
          <input
            id={fieldId("/name")}
            value={name}
            placeholder={agent.name}
            aria-invalid={errors["/name"] ? true : undefined}
            aria-describedby={errors["/name"] ? `${fieldId("/name")}-error` : undefined}
            onInput={(e) => setName(e.currentTarget.value)}
          />
          {errors["/name"] && (
            <p class="field-error" id={`${fieldId("/name")}-error`}>
              {errors["/name"]}
            </p>
          )}
        </div>
        <SchemaFields
          schema={agent.config_schema}
          value={values}
          errors={errors}
          onChange={(pointer, next) => {
            setValues((v) => setAt(v, pointer, next));
            setErrors((current) => {
              if (!current[pointer]) return current;
              const copy = { ...current };
              delete copy[pointer];
              return copy;
            });
          }}
        />
        {Object.keys(errors).length > 0 && (
          <p class="field-error" role="alert">
            Please correct the {Object.keys(errors).length === 1 ? "field" : "fields"} marked above.
          </p>
        )}
        {failure !== undefined && !(failure instanceof ApiError && failure.status === 422) && (
          <ErrorBox error={failure} title="Could not deploy." />
        )}
        <div class="actions">
          <button type="submit" disabled={busy}>
            {busy ? "Deploying…" : "Deploy"}
          </button>
          <button type="button" class="secondary" onClick={() => dialog.current?.close()}>
            Cancel
          </button>
          <button
            type="button"
            class="link-button"
            onClick={() => {
              localStorage.removeItem(draftKey(agent.slug));
              setValues(initialValues(agent.config_schema, agent.default_config));
              setName("");
              setErrors({});
            }}
          >
            Reset to defaults
          </button>
        </div>
      </form>
    </dialog>
  );
}

export function AgentPage({ slug }: { slug: string }) {
  const user = useStore(session);
  const agent = useAsync((signal) => api<AgentDetail>(`/api/marketplace/agents/${encodeURIComponent(slug)}`, { signal }), [slug]);
  const [open, setOpen] = useState(false);

  useEffect(() => {
    if (agent.data) document.title = `${agent.data.name} · Agent Marketplace`;
  }, [agent.data]);
  // Reopen the dialog after a reload when a draft exists.
  useEffect(() => {
    if (!agent.data || !user) return;
    const raw = localStorage.getItem(draftKey(agent.data.slug));
    if (raw && (JSON.parse(raw) as Draft).open) setOpen(true);
  }, [agent.data, user]);

  if (agent.loading && !agent.data) return <Loading label="Loading agent…" />;
  if (agent.error !== undefined || !agent.data) {
    const notFound = agent.error instanceof ApiError && agent.error.status === 404;
    return (
      <section class="page">
        <h1>{notFound ? "Agent not found" : "Could not load this agent"}</h1>
        {notFound ? (
          <p>
            This agent does not exist or is no longer published. <a href="/">Back to the marketplace</a>.
          </p>
        ) : (
          <ErrorBox error={agent.error} onRetry={agent.reload} />
        )}
      </section>
    );
  }
  const a = agent.data;
  return (
    <section class="page agent-detail">
      <p>
        <a href="/">← All agents</a>
      </p>
      <div class="agent-head">
        <div class="agent-icon large" aria-hidden="true">
          {a.icon ?? "🤖"}
        </div>
        <div>
          <h1>{a.name}</h1>
          <p class="lead">{a.tagline}</p>
          <p class="meta">
            <a class="badge" href={`/?category=${encodeURIComponent(a.category)}`}>
              {humanize(a.category)}
            </a>
            <span class="badge badge-price">{price(a)}</span>
            {a.featured && <span class="badge badge-featured">Featured</span>}
          </p>
        </div>
      </div>
      <div class="actions">
        {user ? (
          <button type="button" class="primary" onClick={() => setOpen(true)}>
            Deploy this agent
          </button>
        ) : (
          <a class="button primary" href={`/sign-in?next=${encodeURIComponent(`/agents/${a.slug}`)}`}>
            Sign in to deploy
          </a>
        )}
      </div>
      <h2>About</h2>
      <p class="description">{a.description}</p>
      <h2>Try asking</h2>
      <ul class="prompts">
        {a.example_prompts.map((p) => (
          <li key={p}>{p}</li>
        ))}
      </ul>
      <h2>Details</h2>
      <dl class="details">
        <dt>Model</dt>
        <dd>{a.model}</dd>
        <dt>Tags</dt>
        <dd>
          {a.tags.map((t) => (
            <a key={t} class="tag" href={`/?tag=${encodeURIComponent(t)}`}>
              #{t}
            </a>
          ))}
        </dd>
        <dt>Deployments</dt>
        <dd>{a.deploy_count}</dd>
        <dt>Needs your own API key</dt>
        <dd>{a.secret_fields.includes("openai_api_key") ? "Yes" : "No"}</dd>
      </dl>
      {open && <DeployDialog agent={a} onClose={() => setOpen(false)} />}
    </section>
  );
}

