// A small client-side router: history API, path patterns with :params, link interception.
import { createStore, useStore } from "./store";

export interface Location {
  path: string;
  search: string;
}

export const location$ = createStore<Location>({
  path: window.location.pathname,
  search: window.location.search,
});

function sync(): void {
  location$.set({ path: window.location.pathname, search: window.location.search });
}

window.addEventListener("popstate", sync);

export function navigate(to: string, options: { replace?: boolean } = {}): void {
  const current = window.location.pathname + window.location.search;
  if (to === current) return;
  if (options.replace) history.replaceState(null, "", to);
  else history.pushState(null, "", to);
  sync();
  if (!options.replace) window.scrollTo(0, 0);
}

export function useLocation(): Location {
  return useStore(location$);
}

export function match(pattern: string, path: string): Record<string, string> | null {
  const want = pattern.split("/").filter(Boolean);
  const got = path.split("/").filter(Boolean);
  if (want.length !== got.length) return null;
  const params: Record<string, string> = {};
  for (let i = 0; i < want.length; i++) {
    const w = want[i] ?? "";
    const g = got[i] ?? "";
    if (w.startsWith(":")) params[w.slice(1)] = decodeURIComponent(g);
    else if (w !== g) return null;
  }
  return params;
}

/** Same-origin <a href> clicks navigate in the app instead of loading a page. */
export function interceptLinks(root: HTMLElement): void {
  root.addEventListener("click", (event) => {
    if (event.defaultPrevented || event.button !== 0) return;
    if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    const anchor = (event.target as Element | null)?.closest("a");
    if (!anchor || anchor.target || anchor.hasAttribute("download")) return;
    if (anchor.getAttribute("href")?.startsWith("#")) return; // in-page links (the skip link)
    const url = new URL(anchor.href, window.location.href);
    if (url.origin !== window.location.origin || url.pathname.startsWith("/api/")) return;
    event.preventDefault();
    navigate(url.pathname + url.search);
  });
}
