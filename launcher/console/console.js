// modelyard's console: chat, models, gallery and status over the server's own API. No build
// step and no third-party code: what the browser runs is this file. Every request goes through
// api(), with the session's API key when the server asks for one, so the console can do nothing
// the API forbids.
"use strict";

const KEY = "modelyard.key";          // sessionStorage: the API key, for this session only
const STORE = "modelyard.conversations"; // localStorage: the conversations
const $ = (id) => document.getElementById(id);

// --- the API ------------------------------------------------------------------------------

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = {...(options.headers || {})};
  const key = sessionStorage.getItem(KEY);
  if (key) headers.Authorization = `Bearer ${key}`;
  if (options.body !== undefined && typeof options.body !== "string") {
    headers["Content-Type"] = "application/json";
    options = {...options, body: JSON.stringify(options.body)};
  }
  const response = await fetch(path, {...options, headers});
  if (response.status === 401) {
    askForKey(sessionStorage.getItem(KEY) ? "That key was refused." : "");
    throw new Unauthorized("an API key is required");
  }
  return response;
}

async function apiJSON(path, options) {
  const response = await api(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error ? body.error.message : `HTTP ${response.status}`);
  return body;
}

function askForKey(message) {
  $("login-error").textContent = message;
  if (!$("login").open) $("login").showModal();
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY, $("login-key").value.trim());
  $("login").close();
  await start();
});

// --- Markdown: the text is escaped first, so nothing the model writes becomes markup ------

function escapeHTML(text) {
  return text.replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
}

function inline(text) {
  return text
    .replace(/`([^`]+)`/g, "<code>$1</code>")
    .replace(/\*\*([^*]+)\*\*/g, "<strong>$1</strong>")
    .replace(/(^|[^*])\*([^*\n]+)\*/g, "$1<em>$2</em>")
    .replace(/\[([^\]]+)\]\((https?:\/\/[^\s)]+)\)/g, '<a href="$2" rel="noopener noreferrer" target="_blank">$1</a>');
}

function markdown(source) {
  const parts = escapeHTML(source).split(/```([\w+-]*)\n?([\s\S]*?)(?:```|$)/);
  let html = "";
  for (let i = 0; i < parts.length; i += 3) {
    html += parts[i].split(/\n{2,}/).map((block) => {
      if (!block.trim()) return "";
      const heading = block.match(/^(#{1,4}) (.*)$/);
      if (heading) return `<h${heading[1].length + 2}>${inline(heading[2])}</h${heading[1].length + 2}>`;
      if (/^\s*([-*]|\d+\.) /.test(block)) {
        const items = block.split(/\n(?=\s*(?:[-*]|\d+\.) )/).map((item) => `<li>${inline(item.replace(/^\s*([-*]|\d+\.) /, ""))}</li>`);
        return /^\s*\d+\./.test(block) ? `<ol>${items.join("")}</ol>` : `<ul>${items.join("")}</ul>`;
      }
      return `<p>${inline(block).replace(/\n/g, "<br>")}</p>`;
    }).join("");
    if (i + 2 < parts.length) html += `<pre><code class="language-${parts[i + 1]}">${parts[i + 2]}</code></pre>`;
  }
  return html;
}

// --- conversations, kept in the browser ----------------------------------------------------

let conversations = JSON.parse(localStorage.getItem(STORE) || "[]");
let current = conversations[0] || newConversation();
let running = null; // the AbortController of the answer being streamed

function newConversation() {
  const conversation = {id: crypto.randomUUID(), title: "New chat", messages: []};
  conversations.unshift(conversation);
  return conversation;
}

function save() {
  localStorage.setItem(STORE, JSON.stringify(conversations));
  const list = $("conversation-list");
  list.replaceChildren(...conversations.map((c) => {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.textContent = c.title;
    button.className = c === current ? "current" : "";
    button.addEventListener("click", () => { if (!running) { current = c; save(); renderMessages(); } });
    item.append(button);
    return item;
  }));
}

function renderMessage(message, index) {
  const box = document.createElement("article");
  box.className = `message ${message.role}`;
  box.dataset.index = index;
  if (message.reasoning) {
    const details = document.createElement("details");
    details.innerHTML = `<summary>Reasoning</summary><div class="reasoning">${markdown(message.reasoning)}</div>`;
    box.append(details);
  }
  const body = document.createElement("div");
  body.className = "content";
  body.innerHTML = markdown(message.content || "");
  box.append(body);
  for (const call of message.tool_calls || []) {
    const card = document.createElement("div");
    card.className = "tool-call";
    card.innerHTML = `<strong>${escapeHTML(call.function.name)}</strong><pre>${escapeHTML(call.function.arguments)}</pre>`;
    box.append(card);
  }
  if (message.stats) {
    const stats = document.createElement("p");
    stats.className = "stats";
    stats.textContent = message.stats;
    box.append(stats);
  }
  if (message.role === "user") {
    const edit = document.createElement("button");
    edit.className = "edit";
    edit.textContent = "Edit";
    edit.addEventListener("click", () => editMessage(index));
    box.append(edit);
  }
  return box;
}

function renderMessages() {
  $("messages").replaceChildren(...current.messages.map(renderMessage));
  $("messages").scrollTop = $("messages").scrollHeight;
}

function editMessage(index) {
  if (running) return;
  $("prompt").value = current.messages[index].content;
  current.messages = current.messages.slice(0, index); // edit-and-resend: the prefix cache keeps this fast
  save();
  renderMessages();
  $("prompt").focus();
}

// --- chat ----------------------------------------------------------------------------------

function settings() {
  const body = {model: $("model").value, stream: true, stream_options: {include_usage: true}};
  for (const name of ["temperature", "top_p", "top_k", "max_tokens", "seed"]) {
    const value = $(name).value;
    if (value !== "") body[name] = Number(value);
  }
  const stops = $("stop_words").value.split("\n").filter((s) => s);
  if (stops.length) body.stop = stops.slice(0, 4);
  return body;
}

async function* sse(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of event.split("\n")) {
        if (line.startsWith("data: ") && line !== "data: [DONE]") yield JSON.parse(line.slice(6));
      }
    }
  }
}

async function answer() {
  const system = $("system").value.trim();
  const history = current.messages.map(({role, content, tool_calls}) => (tool_calls ? {role, content, tool_calls} : {role, content}));
  const body = {...settings(), messages: system ? [{role: "system", content: system}, ...history] : history};
  const reply = {role: "assistant", content: "", reasoning: ""};
  current.messages.push(reply);
  let box = renderMessage(reply, current.messages.length - 1);
  $("messages").append(box);
  running = new AbortController();
  setRunning(true);
  const started = performance.now();
  let first = null, usage = null;
  try {
    const response = await api("/v1/chat/completions", {method: "POST", body, signal: running.signal});
    if (!response.ok) throw new Error((await response.json()).error.message);
    for await (const chunk of sse(response)) {
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) usage = chunk.usage;
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (!delta) continue;
      first = first || performance.now();
      reply.content += delta.content || "";
      reply.reasoning += delta.reasoning_content || "";
      for (const part of delta.tool_calls || []) {
        reply.tool_calls = reply.tool_calls || [];
        const call = reply.tool_calls[part.index] ||= {id: part.id, type: "function", function: {name: "", arguments: ""}};
        call.function.name += part.function.name || "";
        call.function.arguments += part.function.arguments || "";
      }
      const next = renderMessage(reply, current.messages.length - 1);
      box.replaceWith(next);
      box = next;
      $("messages").scrollTop = $("messages").scrollHeight;
    }
  } catch (error) {
    if (error.name === "AbortError") reply.stopped = true;
    else if (!(error instanceof Unauthorized)) reply.error = error.message;
  } finally {
    const seconds = ((performance.now() - (first || started)) / 1000);
    const tokens = usage ? usage.completion_tokens : null;
    reply.stats = [tokens !== null ? `${tokens} tokens` : null,
                   tokens ? `${(tokens / Math.max(seconds, 1e-3)).toFixed(1)} tok/s` : null,
                   first ? `first token ${((first - started) / 1000).toFixed(2)} s` : null,
                   reply.stopped ? "stopped" : null, reply.error ? `error: ${reply.error}` : null]
      .filter(Boolean).join(" · ");
    if (!reply.reasoning) delete reply.reasoning;
    running = null;
    setRunning(false);
    save();
    renderMessages();
  }
}

function setRunning(on) {
  $("send").disabled = on;
  $("regenerate").disabled = on;
  $("stop").disabled = !on;
}

$("composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("prompt").value;
  if (!text.trim() || running) return;
  $("prompt").value = "";
  current.messages.push({role: "user", content: text});
  if (current.title === "New chat") current.title = text.slice(0, 40);
  save();
  renderMessages();
  await answer();
});

$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});

$("stop").addEventListener("click", () => running && running.abort());

$("regenerate").addEventListener("click", async () => {
  if (running) return;
  while (current.messages.length && current.messages[current.messages.length - 1].role !== "user") current.messages.pop();
  if (current.messages.length) { renderMessages(); await answer(); }
});

$("new-chat").addEventListener("click", () => { if (!running) { current = newConversation(); save(); renderMessages(); } });

$("export").addEventListener("click", () => {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(new Blob([JSON.stringify(conversations, null, 2)], {type: "application/json"}));
  link.download = "modelyard-conversations.json";
  link.click();
});

$("import").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  const imported = JSON.parse(await file.text());
  const valid = (Array.isArray(imported) ? imported : []).filter((c) => c && Array.isArray(c.messages))
    .map((c) => ({id: crypto.randomUUID(), title: String(c.title || "Imported"),
                  messages: c.messages.filter((m) => m && typeof m.content === "string" && ["user", "assistant"].includes(m.role))}));
  conversations = [...valid, ...conversations];
  current = conversations[0] || newConversation();
  save();
  renderMessages();
});

// --- pages ---------------------------------------------------------------------------------

for (const tab of document.querySelectorAll("[role=tab]")) {
  tab.addEventListener("click", () => showPage(tab.dataset.page));
}

function showPage(name) {
  for (const tab of document.querySelectorAll("[role=tab]")) tab.setAttribute("aria-selected", String(tab.dataset.page === name));
  for (const page of document.querySelectorAll(".page")) page.hidden = page.id !== `page-${name}`;
  ({models: loadModels, gallery: loadGallery, status: loadStatus}[name] || (() => {}))();
}

async function loadModels() {
  const [{data}, running, ready] = await Promise.all([
    apiJSON("/v1/models"), apiJSON("/api/ps").catch(() => ({models: []})),
    api("/readyz").then((r) => r.json()).catch(() => ({}))]);
  const loaded = new Set(running.models.map((m) => m.name.replace(/:latest$/, "")));
  const failing = ready.models || {};
  const rows = await Promise.all(data.map(async (model) => {
    const plan = await apiJSON(`/v1/models/${encodeURIComponent(model.id)}/plan`).catch(() => null);
    const row = document.createElement("tr");
    const state = failing[model.id] ? `failing: ${failing[model.id].error}` : loaded.has(model.id) ? "loaded" : "idle";
    const cells = [model.id, plan ? plan.model.backend : "", plan ? plan.model.context_size ?? "" : "",
                   plan && plan.model.llama_cpp ? plan.model.llama_cpp.parallel ?? "auto" : "", state];
    row.innerHTML = cells.map((c) => `<td>${escapeHTML(String(c))}</td>`).join("") + "<td></td>";
    const actions = row.lastChild;
    const toggle = document.createElement("button");
    toggle.textContent = loaded.has(model.id) ? "Unload" : "Load";
    toggle.addEventListener("click", async () => {
      toggle.disabled = true;
      await api("/api/generate", {method: "POST", body: loaded.has(model.id) ? {model: model.id, keep_alive: 0} : {model: model.id}});
      loadModels();
    });
    const show = document.createElement("button");
    show.textContent = "Plan";
    show.addEventListener("click", () => {
      $("model-plan").hidden = false;
      $("model-plan").textContent = plan ? JSON.stringify(plan, null, 2) : "no plan";
    });
    actions.append(toggle, show);
    return row;
  }));
  $("model-rows").replaceChildren(...rows);
}

let galleryEntries = [];

async function loadGallery() {
  $("gallery-error").textContent = "";
  try {
    galleryEntries = await apiJSON("/models/available");
  } catch (error) {
    $("gallery-error").textContent = `The gallery is not available: ${error.message}`;
    galleryEntries = [];
  }
  renderGallery();
}

function renderGallery() {
  const query = $("gallery-search").value.toLowerCase();
  const shown = galleryEntries.filter((e) => !query || `${e.id} ${e.description || ""} ${(e.tags || []).join(" ")}`.toLowerCase().includes(query));
  $("gallery-list").replaceChildren(...shown.slice(0, 200).map((entry) => {
    const item = document.createElement("li");
    item.innerHTML = `<strong>${escapeHTML(entry.id)}</strong> <span>${escapeHTML(entry.description || "")}</span>`;
    const progress = document.createElement("progress");
    progress.max = 100;
    progress.value = 0;
    progress.hidden = true;
    const button = document.createElement("button");
    button.textContent = entry.installed ? "Remove" : "Install";
    button.addEventListener("click", () => (entry.installed ? remove(entry, button) : install(entry, button, progress)));
    item.append(button, progress);
    return item;
  }));
}

$("gallery-search").addEventListener("input", renderGallery);

async function install(entry, button, progress) {
  button.disabled = true;
  progress.hidden = false;
  try {
    const job = await apiJSON("/models/apply", {method: "POST", body: {id: entry.id}});
    for (;;) {
      const status = await apiJSON(`/models/jobs/${job.uuid}`);
      progress.value = status.progress || 0;
      progress.title = status.message || "";
      if (status.processed) {
        if (status.error) throw new Error(status.error);
        break;
      }
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    entry.installed = true;
    button.textContent = "Remove";
    refreshModelPicker();
  } catch (error) {
    $("gallery-error").textContent = `${entry.id}: ${error.message}`;
  } finally {
    button.disabled = false;
  }
}

async function remove(entry, button) {
  button.disabled = true;
  try {
    await apiJSON(`/models/delete/${encodeURIComponent(entry.name)}`, {method: "POST"});
    entry.installed = false;
    button.textContent = "Install";
    refreshModelPicker();
  } catch (error) {
    $("gallery-error").textContent = `${entry.id}: ${error.message}`;
  } finally {
    button.disabled = false;
  }
}

// --- status: /readyz and /metrics, polled while the page is shown --------------------------

const series = {inflight: [], tps: [], ttft: []};
let previous = null;
let statusTimer = null; // one poll at a time, however often the page is opened

function metric(text, name) {
  let total = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith(name) && /^[\w:]+(\{[^}]*\})? /.test(line)) total += Number(line.split(" ").pop());
  }
  return total;
}

function chart(id, values) {
  const canvas = $(id);
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, canvas.width, canvas.height);
  const top = Math.max(1e-9, ...values);
  context.beginPath();
  values.forEach((v, i) => {
    const x = (i / Math.max(1, values.length - 1)) * canvas.width;
    const y = canvas.height - (v / top) * (canvas.height - 4) - 2;
    i ? context.lineTo(x, y) : context.moveTo(x, y);
  });
  context.strokeStyle = "#2f6fde";
  context.stroke();
}

async function loadStatus() {
  clearTimeout(statusTimer);
  if ($("page-status").hidden) return;
  const [ready, text] = await Promise.all([api("/readyz").then((r) => r.json()), api("/metrics").then((r) => r.text())]);
  const now = performance.now() / 1000;
  const tokens = metric(text, "modelyard_completion_tokens_total");
  const ttftSum = metric(text, "modelyard_time_to_first_token_seconds_sum");
  const ttftCount = metric(text, "modelyard_time_to_first_token_seconds_count");
  const inflight = metric(text, "modelyard_requests_in_flight");
  const tps = previous ? Math.max(0, (tokens - previous.tokens) / (now - previous.now)) : 0;
  previous = {now, tokens};
  for (const [name, value] of [["inflight", inflight], ["tps", tps], ["ttft", ttftCount ? ttftSum / ttftCount : 0]]) {
    series[name].push(value);
    if (series[name].length > 60) series[name].shift();
    chart(`chart-${name}`, series[name]);
  }
  const values = {State: ready.status, "Requests in flight": inflight, "Tokens generated": tokens,
                  "Tokens per second": tps.toFixed(1), "Mean time to first token": ttftCount ? `${(ttftSum / ttftCount).toFixed(3)} s` : "–"};
  $("status-values").replaceChildren(...Object.entries(values).flatMap(([k, v]) => {
    const term = document.createElement("dt");
    term.textContent = k;
    const value = document.createElement("dd");
    value.textContent = String(v);
    return [term, value];
  }));
  statusTimer = setTimeout(loadStatus, 2000);
}

// --- start ---------------------------------------------------------------------------------

async function refreshModelPicker() {
  const {data} = await apiJSON("/v1/models");
  const picked = $("model").value;
  $("model").replaceChildren(...data.map((m) => new Option(m.id, m.id, false, m.id === picked)));
}

async function refreshReady() {
  const ready = await fetch("/readyz").then((r) => r.json()).catch(() => ({status: "unreachable"}));
  $("ready").textContent = ready.status;
  $("ready").className = `badge ${ready.status}`;
}

async function start() {
  save();
  renderMessages();
  refreshReady();
  try {
    await refreshModelPicker();
  } catch (error) {
    if (!(error instanceof Unauthorized)) $("ready").textContent = error.message;
  }
}

start();
