/// <reference types="vitest/config" />
import { defineConfig } from "vite";
import preact from "@preact/preset-vite";

// The API is served from the same origin in production (the functions app serves dist/);
// `npm run dev` proxies /api to a local `agentmarket serve`.
export default defineConfig({
  plugins: [preact()],
  build: {
    manifest: true,
    target: "es2022",
    sourcemap: false,
    // Keep CSS in files: the Content-Security-Policy allows no inline styles.
    cssCodeSplit: true,
    assetsInlineLimit: 0,
  },
  server: {
    proxy: { "/api": process.env.AGENTMARKET_API ?? "http://127.0.0.1:8000" },
  },
  test: {
    environment: "jsdom",
    include: ["src/**/*.test.ts"],
  },
});
