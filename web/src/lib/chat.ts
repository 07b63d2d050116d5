// Sending a chat message and following its reply over SSE, resuming after a dropped connection
// with Last-Event-ID (GET /api/messages/{id}/stream), as docs/api.md describes.
import { request } from "./api";
import { readEvents, SseParser } from "./sse";
import type { Message } from "./types";

export interface ReplyHandlers {
  created(message: Message): void;
  delta(messageId: string, text: string): void;
  reset(messageId: string): void;
  finished(message: Message): void;
  deleted(messageId: string): void;
  /** The connection dropped; resuming in `ms`. */
  reconnecting(ms: number): void;
}

interface Follow {
  replyId: string | null;
  lastEventId: string | null;
  done: boolean;
  retryMs: number;
}

async function consume(response: Response, state: Follow, handlers: ReplyHandlers): Promise<void> {
  const parser = new SseParser();
  for await (const event of readEvents(response, parser)) {
    if (event.id) state.lastEventId = event.id;
    if (event.retry !== null) state.retryMs = event.retry;
    let data: Record<string, unknown> = {};
    try {
      data = event.data ? (JSON.parse(event.data) as Record<string, unknown>) : {};
    } catch {
      continue;
    }
    switch (event.event) {
      case "message.created": {
        const message = data.message as Message;
        if (message.role === "assistant") state.replyId = message.id;
        handlers.created(message);
        break;
      }
      case "message.delta":
        handlers.delta(String(data.message_id), typeof data.delta === "string" ? data.delta : "");
        break;
      case "message.reset":
        handlers.reset(String(data.message_id));
        break;
      case "message.completed":
      case "message.failed":
        state.done = true;
        handlers.finished(data.message as Message);
        return;
      case "message.deleted":
        state.done = true;
        handlers.deleted(String(data.message_id));
        return;
      case "stream.closing":
        if (typeof data.retry_ms === "number") state.retryMs = data.retry_ms;
        return;
      default:
        break; // ping
    }
  }
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      resolve();
    });
  });

/** Follows a reply to its end, resuming with Last-Event-ID when the stream drops. */
export async function resumeReply(
  replyId: string,
  lastEventId: string | null,
  handlers: ReplyHandlers,
  signal: AbortSignal,
): Promise<void> {
  const state: Follow = { replyId, lastEventId, done: false, retryMs: 1000 };
  await followFrom(state, handlers, signal);
}

async function followFrom(state: Follow, handlers: ReplyHandlers, signal: AbortSignal): Promise<void> {
  let failures = 0;
  while (!state.done && !signal.aborted && state.replyId) {
    handlers.reconnecting(state.retryMs);
    await sleep(Math.min(state.retryMs * 2 ** Math.min(failures, 3), 15_000), signal);
    if (signal.aborted) return;
    try {
      const headers: Record<string, string> = { Accept: "text/event-stream" };
      if (state.lastEventId) headers["Last-Event-ID"] = state.lastEventId;
      const response = await request(`/api/messages/${state.replyId}/stream`, { headers, signal });
      failures = 0;
      await consume(response, state, handlers);
    } catch (error) {
      if (signal.aborted) return;
      failures += 1;
      if (failures > 6) throw error;
    }
  }
}

export interface SendOptions {
  deploymentId: string;
  message: string;
  conversationId: string | null;
  clientMessageId: string;
  signal: AbortSignal;
  onHeaders?: (response: Response) => void;
}

/** Sends a message with a streaming reply; resolves when the reply has finished. */
export async function sendMessage(options: SendOptions, handlers: ReplyHandlers): Promise<void> {
  const body: Record<string, unknown> = { message: options.message, client_message_id: options.clientMessageId };
  if (options.conversationId) body.conversation_id = options.conversationId;
  const response = await request(`/api/agents/${options.deploymentId}/chat`, {
    body,
    headers: { Accept: "text/event-stream" },
    signal: options.signal,
  });
  options.onHeaders?.(response);
  const state: Follow = { replyId: null, lastEventId: null, done: false, retryMs: 1000 };
  try {
    await consume(response, state, handlers);
  } catch (error) {
    if (options.signal.aborted) return;
    if (!state.replyId) throw error;
  }
  if (!state.done && !options.signal.aborted) await followFrom(state, handlers, options.signal);
}

/** `"chat";r=17;t=9` → 17 */
export function remainingFrom(header: string | null): number | null {
  const match = header ? /;\s*r=(\d+)/.exec(header) : null;
  return match ? Number(match[1]) : null;
}

export function newClientMessageId(): string {
  return `web-${crypto.randomUUID()}`;
}

export function formatWait(seconds: number): string {
  if (seconds < 60) return `${seconds} second${seconds === 1 ? "" : "s"}`;
  const minutes = Math.ceil(seconds / 60);
  if (minutes < 90) return `${minutes} minute${minutes === 1 ? "" : "s"}`;
  const hours = Math.round(minutes / 60);
  return `about ${hours} hour${hours === 1 ? "" : "s"}`;
}
