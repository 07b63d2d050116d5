import { useEffect, useState } from "preact/hooks";
import { Modal } from "../components/Modal";
import { SchemaFields } from "../components/SchemaForm";
import { Empty, ErrorBox, formatTime, Loading } from "../components/Status";
import { api, ApiError, errorMessage } from "../lib/api";
import { session } from "../lib/auth";
import { buildConfig, mapServerErrors, setAt, toFormValue, validate, type Errors, type FormObject } from "../lib/schemaForm";
import { useStore } from "../lib/store";
import type { AgentDetail, Deployment } from "../lib/types";
import { useAsync } from "../lib/useAsync";

const STATUS_LABEL: Record<Deployment["status"], string> = {
  active: "Active",
  paused: "Paused",
  configuring: "Needs configuration",
  error: "Error",
};

function ReconfigureDialog({ deployment, onDone, onClose }: { deployment: Deployment; onDone: (d: Deployment) => void; onClose: () => void }) {
  const agent = useAsync((signal) => api<AgentDetail>(`/api/marketplace/agents/${deployment.agent?.slug ?? deployment.agent_id}`, { signal }), [deployment.id]);
  const [values, setValues] = useState<FormObject | null>(null);
  const [errors, setErrors] = useState<Errors>({});
  const [failure, setFailure] = useState<unknown>(undefined);
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    if (agent.data) setValues(toFormValue(agent.data.config_schema, deployment.config) as FormObject);
  }, [agent.data, deployment.config]);
  const kept = new Set(Object.keys(deployment.secrets));

  const submit = async (e: Event) => {
    e.preventDefault();
    if (!agent.data || !values) return;
    const local = validate(agent.data.config_schema, values, { keptSecrets: kept });
    setErrors(local);
    if (Object.keys(local).length) return;
    setBusy(true);
    setFailure(undefined);
    try {
      // Secret fields left blank are not sent, so the stored values are kept.
      const updated = await api<Deployment>(`/api/deployments/${deployment.id}`, {
        method: "PATCH",
        body: { config: buildConfig(agent.data.config_schema, values) },
      });
      onDone(updated);
    } catch (error) {
      if (error instanceof ApiError && error.status === 422) setErrors(mapServerErrors(error.errors).fields);
      setFailure(error);
    } finally {
      setBusy(false);
    }
  };

  return (
    <Modal title={`Reconfigure ${deployment.name}`} onClose={onClose}>
      <form noValidate onSubmit={(e) => void submit(e)}>
        <h2>Reconfigure {deployment.name}</h2>
        {agent.loading && <Loading label="Loading settings…" />}
        {agent.error !== undefined && <ErrorBox error={agent.error} onRetry={agent.reload} />}
        {agent.data && values && (
          <SchemaFields
            schema={agent.data.config_schema}
            value={values}
            errors={errors}
            keptSecrets={deployment.secrets}
            onChange={(pointer, next) => setValues((v) => (v ? setAt(v, pointer, next) : v))}
          />
        )}
        {failure !== undefined && <ErrorBox error={failure} title="Not saved." />}
        <div class="actions">
          <button type="submit" disabled={busy || !values}>
            {busy ? "Saving…" : "Save settings"}
          </button>
          <button type="button" class="secondary" onClick={onClose}>
            Cancel
          </button>
        </div>
      </form>
    </Modal>
  );
}

function DeploymentCard({ deployment, onChange, onDelete }: { deployment: Deployment; onChange: (d: Deployment) => void; onDelete: (id: string) => void }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(undefined);
  const [renaming, setRenaming] = useState(false);
  const [name, setName] = useState(deployment.name);
  const [dialog, setDialog] = useState<"" | "configure" | "delete">("");
  const headingId = `dep-${deployment.id}`;

  const act = async (body: Record<string, unknown>) => {
    setBusy(true);
    setError(undefined);
    try {
      onChange(await api<Deployment>(`/api/deployments/${deployment.id}`, { method: "PATCH", body }));
      return true;
    } catch (err) {
      setError(err);
      return false;
    } finally {
      setBusy(false);
    }
  };

  const remove = async () => {
    setBusy(true);
    try {
      await api(`/api/deployments/${deployment.id}`, { method: "DELETE" });
      onDelete(deployment.id);
    } catch (err) {
      setError(err);
      setDialog("");
    } finally {
      setBusy(false);
    }
  };

  return (
    <li class="card deployment" aria-labelledby={headingId}>
      <div class="deployment-head">
        <span class="agent-icon" aria-hidden="true">
          {deployment.agent?.icon ?? "🤖"}
        </span>
        <div>
          <h2 id={headingId} class="card-title">
            {deployment.name}
          </h2>
          <p class="muted small">
            {deployment.agent ? deployment.agent.name : "Agent no longer in the catalog"} · created {formatTime(deployment.created_at)}
          </p>
        </div>
        <span class={`status-badge status-${deployment.status}`}>{STATUS_LABEL[deployment.status]}</span>
      </div>
      {deployment.status_reason && <p class="note">{deployment.status_reason}</p>}
      {Object.keys(deployment.secrets).length > 0 && (
        <p class="muted small">
          Secrets: {Object.entries(deployment.secrets).map(([k, v]) => `${k} ${v}`).join(", ")}
        </p>
      )}
      {renaming ? (
        <form
          class="inline-form"
          onSubmit={(e) => {
            e.preventDefault();
            void act({ name: name.trim() }).then((ok) => ok && setRenaming(false));
          }}
        >
          <label for={`rename-${deployment.id}`}>New name for {deployment.name}</label>
          <div class="inline">
            <input id={`rename-${deployment.id}`} value={name} maxLength={100} required onInput={(e) => setName(e.currentTarget.value)} />
            <button type="submit" disabled={busy || !name.trim()}>
              Save name
            </button>
            <button type="button" class="secondary" onClick={() => setRenaming(false)}>
              Cancel
            </button>
          </div>
        </form>
      ) : null}
      <div class="actions wrap">
        <a class="button" href={`/chat/${deployment.id}`} aria-label={`Chat with ${deployment.name}`}>
          Chat
        </a>
        {deployment.status === "paused" ? (
          <button type="button" disabled={busy} onClick={() => void act({ status: "active" })} aria-label={`Resume ${deployment.name}`}>
            Resume
          </button>
        ) : (
          <button type="button" class="secondary" disabled={busy} onClick={() => void act({ status: "paused" })} aria-label={`Pause ${deployment.name}`}>
            Pause
          </button>
        )}
        <button type="button" class="secondary" disabled={busy || !deployment.agent} onClick={() => setDialog("configure")} aria-label={`Reconfigure ${deployment.name}`}>
          Reconfigure
        </button>
        <button type="button" class="secondary" onClick={() => setRenaming(true)} aria-label={`Rename ${deployment.name}`}>
          Rename
        </button>
        <button type="button" class="danger" onClick={() => setDialog("delete")} aria-label={`Delete ${deployment.name}`}>
          Delete
        </button>
      </div>
      {error !== undefined && <p class="field-error" role="alert">{errorMessage(error)}</p>}
      {dialog === "configure" && (
        <ReconfigureDialog
          deployment={deployment}
          onClose={() => setDialog("")}
          onDone={(d) => {
            onChange(d);
            setDialog("");
          }}
        />
      )}
      {dialog === "delete" && (
        <Modal title={`Delete ${deployment.name}?`} onClose={() => setDialog("")}>
          <h2>Delete {deployment.name}?</h2>
          <p>Its conversations and stored secrets are deleted too. This cannot be undone.</p>
          <div class="actions">
            <button type="button" class="danger" disabled={busy} onClick={() => void remove()}>
              {busy ? "Deleting…" : "Delete for good"}
            </button>
            <button type="button" class="secondary" onClick={() => setDialog("")}>
              Keep it
            </button>
          </div>
        </Modal>
      )}
    </li>
  );
}

export function MyAgentsPage() {
  const user = useStore(session);
  const list = useAsync(
    (signal) => (user ? api<{ data: Deployment[] }>("/api/deployments", { signal }) : Promise.resolve({ data: [] })),
    [user?.access_token],
  );
  const [items, setItems] = useState<Deployment[]>([]);
  const [announce, setAnnounce] = useState("");
  useEffect(() => {
    if (list.data) setItems(list.data.data);
  }, [list.data]);
  useEffect(() => {
    document.title = "My agents · Agent Marketplace";
  }, []);

  if (!user) {
    return (
      <section class="page">
        <h1>My agents</h1>
        <p>
          <a href="/sign-in?next=/my-agents">Sign in</a> to see your deployed agents.
        </p>
      </section>
    );
  }
  return (
    <section class="page">
      <h1>My agents</h1>
      <div class="sr-only" aria-live="polite" role="status">
        {announce}
      </div>
      {list.loading && !list.data && <Loading label="Loading your agents…" />}
      {list.error !== undefined && <ErrorBox error={list.error} onRetry={list.reload} title="Could not load your agents." />}
      {list.data && items.length === 0 && (
        <Empty>
          <h2>No agents yet</h2>
          <p>Deploy one from the marketplace to start chatting.</p>
          <a class="button" href="/">
            Browse agents
          </a>
        </Empty>
      )}
      <ul class="deployment-list">
        {items.map((d) => (
          <DeploymentCard
            key={d.id}
            deployment={d}
            onChange={(next) => {
              setItems((all) => all.map((x) => (x.id === next.id ? next : x)));
              setAnnounce(`${next.name} is now ${STATUS_LABEL[next.status].toLowerCase()}.`);
            }}
            onDelete={(id) => {
              setItems((all) => all.filter((x) => x.id !== id));
              setAnnounce(`${d.name} was deleted.`);
            }}
          />
        ))}
      </ul>
    </section>
  );
}
