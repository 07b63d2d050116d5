// A minimal client served from another origin (tests/browser/test_cross_origin.py): given the
// API's URL and an access token (?api=…&token=…) it lists the catalog, deploys an agent and
// sends a chat message, reading the streamed reply with fetch and a ReadableStream. What it saw
// goes to `window.result` and the page.
const params = new URLSearchParams(location.search);
const api = params.get("api");
const token = params.get("token");
const result = (window.result = { done: false });

function show(id, text) {
  document.getElementById(id).textContent = text;
}

async function json(response) {
  if (!response.ok) throw new Error(`HTTP ${response.status}: ${await response.text()}`);
  return response.json();
}

async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trim());
      }
      if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
    }
  }
}

async function run() {
  const auth = { Authorization: `Bearer ${token}` };
  show("status", "browsing");
  const list = await fetch(`${api}/api/marketplace/agents?sort=name&limit=50`);
  result.listRequestId = list.headers.get("X-Request-ID");
  const agents = (await json(list)).data;
  for (const agent of agents) {
    const item = document.createElement("li");
    item.textContent = agent.name;
    document.getElementById("agents").append(item);
  }
  result.agents = agents.map((agent) => agent.slug);

  show("status", "deploying");
  const deployment = await json(
    await fetch(`${api}/api/marketplace/deploy`, {
      method: "POST",
      headers: { ...auth, "Content-Type": "application/json", "X-Request-ID": "cross-origin-deploy-1" },
      body: JSON.stringify({ agent_id: "sql-sidekick", config: {} }),
    }),
  );

  show("status", "chatting");
  const chat = await fetch(`${api}/api/agents/${deployment.id}/chat`, {
    method: "POST",
    headers: {
      ...auth,
      Accept: "text/event-stream",
      "Content-Type": "application/json",
      "Idempotency-Key": crypto.randomUUID(),
    },
    body: JSON.stringify({ message: "[[long:40]] [[tps:200]] hello from another origin", mode: "streaming" }),
  });
  if (!chat.ok) throw new Error(`HTTP ${chat.status}: ${await chat.text()}`);
  result.chatHeaders = {
    requestId: chat.headers.get("X-Request-ID"),
    rateLimit: chat.headers.get("RateLimit"),
    rateLimitPolicy: chat.headers.get("RateLimit-Policy"),
  };
  let text = "";
  result.deltas = 0;
  for await (const { event, data } of sseEvents(chat.body)) {
    if (event === "message.delta") {
      text += data.delta;
      result.deltas += 1;
      show("reply", text);
    } else if (event === "message.completed" || event === "message.failed") {
      result.final = data.message;
    }
  }
  result.streamed = text;
  show("status", "done");
}

run()
  .catch((error) => {
    result.error = { name: error.name, message: String(error.message) };
    show("status", `failed: ${error.name}`);
  })
  .finally(() => {
    result.done = true;
  });
