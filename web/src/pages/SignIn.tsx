import { useEffect, useState } from "preact/hooks";
import { clientConfig, devSignIn, magicLink, passwordSignIn, session } from "../lib/auth";
import { errorMessage } from "../lib/api";
import { navigate, useLocation } from "../lib/router";
import { useStore } from "../lib/store";

function nextPath(search: string): string {
  const next = new URLSearchParams(search).get("next") ?? "/";
  // Only paths of this app: never another origin.
  return next.startsWith("/") && !next.startsWith("//") ? next : "/";
}

export function SignInPage() {
  const config = useStore(clientConfig);
  const user = useStore(session);
  const { search } = useLocation();
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [admin, setAdmin] = useState(false);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const [info, setInfo] = useState("");

  useEffect(() => {
    document.title = "Sign in · Agent Marketplace";
  }, []);

  const run = async (action: () => Promise<unknown>, done?: string) => {
    setBusy(true);
    setError("");
    setInfo("");
    try {
      await action();
      if (done) setInfo(done);
      else navigate(nextPath(search));
    } catch (err) {
      setError(err instanceof Error && !("status" in err) ? err.message : errorMessage(err));
    } finally {
      setBusy(false);
    }
  };

  const supabase = Boolean(config.supabase_url && config.supabase_anon_key);

  return (
    <section class="page narrow">
      <h1>Sign in</h1>
      {user && (
        <p class="notice" role="status">
          You are signed in as {user.user.email}. <a href={nextPath(search)}>Continue</a>
        </p>
      )}
      {config.dev_sign_in && (
        <form
          class="card"
          onSubmit={(e) => {
            e.preventDefault();
            void run(() => devSignIn(email.trim(), admin));
          }}
        >
          <h2>Development sign-in</h2>
          <p class="hint">This server runs with APP_ENV=dev: any email signs in, no password. It does not exist in production.</p>
          <div class="field">
            <label for="dev-email">Email</label>
            <input id="dev-email" type="email" autoComplete="email" required value={email} onInput={(e) => setEmail(e.currentTarget.value)} />
          </div>
          <label class="check">
            <input type="checkbox" checked={admin} onChange={(e) => setAdmin(e.currentTarget.checked)} /> Sign in as an admin
          </label>
          <div class="actions">
            <button type="submit" disabled={busy}>
              {busy ? "Signing in…" : "Sign in"}
            </button>
          </div>
        </form>
      )}
      {supabase && (
        <form
          class="card"
          onSubmit={(e) => {
            e.preventDefault();
            void run(() => passwordSignIn(email.trim(), password));
          }}
        >
          <h2>Sign in with your account</h2>
          <div class="field">
            <label for="email">Email</label>
            <input id="email" type="email" autoComplete="email" required value={email} onInput={(e) => setEmail(e.currentTarget.value)} />
          </div>
          <div class="field">
            <label for="password">Password</label>
            <input id="password" type="password" autoComplete="current-password" value={password} onInput={(e) => setPassword(e.currentTarget.value)} />
          </div>
          <div class="actions">
            <button type="submit" disabled={busy || !password}>
              Sign in
            </button>
            <button
              type="button"
              class="secondary"
              disabled={busy || !email.trim()}
              onClick={() => void run(() => magicLink(email.trim()), "Check your email: we sent you a sign-in link.")}
            >
              Email me a sign-in link
            </button>
          </div>
        </form>
      )}
      {!supabase && !config.dev_sign_in && (
        <p class="notice">Sign-in is not configured on this server. You can still browse the marketplace.</p>
      )}
      {error && (
        <p class="error-box" role="alert">
          {error}
        </p>
      )}
      {info && (
        <p class="notice" role="status">
          {info}
        </p>
      )}
    </section>
  );
}
