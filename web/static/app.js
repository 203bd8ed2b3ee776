// The multi-tenant UI: sign-in, agent sessions with their chat, and the
// admin dashboard. Routes live in the fragment (#/sessions,
// #/sessions/<id>, #/dashboard), so the server serves one page; the API is
// found relative to this page (everything before "/ui/"), so a path
// prefix in front of the server changes nothing.
import { h, request, createChat } from "./chat.js?v=__V__";

const base = (() => {
  const p = location.pathname;
  const i = p.lastIndexOf("/ui/");
  return i >= 0 ? p.slice(0, i + 1) : new URL("..", location.href).pathname;
})();
// url("v1/agents") is the API route under this server's base.
const url = path => new URL(base + path, location.origin);

const $ = id => document.getElementById(id);
const enc = encodeURIComponent;

let me = null; // who is signed in: {tenant_id, user_id, role}
let flags = {};
let view = null; // the current view: {name, close(), select?(id)}

const isAdmin = () => me && (me.role === "admin" || me.role === "platform_admin");
const flagOn = name => !flags[name] || flags[name].on !== false;

// api calls a /v1 route; a 401 means the login ended: back to sign-in.
async function api(method, path, body) {
  const opts = { method };
  if (body !== undefined) {
    opts.headers = { "Content-Type": "application/json" };
    opts.body = JSON.stringify(body);
  }
  try {
    return await request(url(path), opts);
  } catch (e) {
    if (e.status === 401) signedOut("Your session has ended. Sign in again.");
    throw e;
  }
}

function show(id) {
  for (const v of ["boot", "login-view", "blocked-view", "app"]) $(v).hidden = v !== id;
}

function closeView() {
  view?.close();
  view = null;
}

function signedOut(message) {
  if (!me && !$("login-view").hidden) return;
  me = null;
  closeView();
  $("main").replaceChildren();
  showLogin(message);
}

function showLogin(message) {
  show("login-view");
  $("login-note").textContent = message || "";
  $("login-error").textContent = "";
  $("login-key").focus();
}

async function start() {
  try {
    me = await request(url("v1/auth/session"));
  } catch (e) {
    showLogin(e.status === 401 ? "" : "Cannot tell whether you are signed in: " + e.message);
    return;
  }
  await enter();
}

// enter shows the application to the signed-in user, unless the web_ui
// flag is off for them.
async function enter() {
  flags = {};
  $("app-error").textContent = "";
  try {
    flags = (await request(url("v1/tenant/flags"))).flags || {};
  } catch (e) {
    if (e.status === 401) return showLogin("Your session has ended. Sign in again.");
    if (e.status !== 404) $("app-error").textContent = "Feature flags could not be read: " + e.message;
  }
  if (!flagOn("web_ui")) {
    show("blocked-view");
    $("blocked-message").textContent = "The web UI is turned off for your account (feature flag web_ui). Ask your administrator to turn it on; the HTTP API still works.";
    $("blocked-signout").focus();
    return;
  }
  show("app");
  const role = { platform_admin: "platform admin", admin: "admin", member: "member" }[me.role] || me.role;
  $("who").textContent = `${me.tenant_id} · ${role}`;
  $("nav-dashboard").hidden = !isAdmin();
  route();
}

async function signOut() {
  try {
    await request(url("v1/auth/logout"), { method: "POST" });
  } catch (e) {
    if (e.status !== 401) {
      $("app-error").textContent = "Signing out failed: " + e.message;
      return;
    }
  }
  history.replaceState(null, "", location.pathname + location.search);
  signedOut("You are signed out.");
}

function markCurrent(el, on) {
  if (on) el.setAttribute("aria-current", "page");
  else el.removeAttribute("aria-current");
}

function route() {
  if (!me || $("app").hidden) return;
  const hash = location.hash || "#/sessions";
  const m = hash.match(/^#\/sessions\/([^/]+)$/);
  const name = hash === "#/dashboard" ? "dashboard" : "sessions";
  markCurrent($("nav-sessions"), name === "sessions");
  markCurrent($("nav-dashboard"), name === "dashboard");
  if (view?.name === name && view.select) {
    view.select(m ? decodeURIComponent(m[1]) : null);
    return;
  }
  closeView();
  if (name === "dashboard") {
    // Loaded when first needed: members never download it.
    const v = { name, close() { this.closed = true; this.inner?.close(); } };
    view = v;
    $("main").replaceChildren(h("p", { class: "muted" }, "Loading the dashboard…"));
    import("./dashboard.js?v=__V__").then(
      m => { if (!v.closed) v.inner = m.createDashboard($("main"), { api, url, me }); },
      e => { $("main").replaceChildren(h("p", { class: "error", role: "alert" }, "The dashboard could not be loaded: " + e.message)); });
  } else {
    view = sessionsView();
    view.select(m ? decodeURIComponent(m[1]) : null);
  }
}

const stateLabel = s => ({ running: "running", stopped: "stopped", exited: "exited", lost: "lost" })[s] || s;
const when = t => (t ? new Date(t).toLocaleString() : "");

// sessionsView: the session list with a form to start one, and the chat
// of the selected session beside it (alone on a phone).
function sessionsView() {
  const main = $("main");
  const agentSel = h("select", { id: "new-agent" });
  const nameIn = h("input", { type: "text", id: "new-name", maxlength: "200", autocomplete: "off" });
  const formErr = h("p", { class: "error", role: "alert" });
  const startBtn = h("button", { type: "submit", class: "primary" }, "Start session");
  const form = h("form", { class: "new-session", "aria-labelledby": "new-session-title" },
    h("h2", { id: "new-session-title" }, "New session"),
    h("div", { class: "field" }, h("label", { for: "new-agent" }, "Agent"), agentSel),
    h("div", { class: "field" }, h("label", { for: "new-name" }, "Name (optional)"), nameIn),
    startBtn, formErr);
  const list = h("ul", { class: "session-items", id: "session-items" });
  const listErr = h("p", { class: "error", role: "alert" });
  const refreshBtn = h("button", { type: "button", onclick: () => loadSessions() }, "Refresh");
  const detail = h("section", { class: "session-detail", id: "session-detail", "aria-label": "Selected session" });
  const layout = h("div", { class: "sessions" },
    h("aside", { class: "session-side", "aria-label": "Sessions" }, form,
      h("div", { class: "list-head" }, h("h2", {}, isAdmin() ? "Sessions of your tenant" : "Your sessions"), refreshBtn),
      listErr, list),
    detail);
  main.replaceChildren(layout);

  let sessions = [];
  let selected = null;
  let chat = null;

  async function loadAgents() {
    try {
      const out = await api("GET", "v1/agents");
      const names = out.agents || [];
      agentSel.replaceChildren(...names.map(n => h("option", { value: n }, n)));
      if (!names.length) formErr.textContent = "This server offers no agents (its catalog is empty).";
      startBtn.disabled = !names.length;
    } catch (e) {
      formErr.textContent = "Agents could not be listed: " + e.message;
    }
  }

  async function loadSessions() {
    try {
      sessions = (await api("GET", "v1/sessions")).sessions || [];
      listErr.textContent = "";
    } catch (e) {
      listErr.textContent = "Sessions could not be listed: " + e.message;
      return;
    }
    sessions.sort((a, b) => (b.created_at || "").localeCompare(a.created_at || ""));
    list.replaceChildren(...sessions.map(s => h("li", {},
      h("a", { href: "#/sessions/" + enc(s.id), "aria-current": s.id === selected ? "page" : null, "data-id": s.id },
        h("span", { class: "item-name" }, s.name || s.id),
        h("span", { class: "item-meta" }, `${s.agent_type} · `, h("span", { class: "state state-" + s.state }, stateLabel(s.state)), ` · ${when(s.created_at)}`)))));
    if (!sessions.length) list.replaceChildren(h("li", { class: "muted" }, "No sessions yet: start one above."));
    if (selected) header(sessions.find(s => s.id === selected));
  }

  form.addEventListener("submit", async e => {
    e.preventDefault();
    formErr.textContent = "";
    startBtn.disabled = true;
    try {
      const body = { agent_type: agentSel.value };
      if (nameIn.value.trim()) body.name = nameIn.value.trim();
      const s = await api("POST", "v1/sessions", body);
      nameIn.value = "";
      sessions.unshift(s);
      location.hash = "#/sessions/" + enc(s.id);
      loadSessions();
    } catch (e) {
      formErr.textContent = "The session could not start: " + e.message;
    } finally {
      startBtn.disabled = false;
    }
  });

  const headerEl = h("div", { class: "session-head" });
  function header(s) {
    if (!s) return;
    const stop = h("button", { type: "button", class: "danger", id: "stop-session" }, "Stop session");
    stop.addEventListener("click", async () => {
      stop.disabled = true;
      try {
        await api("DELETE", "v1/sessions/" + enc(s.id));
        await loadSessions();
      } catch (e) {
        stop.disabled = false;
        $("app-error").textContent = "Stopping failed: " + e.message;
      }
    });
    headerEl.replaceChildren(
      h("a", { href: "#/sessions", class: "back" }, "← All sessions"),
      h("h2", { id: "session-title", tabindex: "-1" }, s.name || s.id),
      h("p", { class: "item-meta" }, `${s.agent_type} · `, h("span", { class: "state state-" + s.state, id: "session-state" }, stateLabel(s.state)), ` · started ${when(s.created_at)}`),
      h("div", { class: "session-actions" },
        s.state === "running" && stop,
        h("a", { class: "button", href: url(`v1/sessions/${enc(s.id)}/chat/`).pathname, target: "_blank", rel: "noopener" }, "Open in a new tab")));
  }

  async function select(id) {
    chat?.close();
    chat = null;
    selected = id;
    for (const a of list.querySelectorAll("a[data-id]")) markCurrent(a, a.dataset.id === id);
    layout.classList.toggle("has-selection", !!id);
    if (!id) {
      detail.replaceChildren(h("p", { class: "placeholder" }, "Select a session, or start a new one."));
      return;
    }
    let s = sessions.find(x => x.id === id);
    if (!s) {
      try {
        s = await api("GET", "v1/sessions/" + enc(id));
      } catch (e) {
        detail.replaceChildren(h("p", { class: "error", role: "alert" }, "This session cannot be opened: " + e.message));
        return;
      }
      if (selected !== id) return;
    }
    header(s);
    const box = h("div", { class: "chat-box" });
    detail.replaceChildren(headerEl, box);
    chat = createChat(box, {
      api: url(`v1/sessions/${enc(id)}/`),
      raw: flagOn("raw_input"),
      upload: flagOn("file_upload"),
      onUnauthorized: () => signedOut("Your session has ended. Sign in again."),
      onEnded: () => loadSessions(),
    });
    box.querySelector("textarea")?.focus();
  }

  loadAgents();
  loadSessions();
  return { name: "sessions", select, close: () => chat?.close() };
}

$("login-form").addEventListener("submit", async e => {
  e.preventDefault();
  const key = $("login-key").value.trim();
  $("login-error").textContent = "";
  if (!key) {
    $("login-error").textContent = "Enter your API key.";
    $("login-key").focus();
    return;
  }
  $("login-submit").disabled = true;
  try {
    const out = await request(url("v1/auth/login"), {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ api_key: key }),
    });
    me = { tenant_id: out.tenant_id, user_id: out.user_id, role: out.role };
    $("login-key").value = "";
    $("login-note").textContent = "";
    await enter();
    $("main").focus();
  } catch (err) {
    $("login-error").textContent = "Sign-in failed: " + err.message;
    $("login-key").focus();
  } finally {
    $("login-submit").disabled = false;
  }
});
$("signout").addEventListener("click", signOut);
$("blocked-signout").addEventListener("click", signOut);
$("skip").addEventListener("click", e => {
  e.preventDefault();
  const target = $("app").hidden ? document.querySelector("main:not([hidden])") : $("main");
  target?.setAttribute("tabindex", "-1");
  target?.focus();
});
window.addEventListener("hashchange", route);
start();
