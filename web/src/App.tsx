import { useEffect, useRef } from "preact/hooks";
import { Tour } from "./components/Tour";
import { session, signOut } from "./lib/auth";
import { match, navigate, useLocation } from "./lib/router";
import { useStore } from "./lib/store";
import { AdminPage } from "./pages/Admin";
import { AgentPage } from "./pages/AgentDetail";
import { ChatPage } from "./pages/Chat";
import { MarketplacePage } from "./pages/Marketplace";
import { MyAgentsPage } from "./pages/MyAgents";
import { SignInPage } from "./pages/SignIn";

function Route() {
  const { path } = useLocation();
  if (path === "/") return <MarketplacePage />;
  let params = match("/agents/:slug", path);
  if (params) return <AgentPage slug={params.slug ?? ""} />;
  if (path === "/my-agents") return <MyAgentsPage />;
  params = match("/chat/:deploymentId", path);
  if (params) return <ChatPage deploymentId={params.deploymentId ?? ""} />;
  if (path === "/admin") return <AdminPage />;
  if (path === "/sign-in") return <SignInPage />;
  return (
    <section class="page">
      <h1>Page not found</h1>
      <p>
        There is nothing at this address. <a href="/">Browse the marketplace</a>.
      </p>
    </section>
  );
}

function NavLink({ href, children }: { href: string; children: string }) {
  const { path } = useLocation();
  const current = href === "/" ? path === "/" : path.startsWith(href);
  return (
    <a href={href} aria-current={current ? "page" : undefined}>
      {children}
    </a>
  );
}

export function App() {
  const user = useStore(session);
  const { path } = useLocation();
  const main = useRef<HTMLElement>(null);
  const first = useRef(true);

  // Move focus to the new page's content on client-side navigation (not on first load).
  useEffect(() => {
    if (first.current) {
      first.current = false;
      return;
    }
    main.current?.focus();
  }, [path]);

  return (
    <>
      <a class="skip-link" href="#main">
        Skip to content
      </a>
      <header class="site-header">
        <a class="brand" href="/">
          <span aria-hidden="true">◆</span> Agent Marketplace
        </a>
        <nav aria-label="Main">
          <NavLink href="/">Marketplace</NavLink>
          {user && <NavLink href="/my-agents">My agents</NavLink>}
          {user?.user.admin && <NavLink href="/admin">Dashboard</NavLink>}
          {user ? (
            <button
              type="button"
              class="link-button"
              onClick={() => {
                void signOut().then(() => navigate("/"));
              }}
            >
              Sign out
            </button>
          ) : (
            <NavLink href="/sign-in">Sign in</NavLink>
          )}
        </nav>
      </header>
      <main id="main" ref={main} tabIndex={-1}>
        <Route />
      </main>
      <Tour />
      <footer class="site-footer">
        <p>{user ? `Signed in as ${user.user.email ?? "you"}` : "Browsing as a guest"}</p>
      </footer>
    </>
  );
}
