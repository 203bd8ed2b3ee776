// The chat view of one agent, over the agent API (status, messages,
// message, upload, events, internal/screen). It is shared by the
// single-agent server's /chat page and the multi-tenant UI under /ui/:
// both hand it the base URL of an agent API, and every request it makes is
// relative to that base, so it works behind any path prefix.

let seq = 0;

// h builds an element: h("button", {type: "button", onclick: f}, "text").
// Attributes whose value is false, null or undefined are left out.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v == null) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// ApiError is a failed request: its message is the problem+json detail
// the server gave (or what we know of the failure), with the status.
export class ApiError extends Error {
  constructor(status, detail) {
    super(status ? `${detail} (HTTP ${status})` : detail);
    this.status = status;
    this.detail = detail;
  }
}

// problem reads a failed response's problem+json detail.
export async function problem(res) {
  let detail = "";
  try {
    const p = await res.json();
    detail = p.detail || p.title || p.message || "";
  } catch { /* not JSON */ }
  return new ApiError(res.status, detail || res.statusText || "the request failed");
}

// request fetches url and returns the parsed JSON body (null when there is
// none); a network failure or an error status throws an ApiError. A
// request refused by a rate limit (429, answered before any work, so safe
// to repeat) is tried again after the Retry-After the server asks for, when
// that is short: a page load makes a burst of requests.
export async function request(url, opts = {}) {
  let res;
  for (let attempt = 0; ; attempt++) {
    try {
      res = await fetch(url, { credentials: "same-origin", ...opts });
    } catch (e) {
      throw new ApiError(0, "the server cannot be reached: " + e.message);
    }
    const wait = Number(res.headers.get("Retry-After"));
    if (res.status !== 429 || attempt >= 3 || !(wait > 0 && wait <= 5)) break;
    await new Promise(r => setTimeout(r, wait * 1000));
  }
  if (!res.ok) throw await problem(res);
  if (res.status === 204) return null;
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

// Keys of the control strip: what they send to the terminal.
export const KEYS = [
  { label: "↑", name: "Up arrow", seq: "\x1b[A" },
  { label: "↓", name: "Down arrow", seq: "\x1b[B" },
  { label: "←", name: "Left arrow", seq: "\x1b[D" },
  { label: "→", name: "Right arrow", seq: "\x1b[C" },
  { label: "Esc", name: "Escape", seq: "\x1b" },
  { label: "Tab", name: "Tab", seq: "\t" },
  { label: "Ctrl-C", name: "Control C", seq: "\x03" },
  { label: "Enter", name: "Enter", seq: "\r" },
];

// keySequence maps a keydown in the terminal view to what the terminal
// expects, or "" for keys left to the browser (Tab moves focus, so the
// view is never a keyboard trap; the strip has a Tab key).
export function keySequence(e) {
  if (e.metaKey || e.altKey || e.isComposing) return "";
  if (e.ctrlKey) {
    const k = e.key.toLowerCase();
    return k.length === 1 && k >= "a" && k <= "z" ? String.fromCharCode(k.charCodeAt(0) - 96) : "";
  }
  switch (e.key) {
    case "Enter": return "\r";
    case "Backspace": return "\x7f";
    case "Escape": return "\x1b";
    case "ArrowUp": return "\x1b[A";
    case "ArrowDown": return "\x1b[B";
    case "ArrowRight": return "\x1b[C";
    case "ArrowLeft": return "\x1b[D";
    case "Home": return "\x1b[H";
    case "End": return "\x1b[F";
    case "Delete": return "\x1b[3~";
  }
  return e.key.length === 1 ? e.key : "";
}

// createChat renders the chat of the agent API at opts.api (a URL ending
// in "/") into root. Options:
//   raw, upload: false hides the raw-key strip / the file upload (feature
//     flags); both default to true
//   onUnauthorized(): called when the server answers 401
//   onEnded(detail): called once when the agent is no longer running
// It returns { close() }, which ends its event streams.
export function createChat(root, opts) {
  const api = new URL(opts.api, location.href);
  const id = "chat" + ++seq;
  const allowRaw = opts.raw !== false;
  const allowUpload = opts.upload !== false;
  const nodes = new Map();
  let status = "";
  let ended = false;
  let closed = false;
  let events = null;
  let screen = null;
  let retry = 0;
  let retryTimer = 0;

  const statusEl = h("span", { class: "chat-status", role: "status", "aria-live": "polite", "data-state": "connecting" }, "Connecting…");
  const chatBtn = h("button", { type: "button", class: "chat-view-btn", "aria-pressed": "true", "aria-controls": id + "-log" }, "Chat");
  const termBtn = h("button", { type: "button", class: "chat-view-btn", "aria-pressed": "false", "aria-controls": id + "-term" }, "Terminal");
  const log = h("div", { id: id + "-log", class: "chat-log", role: "log", "aria-label": "Conversation", tabindex: "0" });
  const empty = h("p", { class: "chat-empty" }, "No messages yet.");
  log.append(empty);
  const screenEl = h("pre", { class: "chat-screen", tabindex: "0", "aria-label": "Terminal screen. Type here to send keys to the agent; Tab leaves." });
  const term = h("div", { id: id + "-term", class: "chat-term", hidden: true },
    h("p", { class: "chat-hint", id: id + "-termhint" }, allowRaw ? "The agent's terminal. Focus it and type to send keys; use the buttons below for keys the browser keeps (Tab)." : "The agent's terminal (read-only: raw input is turned off)."),
    screenEl);
  const errorEl = h("p", { class: "chat-error", role: "alert" });
  const noteEl = h("p", { class: "chat-note", "aria-live": "polite" });
  const input = h("textarea", { id: id + "-input", rows: "2", placeholder: "Message the agent (Enter sends, Shift+Enter adds a line)" });
  const sendBtn = h("button", { type: "submit", class: "primary", disabled: true }, "Send");
  const fileInput = h("input", { type: "file", id: id + "-file", class: "visually-hidden" });
  const uploadLabel = h("label", { class: "button chat-upload", for: id + "-file" }, "Attach file");
  const keyButtons = KEYS.map(k => h("button", { type: "button", "aria-label": k.name, title: k.name, "data-key": k.name, onclick: () => sendRaw(k.seq, k.name) }, k.label));
  const keys = h("div", { class: "chat-keys", role: "toolbar", "aria-label": "Send keys to the terminal" }, keyButtons);
  const form = h("form", { class: "chat-form" },
    h("label", { for: id + "-input", class: "visually-hidden" }, "Message"),
    input,
    h("div", { class: "chat-actions" }, allowUpload && [fileInput, uploadLabel], sendBtn));

  root.replaceChildren(h("div", { class: "chat" },
    h("div", { class: "chat-bar" }, statusEl, h("div", { class: "chat-views", role: "group", "aria-label": "View" }, chatBtn, termBtn)),
    log, term, errorEl, allowRaw && keys, form, noteEl));

  function showError(msg) { errorEl.textContent = msg || ""; }
  function note(msg) { noteEl.textContent = msg; }

  function setStatus(s) {
    status = s;
    if (ended) return;
    const text = { stable: "Agent ready", running: "Agent working…" }[s] || s;
    statusEl.textContent = text;
    statusEl.dataset.state = s;
    sendBtn.disabled = s !== "stable";
  }
  function setConnection(text, state) {
    statusEl.textContent = text;
    statusEl.dataset.state = state;
  }

  function render(mid, role, text) {
    let el = nodes.get(mid);
    if (!el) {
      empty.remove();
      el = h("div", { class: "msg " + role, "data-id": mid },
        h("span", { class: "msg-role" }, role === "user" ? "You" : "Agent"),
        h("div", { class: "msg-text" }));
      nodes.set(mid, el);
      // Keep messages ordered by id whatever order they arrive in.
      const after = [...nodes.entries()].filter(([k]) => k > mid).sort((a, b) => a[0] - b[0])[0];
      if (after) log.insertBefore(el, after[1]);
      else log.append(el);
    }
    const stick = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
    el.lastChild.textContent = text;
    if (stick) log.scrollTop = log.scrollHeight;
  }

  function end(detail) {
    if (ended) return;
    ended = true;
    events?.close();
    screen?.close();
    setConnection("Session ended", "ended");
    sendBtn.disabled = true;
    input.disabled = true;
    fileInput.disabled = true;
    keyButtons.forEach(b => { b.disabled = true; });
    note(detail || "The agent is no longer running; this is its transcript.");
    opts.onEnded?.(detail);
  }

  async function fail(e) {
    if (e.status === 401) opts.onUnauthorized?.();
    showError(e.message);
  }

  // The transcript first (it is there even after the agent stopped), then
  // the live stream, which repeats it and goes on.
  async function load() {
    try {
      const body = await request(new URL("messages", api));
      for (const m of body.messages || []) render(m.id, m.role, m.content);
    } catch (e) {
      fail(e);
    }
    if (!closed) connect();
  }

  function connect() {
    if (closed || ended) return;
    events = new EventSource(new URL("events", api));
    events.onopen = () => {
      retry = 0;
      // A resumed stream sends only what changed: show the last status.
      if (status) setStatus(status);
    };
    events.addEventListener("message_update", e => { const m = JSON.parse(e.data); render(m.id, m.role, m.message); });
    events.addEventListener("status_change", e => setStatus(JSON.parse(e.data).status));
    events.addEventListener("agent_error", e => showError(JSON.parse(e.data).message));
    events.onerror = () => {
      if (closed || ended) return;
      if (events.readyState === EventSource.CONNECTING) {
        // The browser reconnects by itself and sends Last-Event-ID, so the
        // server sends exactly the events missed.
        setConnection("Reconnecting…", "reconnecting");
        return;
      }
      events.close();
      diagnose();
    };
  }

  // The server refused the stream: ask why, then end or retry. A new
  // stream starts with the whole conversation, so nothing is lost.
  async function diagnose() {
    try {
      await request(new URL("status", api));
    } catch (e) {
      if (e.status === 409 || e.status === 404) return end(e.detail);
      if (e.status === 401) return fail(e);
      setConnection("Disconnected: " + e.message, "reconnecting");
    }
    const wait = Math.min(15000, 1000 * 2 ** retry++);
    if (!statusEl.textContent.startsWith("Disconnected")) setConnection(`Reconnecting in ${Math.round(wait / 1000)} s…`, "reconnecting");
    retryTimer = setTimeout(connect, wait);
  }

  async function send(content, type) {
    return request(new URL("message", api), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ content, type }),
    });
  }

  async function sendRaw(keysSeq, name) {
    showError("");
    try {
      await send(keysSeq, "raw");
      note("Sent " + name + ".");
    } catch (e) {
      fail(e);
    }
  }

  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    const content = input.value.trim();
    if (!content || ended) return;
    if (status !== "stable") {
      note("The agent is working: send when it is ready (or interrupt it with Esc or Ctrl-C).");
      return;
    }
    showError("");
    sendBtn.disabled = true;
    try {
      await send(content, "user");
      input.value = "";
    } catch (e) {
      fail(e);
      sendBtn.disabled = status !== "stable";
    }
  });
  input.addEventListener("keydown", e => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      form.requestSubmit();
    }
  });

  fileInput.addEventListener("change", async () => {
    const file = fileInput.files[0];
    if (!file) return;
    showError("");
    note("Uploading " + file.name + "…");
    const data = new FormData();
    data.append("file", file);
    try {
      const out = await request(new URL("upload", api), { method: "POST", body: data });
      noteEl.replaceChildren("Uploaded " + file.name + " to ", h("code", {}, out.filePath), " ",
        h("button", { type: "button", class: "link", onclick: () => { input.value += (input.value && !input.value.endsWith(" ") ? " " : "") + out.filePath; input.focus(); } }, "Insert the path into the message"));
    } catch (e) {
      note("");
      fail(e);
    }
    fileInput.value = "";
  });

  // Terminal view: the raw screen, live; typing in it sends keys.
  function showTerminal(on) {
    chatBtn.setAttribute("aria-pressed", String(!on));
    termBtn.setAttribute("aria-pressed", String(on));
    log.hidden = on;
    term.hidden = !on;
    if (on && !screen && !ended) {
      screenEl.textContent = "Connecting to the terminal…";
      screen = new EventSource(new URL("internal/screen", api));
      screen.addEventListener("screen", e => { screenEl.textContent = JSON.parse(e.data).screen; });
      screen.onerror = () => {
        if (screen.readyState === EventSource.CLOSED) {
          screen = null;
          screenEl.textContent = "The terminal is not available.";
        }
      };
    } else if (!on && screen) {
      screen.close();
      screen = null;
    }
  }
  chatBtn.addEventListener("click", () => showTerminal(false));
  termBtn.addEventListener("click", () => showTerminal(true));

  // Keys typed into the terminal go out in small batches: one request per
  // burst of typing, not one per key.
  let pending = "";
  let flushTimer = 0;
  screenEl.addEventListener("keydown", e => {
    if (!allowRaw || ended) return;
    const s = keySequence(e);
    if (!s) return;
    e.preventDefault();
    pending += s;
    clearTimeout(flushTimer);
    flushTimer = setTimeout(async () => {
      const out = pending;
      pending = "";
      try { await send(out, "raw"); } catch (err) { fail(err); }
    }, 60);
  });

  load();
  return {
    close() {
      closed = true;
      clearTimeout(retryTimer);
      clearTimeout(flushTimer);
      events?.close();
      screen?.close();
    },
  };
}
