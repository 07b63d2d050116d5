import { describe, expect, it } from "vitest";
import { renderMarkdown } from "./markdown";

function dom(html: string): HTMLElement {
  const div = document.createElement("div");
  div.innerHTML = html;
  return div;
}

describe("renderMarkdown", () => {
  it("renders ordinary Markdown", () => {
    const el = dom(renderMarkdown("**bold** and `code`\n\n- one\n- two"));
    expect(el.querySelector("strong")?.textContent).toBe("bold");
    expect(el.querySelector("code")?.textContent).toBe("code");
    expect(el.querySelectorAll("li")).toHaveLength(2);
  });

  it("shows raw HTML as text, never as elements", () => {
    const html = renderMarkdown('Echo: <img src=x onerror=alert(1)> <script>alert(2)</script> <b onclick="x()">b</b>');
    const el = dom(html);
    expect(el.querySelector("img, script, b")).toBeNull();
    expect(el.textContent).toContain("<img src=x onerror=alert(1)>");
    expect(html).not.toMatch(/<img|<script|<b[ >]/i);
  });

  it("strips javascript: and data: links and keeps their text", () => {
    for (const href of ["javascript:alert(1)", "JaVaScRiPt:alert(1)", "data:text/html,<script>x</script>", "vbscript:x"]) {
      const el = dom(renderMarkdown(`[click me](${href})`));
      const a = el.querySelector("a");
      expect(el.textContent).toContain("click me");
      expect(a?.getAttribute("href") ?? null).toBeNull();
    }
  });

  it("opens http links in a new tab with rel=noopener", () => {
    const a = dom(renderMarkdown("[docs](https://example.com/x)")).querySelector("a");
    expect(a?.getAttribute("href")).toBe("https://example.com/x");
    expect(a?.getAttribute("rel")).toContain("noopener");
    expect(a?.getAttribute("target")).toBe("_blank");
  });

  it("turns images into links so nothing is fetched from another host", () => {
    const el = dom(renderMarkdown("![chart](https://evil.example/pixel.png)"));
    expect(el.querySelector("img")).toBeNull();
    expect(el.querySelector("a")?.textContent).toBe("chart");
  });
});
