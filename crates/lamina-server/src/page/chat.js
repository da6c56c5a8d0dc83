// The chat page: a conversation with one of this server's models over its own
// OpenAI-compatible API (`GET /v1/models`, streamed `POST /v1/chat/completions`).
//
// The conversation lives in this page only. Replies stream through fetch and a
// ReadableStream; Stop aborts the request, and the server cancels the sequence when the
// connection closes. The API key, when the server needs one, is kept in sessionStorage
// (this tab only) and sent as a Bearer token.

import { MarkdownView } from "./markdown.js";

const KEY_STORAGE = "lamina.apiKey";
const $ = (id) => document.getElementById(id);

const ui = {
  model: $("model"),
  reloadModels: $("reload-models"),
  system: $("system"),
  temperature: $("temperature"),
  maxTokens: $("max-tokens"),
  keyForm: $("key-form"),
  apiKey: $("api-key"),
  settings: $("settings"),
  messages: $("messages"),
  status: $("status"),
  composer: $("composer"),
  prompt: $("prompt"),
  send: $("send"),
  stop: $("stop"),
  newChat: $("new-chat"),
};

/** The turns so far, as the API takes them: `{role, content}`. */
let history = [];
/** The reply being streamed: its AbortController. */
let running = null;
/** Counts "New chat"s: a reply stopped by one does not join the next conversation. */
let conversation = 0;

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = apiKey();
  if (key) h.Authorization = "Bearer " + key;
  return h;
}

function setStatus(text, isError = false) {
  ui.status.textContent = text;
  ui.status.classList.toggle("error", isError);
}

/** An API error response as one readable line. */
async function describeError(response) {
  let message = "";
  try {
    const body = await response.json();
    const e = body && body.error;
    if (e && e.message) message = e.message + (e.param ? ` (parameter: ${e.param})` : "");
  } catch {
    // Not JSON: the status line says enough.
  }
  return `${response.status} ${response.statusText || ""}`.trim() + (message ? ": " + message : "");
}

function needKey(message) {
  ui.keyForm.hidden = false;
  ui.settings.open = true;
  setStatus(message, true);
  ui.apiKey.focus();
}

async function loadModels() {
  const previous = ui.model.value;
  let response;
  try {
    response = await fetch("/v1/models", { headers: headers() });
  } catch (e) {
    setStatus("Could not reach the server: " + e.message, true);
    return;
  }
  if (response.status === 401) {
    needKey(apiKey() ? "The API key was not accepted: " + (await describeError(response)) : "This server needs an API key: enter it in Settings.");
    return;
  }
  if (!response.ok) {
    setStatus("Could not list the models: " + (await describeError(response)), true);
    return;
  }
  const list = await response.json();
  const models = (list && list.data) || [];
  ui.model.replaceChildren();
  for (const m of models) {
    const option = document.createElement("option");
    option.value = m.id;
    option.textContent = m.id + (m.loaded === true ? " (loaded)" : m.loaded === false ? " (loads on first use)" : "");
    ui.model.append(option);
  }
  if (models.length === 0) {
    const option = document.createElement("option");
    option.value = "";
    option.textContent = "No models";
    ui.model.append(option);
    setStatus("This server offers no models.", true);
    return;
  }
  if (models.some((m) => m.id === previous)) ui.model.value = previous;
  ui.model.disabled = false;
  document.body.dataset.models = "ready";
  if (ui.status.classList.contains("error")) setStatus("");
}

/** A message in the list; returns its content element. */
function addMessage(role) {
  const li = document.createElement("li");
  li.className = "message " + role;
  const who = document.createElement("p");
  who.className = "role";
  who.textContent = role === "user" ? "You" : "Assistant";
  const content = document.createElement("div");
  content.className = "content";
  li.append(who, content);
  ui.messages.append(li);
  return { li, content };
}

function nearBottom() {
  const m = ui.messages;
  return m.scrollHeight - m.scrollTop - m.clientHeight < 80;
}

function scrollDown() {
  ui.messages.scrollTop = ui.messages.scrollHeight;
}

/** Reads server-sent events from a fetch response, calling `onData` with each `data` payload. */
async function readEvents(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
    buffer = buffer.replace(/\r\n?/g, "\n");
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = event
        .split("\n")
        .filter((l) => l.startsWith("data:"))
        .map((l) => l.slice(l.startsWith("data: ") ? 6 : 5))
        .join("\n");
      if (data && onData(data) === false) {
        reader.cancel().catch(() => {});
        return;
      }
    }
    if (done) return;
  }
}

function number(input, fallback) {
  const v = input.valueAsNumber;
  return Number.isFinite(v) ? v : fallback;
}

function formatStats(s) {
  const parts = [];
  if (s.tokensPerSecond !== null) parts.push(`${s.tokensPerSecond.toFixed(1)} tok/s`);
  if (s.ttftMs !== null) parts.push(`first token ${Math.round(s.ttftMs)} ms`);
  if (s.usage) {
    const cached = (s.usage.prompt_tokens_details && s.usage.prompt_tokens_details.cached_tokens) || 0;
    parts.push(`prompt ${s.usage.prompt_tokens} tokens (${cached} cached)`);
    parts.push(`${s.usage.completion_tokens} generated`);
  } else if (s.deltas > 0) {
    parts.push(`about ${s.deltas} generated`);
  }
  if (s.finish) parts.push(s.finish === "length" ? "stopped at max tokens" : `finished: ${s.finish}`);
  return parts.join(" · ");
}

function showStats(li, s) {
  let el = li.querySelector(".stats");
  if (!el) {
    el = document.createElement("p");
    el.className = "stats";
    li.append(el);
  }
  el.textContent = formatStats(s);
  // The same figures, machine-readable.
  el.dataset.tokensPerSecond = s.tokensPerSecond === null ? "" : s.tokensPerSecond.toFixed(2);
  el.dataset.ttftMs = s.ttftMs === null ? "" : Math.round(s.ttftMs);
  if (s.usage) {
    el.dataset.promptTokens = s.usage.prompt_tokens;
    el.dataset.cachedTokens = (s.usage.prompt_tokens_details && s.usage.prompt_tokens_details.cached_tokens) || 0;
    el.dataset.completionTokens = s.usage.completion_tokens;
  }
}

function showError(li, text) {
  const el = document.createElement("p");
  el.className = "error";
  el.setAttribute("role", "alert");
  el.textContent = text;
  li.append(el);
}

function setRunning(controller) {
  running = controller;
  ui.stop.disabled = !controller;
  ui.send.disabled = !!controller;
  document.body.classList.toggle("streaming", !!controller);
}

async function send() {
  const text = ui.prompt.value;
  if (running || !text.trim()) return;
  const model = ui.model.value;
  if (!model) {
    setStatus("No model is selected yet.", true);
    return;
  }
  ui.prompt.value = "";
  setStatus("");
  const user = addMessage("user");
  user.content.textContent = text;
  history.push({ role: "user", content: text });
  const messages = [];
  const system = ui.system.value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...history);
  const body = {
    model,
    messages,
    stream: true,
    stream_options: { include_usage: true },
    temperature: number(ui.temperature, 0.7),
    max_tokens: Math.round(number(ui.maxTokens, 512)),
  };

  const reply = addMessage("assistant");
  reply.li.dataset.state = "waiting";
  reply.li.setAttribute("aria-busy", "true");
  const view = new MarkdownView(reply.content);
  scrollDown();
  const controller = new AbortController();
  setRunning(controller);
  const mine = conversation;
  const t0 = performance.now();
  const stats = { ttftMs: null, tokensPerSecond: null, usage: null, finish: null, deltas: 0 };
  let firstAt = null;
  let lastAt = null;
  let answer = "";
  let failure = null;
  let sawDone = false;

  const updateRate = () => {
    const n = stats.usage ? stats.usage.completion_tokens : stats.deltas;
    // Tokens after the first over the time they took: the decode rate.
    stats.tokensPerSecond = n >= 2 && lastAt > firstAt ? ((n - 1) * 1000) / (lastAt - firstAt) : null;
  };

  let response = null;
  try {
    response = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal });
    if (!response.ok) {
      failure = await describeError(response);
      if (response.status === 401) needKey("The API key was missing or not accepted.");
    } else {
      reply.li.dataset.state = "streaming";
      await readEvents(response, (data) => {
        if (data === "[DONE]") {
          sawDone = true;
          return false;
        }
        let chunk;
        try {
          chunk = JSON.parse(data);
        } catch {
          failure = "The server sent an event that is not JSON: " + data.slice(0, 200);
          return false;
        }
        if (chunk.error) {
          failure = chunk.error.message || JSON.stringify(chunk.error);
          return false;
        }
        for (const choice of chunk.choices || []) {
          const delta = (choice.delta && choice.delta.content) || "";
          if (delta) {
            const now = performance.now();
            if (firstAt === null) {
              firstAt = now;
              stats.ttftMs = now - t0;
            }
            lastAt = now;
            stats.deltas++;
            const follow = nearBottom();
            answer += delta;
            view.update(answer);
            if (follow) scrollDown();
          }
          if (choice.finish_reason) stats.finish = choice.finish_reason;
        }
        if (chunk.usage) stats.usage = chunk.usage;
        return true;
      });
      if (!failure && !sawDone) failure = "The stream ended before the answer was complete.";
    }
  } catch (e) {
    if (e.name === "AbortError") {
      reply.li.dataset.state = "stopped";
    } else if (response === null) {
      failure = "Could not reach the server: " + e.message;
    } else {
      failure = "The reply could not be read: " + e.message;
    }
  }
  setRunning(null);
  if (mine !== conversation) return;
  reply.li.removeAttribute("aria-busy");
  view.update(answer);
  updateRate();
  if (failure) {
    reply.li.dataset.state = "error";
    showError(reply.li, failure);
  } else if (reply.li.dataset.state !== "stopped") {
    reply.li.dataset.state = "done";
  }
  if (reply.li.dataset.state === "stopped") stats.finish = "stopped";
  if (answer) {
    history.push({ role: "assistant", content: answer });
    showStats(reply.li, stats);
  } else {
    // Nothing came back: the question is not part of the conversation.
    history.pop();
    user.li.classList.add("unanswered");
    if (!ui.prompt.value) ui.prompt.value = text;
    if (!failure) reply.li.remove();
  }
  if (nearBottom()) scrollDown();
  ui.prompt.focus();
  // A model may have been loaded for this reply.
  loadModels();
}

function newChat() {
  conversation++;
  if (running) running.abort();
  history = [];
  ui.messages.replaceChildren();
  setStatus("");
  ui.prompt.focus();
}

ui.composer.addEventListener("submit", (e) => {
  e.preventDefault();
  send();
});

ui.prompt.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    send();
  }
});

ui.stop.addEventListener("click", () => {
  if (running) running.abort();
});

ui.newChat.addEventListener("click", newChat);
ui.reloadModels.addEventListener("click", loadModels);

ui.keyForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const key = ui.apiKey.value.trim();
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
  ui.apiKey.value = "";
  ui.apiKey.placeholder = key ? "Key saved for this tab" : "";
  loadModels();
});

// On a narrow screen the conversation gets the room; Settings opens on demand (and
// stays open while it asks for a key).
const narrow = matchMedia("(max-width: 48rem)");
const fitWidth = () => {
  if (narrow.matches && !ui.status.classList.contains("error")) ui.settings.open = false;
};
narrow.addEventListener("change", fitWidth);
fitWidth();
if (apiKey()) {
  ui.keyForm.hidden = false;
  ui.apiKey.placeholder = "Key saved for this tab";
}
loadModels();
