import { useCallback, useEffect, useLayoutEffect, useRef, useState } from "preact/hooks";
import { Modal } from "../components/Modal";
import { Survey } from "../components/Survey";
import { ErrorBox, formatTime, Loading } from "../components/Status";
import { api, ApiError, request } from "../lib/api";
import { session } from "../lib/auth";
import { saveResponse } from "../lib/download";
import { formatWait, newClientMessageId, remainingFrom, resumeReply, sendMessage, type ReplyHandlers } from "../lib/chat";
import { renderMarkdown } from "../lib/markdown";
import { navigate, useLocation } from "../lib/router";
import { useStore } from "../lib/store";
import type { Conversation, ConversationDetail, Deployment, Message, Page, Rating, Usage } from "../lib/types";
import { useAsync } from "../lib/useAsync";

const LOW_QUOTA = 3;

function RateReply({ rating, onRate }: { rating: Rating | undefined; onRate: (rating: Rating | null) => void }) {
  // One rating per reply: pressing the pressed one withdraws it.
  return (
    <div class="rate" role="group" aria-label="Rate this reply">
      <button type="button" class="secondary small" aria-pressed={rating === "like"} onClick={() => onRate(rating === "like" ? null : "like")}>
        Helpful
      </button>
      <button type="button" class="secondary small" aria-pressed={rating === "dislike"} onClick={() => onRate(rating === "dislike" ? null : "dislike")}>
        Not helpful
      </button>
    </div>
  );
}

function MessageItem({
  message,
  name,
  onRetry,
  onStop,
  stopping,
  rating,
  onRate,
}: {
  message: Message;
  name: string;
  onRetry?: () => void;
  onStop?: () => void;
  stopping: boolean;
  rating?: Rating;
  onRate?: (rating: Rating | null) => void;
}) {
  const mine = message.role === "user";
  const pending = message.status === "queued" || message.status === "running";
  return (
    <li class={`message ${mine ? "from-user" : "from-agent"} status-${message.status}`}>
      <div class="message-head">
        <span class="author">{mine ? "You" : name}</span>
        <time dateTime={message.completed_at ?? message.created_at}>{formatTime(message.completed_at ?? message.created_at)}</time>
      </div>
      {mine ? (
        <p class="message-text">{message.content}</p>
      ) : message.status === "failed" ? null : (
        // Replies are Markdown, rendered then sanitised (no raw HTML, no script, safe links only).
        <div class="message-text markdown" dangerouslySetInnerHTML={{ __html: renderMarkdown(message.content) }} />
      )}
      {pending && !message.content && (
        <p class="typing">
          <span class="dots" aria-hidden="true">
            <span />
            <span />
            <span />
          </span>{" "}
          {name} is typing…
        </p>
      )}
      {pending && onStop && (
        <button type="button" class="secondary small" onClick={onStop} disabled={stopping}>
          {stopping ? "Stopping…" : "Stop reply"}
        </button>
      )}
      {message.status === "cancelled" && <p class="note">Reply stopped.</p>}
      {onRate && <RateReply rating={rating} onRate={onRate} />}
      {message.status === "failed" && (
        <div class="error-box compact">
          <p>{message.error?.message ?? "The reply failed."}</p>
          {onRetry && (
            <button type="button" class="small" onClick={onRetry}>
              Retry
            </button>
          )}
        </div>
      )}
    </li>
  );
}

export function ChatPage({ deploymentId }: { deploymentId: string }) {
  const user = useStore(session);
  const { search } = useLocation();
  const conversationId = new URLSearchParams(search).get("conversation");

  const deployment = useAsync(
    (signal) => (user ? api<Deployment>(`/api/deployments/${deploymentId}`, { signal }) : Promise.reject(new ApiError("Please sign in to chat.", 401, "unauthorized"))),
    [deploymentId, user?.access_token],
  );

  const [conversations, setConversations] = useState<Conversation[]>([]);
  const [convCursor, setConvCursor] = useState<string | null>(null);
  const [convError, setConvError] = useState<unknown>(undefined);
  const [messages, setMessages] = useState<Message[]>([]);
  const [olderCursor, setOlderCursor] = useState<string | null>(null);
  const [historyState, setHistoryState] = useState<{ loading: boolean; error: unknown }>({ loading: false, error: undefined });
  const [text, setText] = useState("");
  const [sending, setSending] = useState(false);
  const [replyId, setReplyId] = useState<string | null>(null);
  const [stopping, setStopping] = useState(false);
  const [sendError, setSendError] = useState<unknown>(undefined);
  const [waitUntil, setWaitUntil] = useState(0);
  const [now, setNow] = useState(Date.now());
  const [remaining, setRemaining] = useState<number | null>(null);
  const [connection, setConnection] = useState("");
  const [announce, setAnnounce] = useState("");
  const [completedOnce, setCompletedOnce] = useState(false);
  const [ratings, setRatings] = useState<Record<string, Rating>>({});
  const [actionError, setActionError] = useState<{ title: string; error: unknown } | undefined>(undefined);
  const [confirmDelete, setConfirmDelete] = useState(false);
  const [deleting, setDeleting] = useState(false);
  const loadedConversation = useRef<string | null>(null);
  const abort = useRef<AbortController | null>(null);
  const log = useRef<HTMLDivElement>(null);
  const stick = useRef(true);
  const lastSend = useRef<{ text: string; clientMessageId: string } | null>(null);

  const name = deployment.data?.name ?? "Agent";

  useEffect(() => {
    document.title = `Chat with ${name} · Agent Marketplace`;
  }, [name]);

  const loadConversations = useCallback(
    async (cursor: string | null) => {
      try {
        const page = await api<Page<Conversation>>(`/api/agents/${deploymentId}/conversations`, {
          query: { limit: 20, cursor },
        });
        setConversations((c) => (cursor ? [...c, ...page.data] : page.data));
        setConvCursor(page.has_more ? page.next_cursor : null);
        setConvError(undefined);
      } catch (error) {
        setConvError(error);
      }
    },
    [deploymentId],
  );

  const refreshUsage = useCallback(async () => {
    try {
      const usage = await api<Usage>("/api/me/usage");
      setRemaining(usage.chat.remaining);
    } catch {
      /* the quota is a hint; nothing to show when it cannot be read */
    }
  }, []);

  useEffect(() => {
    if (!user) return;
    void loadConversations(null);
    void refreshUsage();
  }, [loadConversations, refreshUsage, user]);

  const loadHistory = useCallback(
    async (id: string, before: string | null) => {
      setHistoryState({ loading: true, error: undefined });
      try {
        const detail = await api<ConversationDetail>(`/api/agents/${deploymentId}/conversations/${id}`, {
          query: { limit: 50, before },
        });
        if (before) {
          const el = log.current;
          const fromBottom = el ? el.scrollHeight - el.scrollTop : 0;
          setMessages((m) => [...detail.messages.data, ...m]);
          requestAnimationFrame(() => {
            if (el) el.scrollTop = el.scrollHeight - fromBottom;
          });
        } else {
          stick.current = true;
          setMessages(detail.messages.data);
        }
        const rated = Object.fromEntries(detail.feedback.flatMap((f) => (f.rating ? [[f.message_id, f.rating]] : [])));
        setRatings((r) => (before ? { ...r, ...rated } : rated));
        setOlderCursor(detail.messages.has_more ? detail.messages.next_cursor : null);
        setHistoryState({ loading: false, error: undefined });
        return detail.messages.data;
      } catch (error) {
        setHistoryState({ loading: false, error });
        return [];
      }
    },
    [deploymentId],
  );

  // Open the conversation named in the URL (not the one we just created by sending).
  useEffect(() => {
    if (!user) return;
    if (conversationId === loadedConversation.current) return;
    abort.current?.abort();
    loadedConversation.current = conversationId;
    setReplyId(null);
    setSending(false);
    setActionError(undefined);
    if (!conversationId) {
      setMessages([]);
      setOlderCursor(null);
      return;
    }
    void loadHistory(conversationId, null).then((loaded) => {
      // A reply still being written when the page was opened: follow it.
      const last = loaded[loaded.length - 1];
      if (last && last.role === "assistant" && (last.status === "queued" || last.status === "running")) {
        follow(last.id);
      }
    });
  }, [conversationId, loadHistory, user]);

  // Follow the reply as it streams, unless the reader scrolled up.
  useLayoutEffect(() => {
    const el = log.current;
    if (el && stick.current) el.scrollTop = el.scrollHeight;
  }, [messages]);

  useEffect(() => {
    if (waitUntil <= Date.now()) return;
    const timer = setInterval(() => {
      setNow(Date.now());
      if (Date.now() >= waitUntil) clearInterval(timer);
    }, 1000);
    return () => clearInterval(timer);
  }, [waitUntil]);

  const patch = (id: string, change: (m: Message) => Message) =>
    setMessages((list) => list.map((m) => (m.id === id ? change(m) : m)));

  const handlers = (tempUser: string | null, tempReply: string | null): ReplyHandlers => ({
    created(message) {
      const temp = message.role === "user" ? tempUser : tempReply;
      setMessages((list) => {
        if (list.some((m) => m.id === message.id)) return list;
        const at = list.findIndex((m) => m.id === temp);
        if (at === -1) return [...list, message];
        const copy = [...list];
        copy[at] = message;
        return copy;
      });
      if (message.role === "assistant") {
        setReplyId(message.id);
        setAnnounce(`${name} is replying…`);
      }
      if (message.conversation_id !== loadedConversation.current) {
        loadedConversation.current = message.conversation_id;
        navigate(`/chat/${deploymentId}?conversation=${message.conversation_id}`, { replace: true });
      }
    },
    delta(id, piece) {
      setConnection("");
      patch(id, (m) => ({ ...m, status: "running", content: m.content + piece }));
    },
    reset(id) {
      patch(id, (m) => ({ ...m, content: "" }));
    },
    finished(message) {
      setConnection("");
      patch(message.id, () => message);
      setReplyId(null);
      setStopping(false);
      if (message.status === "completed") {
        setAnnounce(`${name} replied: ${message.content.slice(0, 500)}`);
        setCompletedOnce(true);
      } else if (message.status === "cancelled") {
        setAnnounce("Reply stopped.");
      } else {
        setAnnounce(`The reply failed: ${message.error?.message ?? ""}`);
      }
    },
    deleted(id) {
      setMessages((list) => list.filter((m) => m.id !== id));
      setReplyId(null);
    },
    reconnecting() {
      setConnection("Connection lost. Reconnecting…");
    },
  });

  function follow(id: string) {
    const controller = new AbortController();
    abort.current = controller;
    setReplyId(id);
    resumeReply(id, null, handlers(null, null), controller.signal)
      .catch((error: unknown) => setSendError(error))
      .finally(() => {
        setConnection("");
        void loadConversations(null);
      });
  }

  const send = async (message: string, clientMessageId: string) => {
    if (!message.trim() || sending) return;
    setSendError(undefined);
    setSending(true);
    lastSend.current = { text: message, clientMessageId };
    const stamp = new Date().toISOString();
    const tempUser = `temp-user-${clientMessageId}`;
    const tempReply = `temp-reply-${clientMessageId}`;
    const conversation = loadedConversation.current;
    const base = { conversation_id: conversation ?? "", error: null, usage: null, model: null, created_at: stamp, completed_at: null };
    stick.current = true;
    setMessages((list) => [
      ...list,
      { ...base, id: tempUser, role: "user", content: message, status: "completed" },
      { ...base, id: tempReply, role: "assistant", content: "", status: "queued" },
    ]);
    const controller = new AbortController();
    abort.current = controller;
    try {
      await sendMessage(
        {
          deploymentId,
          message,
          conversationId: conversation,
          clientMessageId,
          signal: controller.signal,
          onHeaders: (response) => {
            const left = remainingFrom(response.headers.get("RateLimit"));
            if (left !== null) setRemaining(left);
          },
        },
        handlers(tempUser, tempReply),
      );
      setText((t) => (t === message ? "" : t));
      lastSend.current = null;
    } catch (error) {
      setMessages((list) => list.filter((m) => m.id !== tempUser && m.id !== tempReply));
      if (error instanceof ApiError && error.status === 429) {
        setWaitUntil(Date.now() + (error.retryAfter ?? 1) * 1000);
        setNow(Date.now());
      }
      if (!(error instanceof DOMException)) setSendError(error);
      setText(message);
    } finally {
      setSending(false);
      setReplyId(null);
      setStopping(false);
      if (!controller.signal.aborted) {
        void loadConversations(null);
        void refreshUsage();
      }
    }
  };

  const stop = async () => {
    if (!replyId) return;
    setStopping(true);
    try {
      const message = await api<Message>(`/api/messages/${replyId}/cancel`, { method: "POST" });
      if (message.status !== "queued" && message.status !== "running") patch(message.id, (m) => ({ ...message, content: message.content || m.content }));
    } catch (error) {
      setSendError(error);
      setStopping(false);
    }
  };

  const rate = async (id: string, rating: Rating | null) => {
    const before = ratings[id];
    const set = (value: Rating | undefined) =>
      setRatings((r) => {
        const next = { ...r };
        if (value) next[id] = value;
        else delete next[id];
        return next;
      });
    set(rating ?? undefined);
    setActionError(undefined);
    try {
      await api(`/api/messages/${id}/feedback`, { method: "POST", body: { rating } });
      setAnnounce(rating === null ? "Rating removed." : rating === "like" ? "Rated helpful." : "Rated not helpful.");
    } catch (error) {
      set(before);
      setActionError({ title: "Your rating was not saved.", error });
    }
  };

  const exportAs = async (format: "md" | "json") => {
    if (!conversationId) return;
    setActionError(undefined);
    try {
      const response = await request(`/api/agents/${deploymentId}/conversations/${conversationId}/export`, {
        query: { format },
        headers: { Accept: format === "md" ? "text/markdown" : "application/json" },
      });
      await saveResponse(response, `conversation-${conversationId}.${format}`);
    } catch (error) {
      setActionError({ title: "The conversation could not be exported.", error });
    }
  };

  const deleteConversation = async () => {
    if (!conversationId) return;
    setDeleting(true);
    setActionError(undefined);
    try {
      abort.current?.abort();
      await api(`/api/agents/${deploymentId}/conversations/${conversationId}`, { method: "DELETE" });
      setConversations((list) => list.filter((c) => c.id !== conversationId));
      setAnnounce("Conversation deleted.");
      navigate(`/chat/${deploymentId}`, { replace: true });
      void loadConversations(null);
    } catch (error) {
      setActionError({ title: "The conversation was not deleted.", error });
    } finally {
      setDeleting(false);
      setConfirmDelete(false);
    }
  };

  const retry = (reply: Message) => {
    const index = messages.findIndex((m) => m.id === reply.id);
    const question = [...messages.slice(0, index)].reverse().find((m) => m.role === "user");
    if (question) void send(question.content, newClientMessageId());
  };

  const waitSeconds = Math.max(0, Math.ceil((waitUntil - now) / 1000));
  const status = deployment.data?.status;
  const blocked = status && status !== "active";

  if (!user) {
    return (
      <section class="page">
        <h1>Chat</h1>
        <p>
          <a href={`/sign-in?next=${encodeURIComponent(`/chat/${deploymentId}`)}`}>Sign in</a> to chat with your agents.
        </p>
      </section>
    );
  }
  if (deployment.error !== undefined) {
    const missing = deployment.error instanceof ApiError && [404, 422].includes(deployment.error.status);
    return (
      <section class="page">
        <h1>{missing ? "Deployment not found" : "Could not open this chat"}</h1>
        {missing ? (
          <p>
            This deployment does not exist or was deleted. <a href="/my-agents">Go to my agents</a>.
          </p>
        ) : (
          <ErrorBox error={deployment.error} onRetry={deployment.reload} />
        )}
      </section>
    );
  }

  return (
    <section class="page chat-page">
      <div class="chat-layout">
        <aside class="conversations" aria-labelledby="conversations-title">
          <h2 id="conversations-title">Conversations</h2>
          <a class="button secondary" href={`/chat/${deploymentId}`}>
            New conversation
          </a>
          {convError !== undefined && <ErrorBox error={convError} onRetry={() => void loadConversations(null)} title="Could not load conversations." />}
          <ul class="conversation-list">
            {conversations.map((c) => (
              <li key={c.id}>
                <a href={`/chat/${deploymentId}?conversation=${c.id}`} aria-current={c.id === conversationId ? "page" : undefined}>
                  <span class="conv-title">{c.title ?? "Untitled conversation"}</span>
                  <span class="muted small">{formatTime(c.last_message_at ?? c.created_at)}</span>
                </a>
              </li>
            ))}
          </ul>
          {conversations.length === 0 && convError === undefined && <p class="muted">No conversations yet.</p>}
          {convCursor && (
            <button type="button" class="secondary" onClick={() => void loadConversations(convCursor)}>
              More conversations
            </button>
          )}
        </aside>

        <div class="thread">
          <div class="thread-head">
            <h1>
              <span aria-hidden="true">{deployment.data?.agent?.icon ?? "🤖"} </span>
              {deployment.loading && !deployment.data ? "Loading…" : name}
            </h1>
            <a href="/my-agents" class="small">
              Manage my agents
            </a>
          </div>
          {conversationId && (
            <div class="thread-actions" role="group" aria-label="This conversation">
              <button type="button" class="secondary small" onClick={() => void exportAs("md")}>
                Export as Markdown
              </button>
              <button type="button" class="secondary small" onClick={() => void exportAs("json")}>
                Export as JSON
              </button>
              <button type="button" class="danger small" onClick={() => setConfirmDelete(true)}>
                Delete conversation
              </button>
            </div>
          )}
          {confirmDelete && (
            <Modal title="Delete this conversation?" onClose={() => setConfirmDelete(false)}>
              <h2>Delete this conversation?</h2>
              <p>Its messages and your ratings are deleted too; a reply still being written stops. This cannot be undone.</p>
              <div class="actions">
                <button type="button" class="danger" disabled={deleting} onClick={() => void deleteConversation()}>
                  {deleting ? "Deleting…" : "Delete for good"}
                </button>
                <button type="button" class="secondary" onClick={() => setConfirmDelete(false)}>
                  Keep it
                </button>
              </div>
            </Modal>
          )}
          {actionError !== undefined && <ErrorBox error={actionError.error} title={actionError.title} />}
          {blocked && (
            <div class="notice" role="status">
              {status === "paused"
                ? "This deployment is paused. Resume it in My agents to chat."
                : status === "configuring"
                  ? `This deployment needs more configuration: ${deployment.data?.status_reason ?? ""}`
                  : `This deployment has a problem: ${deployment.data?.status_reason ?? ""}`}{" "}
              <a href="/my-agents">Open my agents</a>
            </div>
          )}
          <div
            class="log"
            ref={log}
            tabIndex={0}
            aria-label="Messages"
            onScroll={(e) => {
              const el = e.currentTarget;
              stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < 48;
            }}
          >
            {olderCursor && conversationId && (
              <button type="button" class="secondary load-older" onClick={() => void loadHistory(conversationId, olderCursor)}>
                Load earlier messages
              </button>
            )}
            {historyState.loading && <Loading label="Loading messages…" />}
            {historyState.error !== undefined && conversationId && (
              <ErrorBox error={historyState.error} onRetry={() => void loadHistory(conversationId, null)} title="Could not load the conversation." />
            )}
            {messages.length === 0 && !historyState.loading && (
              <p class="muted empty-chat">Say hello: your messages and {name}'s replies appear here.</p>
            )}
            <ol class="messages">
              {messages.map((m) => (
                <MessageItem
                  key={m.id}
                  message={m}
                  name={name}
                  stopping={stopping}
                  onStop={m.id === replyId ? () => void stop() : undefined}
                  onRetry={m.status === "failed" && !sending ? () => retry(m) : undefined}
                  rating={ratings[m.id]}
                  onRate={m.role === "assistant" && m.status === "completed" && !m.id.startsWith("temp-") ? (r) => void rate(m.id, r) : undefined}
                />
              ))}
            </ol>
          </div>
          <div class="sr-only" aria-live="polite" role="status">
            {announce}
          </div>
          {connection && (
            <p class="notice" role="status">
              {connection}
            </p>
          )}
          {remaining !== null && remaining <= LOW_QUOTA && waitSeconds === 0 && (
            <p class="notice" role="status">
              {remaining === 0 ? "You have no messages left this minute." : `You can send ${remaining} more message${remaining === 1 ? "" : "s"} this minute.`}
            </p>
          )}
          {waitSeconds > 0 && (
            <p class="notice warning" role="alert">
              You are sending messages too quickly. You can send again in {formatWait(waitSeconds)}.
            </p>
          )}
          {sendError !== undefined && !(sendError instanceof ApiError && sendError.status === 429) && (
            <ErrorBox
              error={sendError}
              title="Your message was not sent."
              onRetry={lastSend.current ? () => lastSend.current && void send(lastSend.current.text, lastSend.current.clientMessageId) : undefined}
            />
          )}
          <form
            class="composer"
            onSubmit={(e) => {
              e.preventDefault();
              void send(text, newClientMessageId());
            }}
          >
            <label for="message" class="sr-only">
              Message {name}
            </label>
            <textarea
              id="message"
              rows={2}
              value={text}
              maxLength={32000}
              placeholder={`Message ${name}…`}
              disabled={Boolean(blocked)}
              onInput={(e) => setText(e.currentTarget.value)}
              onKeyDown={(e) => {
                if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
                  e.preventDefault();
                  void send(text, newClientMessageId());
                }
              }}
            />
            <button type="submit" disabled={sending || !text.trim() || waitSeconds > 0 || Boolean(blocked)}>
              {sending ? "Sending…" : "Send"}
            </button>
          </form>
          <p class="hint">Enter sends, Shift+Enter adds a line.</p>
        </div>
      </div>
      {completedOnce && <Survey deploymentId={deploymentId} />}
    </section>
  );
}
