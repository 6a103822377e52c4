/// `GET /`: a one-file chat page, as llama.cpp's server has. It streams answers from
/// `/v1/chat/completions` (the same API any client uses, with the API key the user types when
/// the server asks for one), keeps the conversation in the page, and shows each answer's
/// tokens per second from the stream's usage. No build step and nothing loaded from elsewhere:
/// the markup, style and script are this string.
enum ChatPage {
    static let html = #"""
<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Tessel</title>
<style>
  :root { color-scheme: light dark; --line: #8884; --accent: #2f6fde; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.45 system-ui, sans-serif; display: flex; flex-direction: column; height: 100vh; }
  header { display: flex; gap: 12px; align-items: center; padding: 8px 16px; border-bottom: 1px solid var(--line); flex-wrap: wrap; }
  header h1 { font-size: 16px; margin: 0 8px 0 0; }
  header label { font-size: 13px; display: flex; gap: 4px; align-items: center; }
  header input { width: 70px; }
  #model { font-family: ui-monospace, monospace; font-size: 13px; opacity: .8; }
  main { flex: 1; overflow-y: auto; padding: 16px; display: flex; flex-direction: column; gap: 12px; }
  .message { max-width: 780px; white-space: pre-wrap; word-wrap: break-word; padding: 8px 12px; border-radius: 10px; }
  .user { align-self: flex-end; background: var(--accent); color: #fff; }
  .assistant { align-self: flex-start; border: 1px solid var(--line); }
  .error { align-self: flex-start; border: 1px solid #d33; color: #d33; }
  footer { border-top: 1px solid var(--line); padding: 8px 16px; }
  form { display: flex; gap: 8px; }
  textarea { flex: 1; resize: none; font: inherit; padding: 8px; height: 64px; }
  button { font: inherit; padding: 0 14px; }
  #stats { font-size: 12px; opacity: .75; min-height: 1.4em; margin-top: 4px; }
</style>
</head>
<body>
<header>
  <h1>Tessel</h1><span id="model">…</span>
  <label>temperature <input id="temperature" type="number" min="0" max="2" step="0.1" value="0.7"></label>
  <label>max tokens <input id="max-tokens" type="number" min="1" step="1" value="512"></label>
  <label>API key <input id="api-key" type="password" placeholder="none" style="width: 120px"></label>
  <button id="new-chat" type="button">New chat</button>
</header>
<main id="messages" aria-live="polite"></main>
<footer>
  <form id="composer">
    <textarea id="input" placeholder="Message (Enter sends, Shift+Enter breaks the line)" autofocus></textarea>
    <button id="send" type="submit">Send</button>
    <button id="stop" type="button" disabled>Stop</button>
  </form>
  <div id="stats"></div>
</footer>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const conversation = [];
let modelName = null, controller = null;
$("api-key").value = localStorage.getItem("tessel-api-key") || "";
$("api-key").addEventListener("change", () => { localStorage.setItem("tessel-api-key", $("api-key").value); loadModel(); });

function headers() {
  const result = { "Content-Type": "application/json" };
  const key = $("api-key").value.trim();
  if (key) result["Authorization"] = "Bearer " + key;
  return result;
}

function add(role, text) {
  const element = document.createElement("div");
  element.className = "message " + role;
  element.textContent = text;
  $("messages").appendChild(element);
  element.scrollIntoView({ block: "end" });
  return element;
}

async function errorText(response) {
  try { return (await response.json()).error.message; } catch { return response.status + " " + response.statusText; }
}

async function loadModel() {
  const response = await fetch("/v1/models", { headers: headers() });
  if (!response.ok) { $("model").textContent = await errorText(response); return; }
  modelName = (await response.json()).data[0].id;
  $("model").textContent = modelName;
}

function busy(on) {
  $("send").disabled = on;
  $("stop").disabled = !on;
}

async function send(text) {
  conversation.push({ role: "user", content: text });
  add("user", text);
  const bubble = add("assistant", "");
  $("stats").textContent = "";
  busy(true);
  controller = new AbortController();
  const started = performance.now();
  let first = null, answer = "", usage = null, finish = null;
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), signal: controller.signal,
      body: JSON.stringify({
        model: modelName, messages: conversation, stream: true, stream_options: { include_usage: true },
        temperature: Number($("temperature").value), max_tokens: Number($("max-tokens").value),
      }),
    });
    if (!response.ok) throw new Error(await errorText(response));
    const reader = response.body.getReader(), decoder = new TextDecoder();
    let pending = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pending += decoder.decode(value, { stream: true });
      let end;
      while ((end = pending.indexOf("\n\n")) >= 0) {
        const event = pending.slice(0, end);
        pending = pending.slice(end + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message);
          if (chunk.usage) usage = chunk.usage;
          const choice = chunk.choices && chunk.choices[0];
          if (!choice) continue;
          if (choice.delta && choice.delta.content) {
            if (first === null) first = performance.now();
            answer += choice.delta.content;
            bubble.textContent = answer;
            bubble.scrollIntoView({ block: "end" });
          }
          if (choice.finish_reason) finish = choice.finish_reason;
        }
      }
    }
    conversation.push({ role: "assistant", content: answer });
    const tokens = usage ? usage.completion_tokens : 0;
    const seconds = first === null ? 0 : (performance.now() - first) / 1000;
    const rate = tokens > 1 && seconds > 0 ? ((tokens - 1) / seconds).toFixed(1) : "–";
    const waited = ((first ?? performance.now()) - started) / 1000;
    $("stats").textContent = `${tokens} tokens, ${rate} tok/s, first token after ${waited.toFixed(2)} s` +
      (finish ? `, finish: ${finish}` : "");
  } catch (error) {
    if (error.name === "AbortError") {
      conversation.push({ role: "assistant", content: answer });
      $("stats").textContent = "stopped";
    } else {
      conversation.pop();
      bubble.remove();
      add("error", String(error.message || error));
    }
  } finally {
    busy(false);
    controller = null;
  }
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("input").value.trim();
  if (!text || controller) return;
  $("input").value = "";
  send(text);
});
$("input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("composer").requestSubmit(); }
});
$("stop").addEventListener("click", () => controller && controller.abort());
$("new-chat").addEventListener("click", () => {
  if (controller) controller.abort();
  conversation.length = 0;
  $("messages").replaceChildren();
  $("stats").textContent = "";
});
loadModel();
</script>
</body>
</html>
"""#
}
