// Server-sent events over fetch (so the Authorization header can be sent), with a streaming
// parser that follows the WHATWG event-stream rules: lines end in CRLF, LF or CR; `:` starts a
// comment; a blank line dispatches; `data` lines join with "\n"; `id` persists as the last id.

export interface SseEvent {
  event: string;
  data: string;
  id: string | null;
  retry: number | null;
}

export class SseParser {
  private buffer = "";
  private event = "";
  private data: string[] = [];
  private hasData = false;
  private retry: number | null = null;
  private pendingCR = false;
  lastEventId: string | null = null;
  private idThisEvent: string | null = null;

  /** Feed decoded text; returns the events completed by it. */
  feed(chunk: string): SseEvent[] {
    let text = chunk;
    if (this.pendingCR && text.startsWith("\n")) text = text.slice(1);
    this.pendingCR = false;
    this.buffer += text;
    const out: SseEvent[] = [];
    for (;;) {
      const match = /\r\n|\r|\n/.exec(this.buffer);
      if (!match) break;
      const line = this.buffer.slice(0, match.index);
      this.buffer = this.buffer.slice(match.index + match[0].length);
      if (match[0] === "\r" && this.buffer === "") this.pendingCR = true;
      const event = this.line(line);
      if (event) out.push(event);
    }
    return out;
  }

  private line(line: string): SseEvent | null {
    if (line === "") {
      const event =
        this.hasData || this.event
          ? { event: this.event || "message", data: this.data.join("\n"), id: this.idThisEvent, retry: this.retry }
          : null;
      this.event = "";
      this.data = [];
      this.hasData = false;
      this.idThisEvent = null;
      this.retry = null;
      return event && this.hasDataOrNamed(event) ? event : null;
    }
    if (line.startsWith(":")) return null;
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    switch (field) {
      case "event":
        this.event = value;
        break;
      case "data":
        this.data.push(value);
        this.hasData = true;
        break;
      case "id":
        if (!value.includes("\0")) {
          this.lastEventId = value;
          this.idThisEvent = value;
        }
        break;
      case "retry":
        if (/^\d+$/.test(value)) this.retry = Number(value);
        break;
      default:
        break;
    }
    return null;
  }

  private hasDataOrNamed(event: SseEvent): boolean {
    return event.data !== "" || event.event !== "message";
  }
}

/** Reads a text/event-stream response body, yielding events as they arrive. */
export async function* readEvents(response: Response, parser = new SseParser()): AsyncGenerator<SseEvent> {
  if (!response.body) return;
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      for (const event of parser.feed(value)) yield event;
    }
  } finally {
    reader.releaseLock();
  }
}
