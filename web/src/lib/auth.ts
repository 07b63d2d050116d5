// Sign-in state. The session (access token, expiry, user) lives in localStorage under
// `agentmarket.session`. Locally (client-config.dev_sign_in) a dev session is minted by
// POST /api/dev/session; with Supabase Auth configured, supabase-js is loaded on demand and
// keeps the session fresh (autoRefreshToken), and we mirror it here.
import type { SupabaseClient } from "@supabase/supabase-js";
import { api, configureAuth } from "./api";
import { createStore } from "./store";
import type { ClientConfig } from "./types";

export const SESSION_KEY = "agentmarket.session";

export interface Session {
  access_token: string;
  expires_at: number; // seconds since the epoch
  provider: "dev" | "supabase";
  user: { id: string; email: string | null; admin: boolean };
}

export const session = createStore<Session | null>(null);
export const clientConfig = createStore<ClientConfig>({
  supabase_url: null,
  supabase_anon_key: null,
  dev_sign_in: false,
  app_env: "prod",
});

interface Claims {
  sub?: string;
  email?: string;
  exp?: number;
  app_metadata?: { role?: string };
}

export function decodeClaims(token: string): Claims {
  const part = token.split(".")[1];
  if (!part) return {};
  try {
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const padded = b64 + "=".repeat((4 - (b64.length % 4)) % 4);
    const bytes = Uint8Array.from(atob(padded), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes)) as Claims;
  } catch {
    return {};
  }
}

export function sessionFromToken(token: string, provider: Session["provider"]): Session {
  const claims = decodeClaims(token);
  return {
    access_token: token,
    expires_at: claims.exp ?? Math.floor(Date.now() / 1000) + 3600,
    provider,
    user: {
      id: claims.sub ?? "",
      email: claims.email ?? null,
      admin: claims.app_metadata?.role === "admin",
    },
  };
}

function store(next: Session | null): void {
  if (next) localStorage.setItem(SESSION_KEY, JSON.stringify(next));
  else localStorage.removeItem(SESSION_KEY);
  session.set(next);
  scheduleRefresh();
}

function load(): Session | null {
  try {
    const raw = localStorage.getItem(SESSION_KEY);
    if (!raw) return null;
    const parsed = JSON.parse(raw) as Session;
    if (!parsed.access_token || parsed.expires_at * 1000 <= Date.now()) return null;
    return parsed;
  } catch {
    return null;
  }
}

let supabase: SupabaseClient | null = null;

async function supabaseClient(): Promise<SupabaseClient> {
  const config = clientConfig.get();
  if (!config.supabase_url || !config.supabase_anon_key) {
    throw new Error("Supabase Auth is not configured.");
  }
  if (!supabase) {
    // Loaded only when Supabase Auth is configured, so the marketplace page stays small.
    const { createClient } = await import("@supabase/supabase-js");
    supabase = createClient(config.supabase_url, config.supabase_anon_key, {
      auth: { autoRefreshToken: true, persistSession: true, storageKey: "agentmarket.supabase" },
    });
    supabase.auth.onAuthStateChange((_event, current) => {
      store(current ? sessionFromToken(current.access_token, "supabase") : null);
    });
  }
  return supabase;
}

let refreshTimer: ReturnType<typeof setTimeout> | undefined;

/** Dev sessions are minted again a minute before they expire (supabase-js refreshes its own). */
function scheduleRefresh(): void {
  clearTimeout(refreshTimer);
  const current = session.get();
  if (!current || current.provider !== "dev" || !current.user.email) return;
  const delay = Math.max(5_000, current.expires_at * 1000 - Date.now() - 60_000);
  const { email, admin } = current.user;
  refreshTimer = setTimeout(() => {
    devSignIn(email, admin).catch(() => store(null));
  }, delay);
}

interface DevSession {
  access_token: string;
  expires_in: number;
  user: { id: string; email: string; role: string | null };
}

export async function devSignIn(email: string, admin: boolean): Promise<Session> {
  const answer = await api<DevSession>("/api/dev/session", {
    body: { email, admin },
    auth: false,
  });
  const next: Session = {
    access_token: answer.access_token,
    expires_at: Math.floor(Date.now() / 1000) + answer.expires_in,
    provider: "dev",
    user: { id: answer.user.id, email: answer.user.email, admin: answer.user.role === "admin" },
  };
  store(next);
  return next;
}

export async function passwordSignIn(email: string, password: string): Promise<void> {
  const client = await supabaseClient();
  const { data, error } = await client.auth.signInWithPassword({ email, password });
  if (error) throw new Error(error.message);
  if (data.session) store(sessionFromToken(data.session.access_token, "supabase"));
}

export async function magicLink(email: string): Promise<void> {
  const client = await supabaseClient();
  const { error } = await client.auth.signInWithOtp({
    email,
    options: { emailRedirectTo: `${location.origin}/` },
  });
  if (error) throw new Error(error.message);
}

export async function signOut(): Promise<void> {
  const current = session.get();
  store(null);
  if (current?.provider === "supabase") {
    const client = await supabaseClient();
    await client.auth.signOut();
  }
}

async function currentToken(): Promise<string | null> {
  const current = session.get();
  if (!current) return null;
  if (current.provider === "supabase" && current.expires_at * 1000 - Date.now() < 30_000) {
    const client = await supabaseClient();
    const { data } = await client.auth.refreshSession();
    if (data.session) {
      store(sessionFromToken(data.session.access_token, "supabase"));
      return data.session.access_token;
    }
  }
  return current.access_token;
}

/** Reads /api/client-config and the stored session; call once at start. */
export async function initAuth(): Promise<void> {
  configureAuth(currentToken, () => store(null));
  try {
    clientConfig.set(await api<ClientConfig>("/api/client-config", { auth: false }));
  } catch {
    /* an older server: no sign-in config; browsing still works */
  }
  const saved = load();
  session.set(saved);
  scheduleRefresh();
  const config = clientConfig.get();
  // A magic link lands back here with the session in the URL fragment: let supabase-js read it.
  if (config.supabase_url && (saved?.provider === "supabase" || location.hash.includes("access_token"))) {
    const client = await supabaseClient();
    const { data } = await client.auth.getSession();
    if (data.session) store(sessionFromToken(data.session.access_token, "supabase"));
  }
}
