import { describe, expect, it } from "vitest";
import { attachmentName } from "./download";

describe("attachmentName", () => {
  it("takes the quoted or bare filename", () => {
    expect(attachmentName('attachment; filename="conversation-1.md"', "x")).toBe("conversation-1.md");
    expect(attachmentName("attachment; filename=marketplace-stats.csv", "x")).toBe("marketplace-stats.csv");
  });
  it("falls back without one", () => {
    expect(attachmentName(null, "conversation-1.json")).toBe("conversation-1.json");
    expect(attachmentName("attachment", "fallback.csv")).toBe("fallback.csv");
  });
});
