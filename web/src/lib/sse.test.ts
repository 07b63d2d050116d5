import { describe, expect, it } from "vitest";
import { SseParser } from "./sse";

describe("SseParser", () => {
  it("parses named events with ids and JSON data", () => {
    const p = new SseParser();
    const events = p.feed('id: 1.5\nevent: message.delta\ndata: {"delta": "hi"}\n\n');
    expect(events).toEqual([{ event: "message.delta", data: '{"delta": "hi"}', id: "1.5", retry: null }]);
    expect(p.lastEventId).toBe("1.5");
  });

  it("joins events split across chunks at any byte, with CRLF and CR line ends", () => {
    const text = "event: a\r\ndata: one\r\n\r\nevent: b\rdata: two\r\r: comment\nevent: ping\ndata: {}\n\n";
    for (let cut = 1; cut < text.length; cut++) {
      const p = new SseParser();
      const events = [...p.feed(text.slice(0, cut)), ...p.feed(text.slice(cut))];
      expect(events.map((e) => [e.event, e.data])).toEqual([
        ["a", "one"],
        ["b", "two"],
        ["ping", "{}"],
      ]);
    }
  });

  it("joins multi-line data, ignores comments and unknown fields, reads retry", () => {
    const p = new SseParser();
    const events = p.feed(": hello\nfoo: bar\nretry: 2500\ndata: a\ndata:b\n\n");
    expect(events).toEqual([{ event: "message", data: "a\nb", id: null, retry: 2500 }]);
  });

  it("keeps the last id across events that carry none (ping)", () => {
    const p = new SseParser();
    p.feed("id: 1.10\nevent: message.delta\ndata: {}\n\nevent: ping\ndata: {}\n\n");
    expect(p.lastEventId).toBe("1.10");
  });

  it("dispatches nothing for a blank event", () => {
    expect(new SseParser().feed("\n\n\n")).toEqual([]);
  });
});
