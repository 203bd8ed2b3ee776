// The dashboard of tenant and platform admins: health, live agent
// sessions, tenants with their users and API keys, circuit breakers, rate
// limits, cache hit ratios and usage. Each panel loads on its own and
// shows its own error (the server's problem+json detail), so one missing
// or refused route never breaks the others. Only GET /status and
// GET /metrics (exempt from rate limits) are polled often; the sessions
// list is polled slowly; the rest reloads on demand.
import { h, request } from "./chat.js?v=__V__";

const enc = encodeURIComponent;
const when = t => (t ? new Date(t).toLocaleString() : "");
const day = t => (t ? new Date(t).toLocaleDateString() : "");
const SVG = "http://www.w3.org/2000/svg";

function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const c of children.flat()) if (c != null) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

// parseMetrics reads the Prometheus text format into samples
// {name, labels, value}; comments and malformed lines are skipped.
export function parseMetrics(text) {
  const out = [];
  const line = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
  const label = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
  for (const l of text.split("\n")) {
    if (!l || l.startsWith("#")) continue;
    const m = line.exec(l);
    if (!m) continue;
    const labels = {};
    for (const lm of (m[2] || "").matchAll(label)) labels[lm[1]] = lm[2].replace(/\\n/g, "\n").replace(/\\(.)/g, "$1");
    const value = Number(m[3]);
    if (!Number.isNaN(value)) out.push({ name: m[1], labels, value });
  }
  return out;
}

// sumBy adds the values of series name, grouped by the first of keys
// present in their labels.
function sumBy(samples, name, keys, filter = () => true) {
  const out = {};
  for (const x of samples) {
    if (x.name !== name || !filter(x.labels)) continue;
    const k = keys.map(key => x.labels[key]).find(v => v !== undefined) ?? "";
    out[k] = (out[k] || 0) + x.value;
  }
  return out;
}

// sparkline draws values as a line, with its summary as the accessible name.
function sparkline(values, label) {
  const W = 240, H = 44, n = values.length;
  const max = Math.max(1, ...values);
  const pts = values.map((v, i) => `${n < 2 ? W : (i * W) / (n - 1)},${H - 2 - (v / max) * (H - 6)}`).join(" ");
  return s("svg", { viewBox: `0 0 ${W} ${H}`, class: "spark", role: "img", "aria-label": label },
    s("title", {}, label),
    s("line", { x1: 0, y1: H - 1, x2: W, y2: H - 1, class: "axis" }),
    n ? s("polyline", { points: pts, class: "line" }) : null);
}

// bars draws one bar per day; the accessible name gives the total.
function bars(days, values, label) {
  const W = 320, H = 110, pad = 18, n = days.length;
  const max = Math.max(1, ...values);
  const bw = (W - 4) / Math.max(1, n);
  const g = [];
  values.forEach((v, i) => {
    const bh = (v / max) * (H - pad - 14);
    g.push(s("rect", { x: 2 + i * bw + 1, y: H - pad - bh, width: Math.max(1, bw - 2), height: bh, class: "bar" },
      s("title", {}, `${days[i]}: ${v.toLocaleString()}`)));
  });
  const every = Math.ceil(n / 4);
  days.forEach((d, i) => {
    if ((n - 1 - i) % every === 0) g.push(s("text", { x: 2 + i * bw + bw / 2, y: H - 4, class: "tick", "text-anchor": "middle" }, d.slice(5)));
  });
  g.push(s("text", { x: 2, y: 10, class: "tick" }, `max ${max.toLocaleString()}`));
  return s("svg", { viewBox: `0 0 ${W} ${H}`, class: "bars", role: "img", "aria-label": label }, s("title", {}, label), g);
}

// ratioBar draws a hit ratio as a filled bar.
function ratioBar(ratio, label) {
  const W = 200, H = 14;
  return s("svg", { viewBox: `0 0 ${W} ${H}`, class: "ratio", role: "img", "aria-label": label },
    s("title", {}, label),
    s("rect", { x: 0, y: 0, width: W, height: H, class: "ratio-bg" }),
    s("rect", { x: 0, y: 0, width: W * ratio, height: H, class: "ratio-fg" }));
}

function table(caption, headers, rows, empty) {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h("div", { class: "table-wrap", role: "region", "aria-label": caption, tabindex: "0" },
    h("table", {},
      h("caption", { class: "visually-hidden" }, caption),
      h("thead", {}, h("tr", {}, headers.map(x => h("th", { scope: "col" }, x)))),
      h("tbody", {}, rows.map(r => h("tr", {}, r.map(c => h("td", {}, c)))))));
}

// panel is a dashboard section with a heading, a refresh button, an error
// line and a body that load() fills.
function panel(id, title, load, opts = {}) {
  const body = h("div", { class: "panel-body" }, h("p", { class: "muted" }, "Loading…"));
  const err = h("p", { class: "error", role: "alert" });
  const refresh = h("button", { type: "button", class: "small", "aria-label": "Refresh " + title.toLowerCase() }, "Refresh");
  const el = h("section", { class: "panel " + (opts.wide ? "wide" : ""), id, "aria-labelledby": id + "-title" },
    h("div", { class: "panel-head" }, h("h2", { id: id + "-title" }, title), refresh), err, body);
  const p = {
    el, body, err,
    async run() {
      try {
        await load(p);
        err.textContent = "";
      } catch (e) {
        if (e.status === 404 && opts.optional) {
          body.replaceChildren(h("p", { class: "muted not-available" }, "Not available on this server."));
          err.textContent = "";
          return;
        }
        err.textContent = e.message;
        if (body.textContent === "Loading…") body.replaceChildren();
      }
    },
  };
  refresh.addEventListener("click", () => p.run());
  return p;
}

export function createDashboard(main, ctx) {
  const { api, url, me } = ctx;
  const platform = me.role === "platform_admin";
  const timers = [];
  let closed = false;

  if (me.role !== "admin" && !platform) {
    // The UI does not offer this page to members; the API refuses them
    // anyway, and we say what it said.
    const msg = h("p", { class: "error", role: "alert", id: "dashboard-denied" }, "The dashboard is for administrators.");
    main.replaceChildren(h("section", { class: "panel denied" }, h("h1", {}, "Dashboard"), msg));
    api("GET", `v1/admin/tenants/${enc(me.tenant_id)}/users`).then(
      () => { msg.textContent = "The dashboard is for administrators; sign in again if your role changed."; },
      e => { msg.textContent = "The dashboard is for administrators. The server said: " + e.message; });
    return { close() {} };
  }

  let tenant = me.tenant_id; // whose users and keys are shown
  const history = []; // metric samples since the page opened

  // Health: GET /status (not under /v1, not rate limited).
  const health = panel("dash-health", "Health", async p => {
    let rep;
    try {
      rep = await request(url("status"));
    } catch (e) {
      if (e.status !== 503) throw e;
      rep = null;
    }
    if (!rep) throw new Error("the service reports itself down (HTTP 503)");
    const items = [h("div", { class: "stat" }, h("span", { class: "stat-label" }, "Service"), h("span", { class: "badge b-" + rep.status }, rep.status))];
    for (const [name, c] of Object.entries(rep.checks || {})) {
      const d = c.detail || {};
      const extra = [d.driver, d.protocol, d.addr, d.last_error].filter(Boolean).join(" · ");
      items.push(h("div", { class: "stat" }, h("span", { class: "stat-label" }, name[0].toUpperCase() + name.slice(1)),
        h("span", { class: "badge b-" + c.status, id: "health-" + name }, c.status), extra && h("span", { class: "stat-extra" }, extra)));
    }
    items.push(h("div", { class: "stat" }, h("span", { class: "stat-label" }, "Version"), h("span", {}, rep.version || "?"),
      h("span", { class: "stat-extra" }, `up ${Math.round((rep.uptime_seconds || 0) / 60)} min`)));
    p.body.replaceChildren(h("div", { class: "stats" }, items));
  });

  // Live agent sessions of the tenant.
  const sessions = panel("dash-sessions", "Agent sessions", async p => {
    const list = (await api("GET", "v1/sessions")).sessions || [];
    list.sort((a, b) => (b.last_activity_at || "").localeCompare(a.last_activity_at || ""));
    const running = list.filter(x => x.state === "running").length;
    const stop = x => {
      const b = h("button", { type: "button", class: "small danger" }, "Stop");
      b.addEventListener("click", async () => {
        b.disabled = true;
        try {
          await api("DELETE", "v1/sessions/" + enc(x.id));
        } catch (e) {
          p.err.textContent = "Stopping failed: " + e.message;
        }
        p.run();
      });
      return b;
    };
    p.body.replaceChildren(
      h("p", { class: "summary" }, `${running} running, ${list.length} in all (tenant ${me.tenant_id}).`),
      table("Agent sessions", ["Session", "Agent", "User", "State", "Last activity", ""], list.map(x => [
        h("a", { href: "#/sessions/" + enc(x.id) }, x.name || x.id),
        x.agent_type, x.user_id,
        h("span", { class: "state state-" + x.state }, x.state),
        when(x.last_activity_at),
        x.state === "running" ? stop(x) : "",
      ]), "No agent sessions."));
  }, { wide: true });

  // Tenants (platform admins).
  const tenants = platform && panel("dash-tenants", "Tenants", async p => {
    const list = (await api("GET", "v1/admin/tenants")).tenants || [];
    const nameIn = h("input", { type: "text", id: "tenant-name", required: true, maxlength: "200", autocomplete: "off" });
    const idIn = h("input", { type: "text", id: "tenant-id", maxlength: "64", pattern: "[a-z0-9][a-z0-9\\-]*", autocomplete: "off", "aria-describedby": "tenant-id-help" });
    const form = h("form", { class: "inline-form", "aria-label": "Create a tenant" },
      h("div", { class: "field" }, h("label", { for: "tenant-name" }, "Name"), nameIn),
      h("div", { class: "field" }, h("label", { for: "tenant-id" }, "ID (optional)"), idIn,
        h("span", { id: "tenant-id-help", class: "hint" }, "lower-case letters, digits, dashes")),
      h("button", { type: "submit", class: "primary" }, "Create tenant"));
    form.addEventListener("submit", async e => {
      e.preventDefault();
      const body = { name: nameIn.value.trim() };
      if (idIn.value.trim()) body.id = idIn.value.trim();
      try {
        const t = await api("POST", "v1/admin/tenants", body);
        tenant = t.id;
        await p.run();
        p.err.textContent = "";
        p.body.prepend(h("p", { class: "ok", role: "status" }, `Tenant ${t.name} (${t.id}) created.`));
        people.run();
      } catch (err) {
        p.err.textContent = "The tenant could not be created: " + err.message;
      }
    });
    p.body.replaceChildren(
      table("Tenants", ["Name", "ID", "Created", ""], list.map(t => [
        t.disabled ? `${t.name} (disabled)` : t.name, h("code", {}, t.id), day(t.created_at),
        h("button", { type: "button", class: "small", "aria-pressed": String(t.id === tenant), "aria-label": `Users and keys of ${t.name}`, onclick: () => { tenant = t.id; people.run(); p.run(); } }, "Manage"),
      ]), "No tenants."),
      form);
  });

  // Users and API keys of the selected tenant.
  const people = panel("dash-people", "Users and API keys", async p => {
    const [users, keys] = await Promise.all([
      api("GET", `v1/admin/tenants/${enc(tenant)}/users`).then(x => x.users || []),
      api("GET", `v1/admin/tenants/${enc(tenant)}/keys`).then(x => x.keys || []),
    ]);
    const names = Object.fromEntries(users.map(u => [u.id, u.name]));
    const isPlatformTenant = tenant === "platform";
    const roles = isPlatformTenant ? ["platform_admin"] : ["member", "admin"];

    const userName = h("input", { type: "text", id: "user-name", required: true, maxlength: "200", autocomplete: "off" });
    const userRole = h("select", { id: "user-role" }, roles.map(r => h("option", { value: r }, r)));
    const userForm = h("form", { class: "inline-form", "aria-label": "Create a user" },
      h("div", { class: "field" }, h("label", { for: "user-name" }, "User name"), userName),
      h("div", { class: "field" }, h("label", { for: "user-role" }, "Role"), userRole),
      h("button", { type: "submit", class: "primary" }, "Create user"));
    userForm.addEventListener("submit", async e => {
      e.preventDefault();
      try {
        await api("POST", `v1/admin/tenants/${enc(tenant)}/users`, { name: userName.value.trim(), role: userRole.value });
        await p.run();
      } catch (err) {
        p.err.textContent = "The user could not be created: " + err.message;
      }
    });

    const keyUser = h("select", { id: "key-user" }, users.map(u => h("option", { value: u.id }, `${u.name} (${u.role})`)));
    const keyName = h("input", { type: "text", id: "key-name", maxlength: "200", autocomplete: "off" });
    const secretBox = h("div", { id: "new-key", class: "secret", hidden: true, role: "status" });
    const keyForm = h("form", { class: "inline-form", "aria-label": "Create an API key" },
      h("div", { class: "field" }, h("label", { for: "key-user" }, "Key for"), keyUser),
      h("div", { class: "field" }, h("label", { for: "key-name" }, "Key name (optional)"), keyName),
      h("button", { type: "submit", class: "primary", disabled: !users.length }, "Create key"));
    keyForm.addEventListener("submit", async e => {
      e.preventDefault();
      try {
        const k = await api("POST", `v1/admin/tenants/${enc(tenant)}/users/${enc(keyUser.value)}/keys`, { name: keyName.value.trim() });
        await p.run();
        // Shown this once: the server keeps only its hash.
        const box = p.body.querySelector("#new-key");
        const code = h("code", { id: "new-key-secret" }, k.secret);
        const copy = h("button", { type: "button", class: "small" }, "Copy");
        copy.addEventListener("click", async () => {
          try {
            await navigator.clipboard.writeText(k.secret);
            copy.textContent = "Copied";
          } catch {
            const r = document.createRange();
            r.selectNodeContents(code);
            getSelection().removeAllRanges();
            getSelection().addRange(r);
            copy.textContent = "Selected: copy it";
          }
        });
        box.replaceChildren(
          h("p", {}, h("strong", {}, `New API key for ${names[k.user_id] || k.user_id}.`), " Copy it now: it is shown this once and cannot be recovered."),
          h("div", { class: "secret-row" }, code, copy,
            h("button", { type: "button", class: "small", onclick: () => { box.hidden = true; box.replaceChildren(); } }, "Done")));
        box.hidden = false;
        copy.focus();
      } catch (err) {
        p.err.textContent = "The key could not be created: " + err.message;
      }
    });

    const revoke = k => {
      const b = h("button", { type: "button", class: "small danger", "aria-label": `Revoke key ${k.prefix}` }, "Revoke");
      b.addEventListener("click", async () => {
        b.disabled = true;
        try {
          await api("DELETE", `v1/admin/tenants/${enc(tenant)}/keys/${enc(k.id)}`);
          await p.run();
        } catch (err) {
          b.disabled = false;
          p.err.textContent = "The key could not be revoked: " + err.message;
        }
      });
      return b;
    };

    p.el.querySelector("h2").textContent = `Users and API keys · ${tenant}`;
    p.body.replaceChildren(
      h("h3", {}, "Users"),
      table("Users", ["Name", "Role", "ID", "Created"], users.map(u => [u.name, u.role, h("code", {}, u.id), when(u.created_at)]), "No users yet."),
      userForm,
      h("h3", {}, "API keys"),
      secretBox,
      table("API keys", ["Key", "Name", "User", "Created", "Last used", ""], keys.map(k => [
        h("code", {}, k.prefix + "…"), k.name || "", names[k.user_id] || k.user_id, when(k.created_at), when(k.last_used_at) || "never",
        k.revoked_at ? `revoked ${when(k.revoked_at)}` : revoke(k),
      ]), "No API keys yet."),
      keyForm);
  }, { wide: true });

  // Circuit breakers (platform admins).
  const breakers = platform && panel("dash-breakers", "Circuit breakers", async p => {
    const out = await api("GET", "v1/admin/breakers");
    const list = out.breakers || [];
    const reset = b => {
      const btn = h("button", { type: "button", class: "small", "aria-label": `Reset breaker ${b.name}` }, "Reset");
      btn.addEventListener("click", async () => {
        btn.disabled = true;
        try {
          await api("POST", `v1/admin/breakers/${enc(b.name)}/reset`);
        } catch (e) {
          p.err.textContent = "Reset failed: " + e.message;
        }
        p.run();
      });
      return btn;
    };
    p.body.replaceChildren(
      out.enabled === false ? h("p", { class: "muted" }, "Circuit breakers are turned off on this server.") : "",
      table("Circuit breakers", ["Breaker", "State", "Failures", "Mode", "Opened", "Retry after", ""], list.map(b => [
        h("code", {}, b.name), h("span", { class: "badge b-" + b.state }, b.state), b.failures, b.mode, when(b.opened_at),
        b.retry_after_seconds ? `${b.retry_after_seconds} s` : "", b.state === "closed" ? "" : reset(b),
      ]), "No breaker has been used yet."));
  });

  // Rate limits, recent 429s and cache hit ratios, from GET /metrics.
  const traffic = panel("dash-traffic", "Rate limits and caches", async p => {
    let text;
    try {
      const res = await fetch(url("metrics"), { credentials: "same-origin" });
      if (res.status === 404) {
        const e = new Error("not available");
        e.status = 404;
        throw e;
      }
      if (!res.ok) throw new Error(`GET /metrics answered HTTP ${res.status}`);
      text = await res.text();
    } catch (e) {
      if (e.status === 404) throw e;
      throw new Error(e.message.startsWith("GET") ? e.message : "GET /metrics failed: " + e.message);
    }
    const samples = parseMetrics(text);
    const decisions = ["allowed", "denied", "error"].map(o => sumBy(samples, "agentapi_ratelimit_decisions_total", ["limit", "policy"], l => l.outcome === o));
    const limits = [...new Set(decisions.flatMap(Object.keys))].sort();
    const by429 = sumBy(samples, "agentapi_http_requests_total", ["route"], l => l.status === "429");
    const hits = sumBy(samples, "agentapi_cache_hits_total", ["cache"]);
    const misses = sumBy(samples, "agentapi_cache_misses_total", ["cache"]);
    const denied = Object.values(decisions[1]).reduce((a, b) => a + b, 0);
    history.push({ t: Date.now(), denied, by429 });
    while (history.length > 61) history.shift();

    const deltas = history.slice(1).map((x, i) => Math.max(0, x.denied - history[i].denied));
    const first = history[0];
    const recent = Object.entries(by429).map(([route, n]) => [route, n - (first.by429[route] || 0), n]).filter(r => r[2] > 0).sort((a, b) => b[1] - a[1] || b[2] - a[2]);
    const caches = [...new Set([...Object.keys(hits), ...Object.keys(misses)])].sort();

    p.body.replaceChildren(
      h("h3", {}, "Rate-limit decisions"),
      table("Rate-limit decisions by limit", ["Limit", "Allowed", "Denied (429)", "Errors"], limits.map(l => [l, decisions[0][l] || 0, decisions[1][l] || 0, decisions[2][l] || 0]), "No rate-limit decision yet (or rate limits are off)."),
      h("div", { class: "chart" }, sparkline(deltas, `Requests denied by rate limits per ${history.length > 1 ? "5 s" : "interval"}, since this page opened: ${deltas.reduce((a, b) => a + b, 0)} in all`),
        h("p", { class: "hint" }, `429s per 5 s since this page opened (${deltas.reduce((a, b) => a + b, 0)}; ${denied} since the server started).`)),
      h("h3", {}, "Recent 429s by route"),
      table("429 answers by route", ["Route", "Since this page opened", "Since start"], recent.map(r => [h("code", {}, r[0]), r[1], r[2]]), "No request has been refused with 429."),
      h("h3", {}, "Cache hit ratio"),
      caches.length ? h("ul", { class: "ratios" }, caches.map(c => {
        const hit = hits[c] || 0, miss = misses[c] || 0, total = hit + miss;
        const ratio = total ? hit / total : 0;
        const pct = total ? `${(ratio * 100).toFixed(1)} %` : "no lookups";
        return h("li", {}, h("span", { class: "ratio-name" }, c), ratioBar(ratio, `${c} cache: ${pct} hits`), h("span", {}, `${pct} (${hit} of ${total})`));
      })) : h("p", { class: "muted" }, "No cache has reported lookups."));
  }, { optional: true, wide: true });

  // Usage per day over the last two weeks.
  const usage = panel("dash-usage", "Usage, last 14 days", async p => {
    const to = new Date();
    const from = new Date(to.getTime() - 13 * 86400000);
    const iso = d => d.toISOString().slice(0, 10);
    const path = platform ? "v1/admin/usage" : "v1/usage";
    const data = await api("GET", `${path}?from=${iso(from)}&to=${iso(to)}`);
    const days = [];
    for (let d = new Date(from); iso(d) <= iso(to); d = new Date(d.getTime() + 86400000)) days.push(iso(d));
    const series = usageSeries(data);
    const names = Object.keys(series).filter(m => Object.values(series[m]).some(v => v > 0)).sort();
    p.body.replaceChildren(names.length
      ? h("div", { class: "charts" }, names.map(m => {
        const vals = days.map(d => series[m][d] || 0);
        const total = vals.reduce((a, b) => a + b, 0);
        return h("figure", {}, bars(days, vals, `${m.replace(/_/g, " ")} per day from ${days[0]} to ${days.at(-1)}: ${total.toLocaleString()} in all`),
          h("figcaption", {}, `${m.replace(/_/g, " ")}: ${total.toLocaleString()}`));
      }))
      : h("p", { class: "muted" }, "No usage recorded in this period."));
  }, { optional: true, wide: true });

  // The narrow panels first, so that they share the top row.
  const panels = [health, tenants, breakers, sessions, people, traffic, usage].filter(Boolean);
  main.replaceChildren(h("div", { class: "dashboard" },
    h("div", { class: "dash-head" }, h("h1", {}, "Dashboard"),
      h("p", { class: "muted" }, platform ? "Platform administration: every tenant." : `Administration of tenant ${me.tenant_id}.`)),
    h("div", { class: "panels" }, panels.map(p => p.el))));
  for (const p of panels) p.run();

  const every = (ms, f) => timers.push(setInterval(() => { if (!closed && !document.hidden) f(); }, ms));
  every(5000, () => { health.run(); traffic.run(); });
  every(15000, () => sessions.run());
  return {
    close() {
      closed = true;
      timers.forEach(clearInterval);
    },
  };
}

// usageSeries turns a usage answer into {metric: {day: count}}. It accepts
// rows ({day|date, metric, count|value}), rows with one field per metric,
// and maps of day to counts, wherever the list sits in the answer.
export function usageSeries(data) {
  const out = {};
  const add = (m, d, v) => {
    if (typeof v !== "number" || !d) return;
    out[m] ??= {};
    out[m][d] = (out[m][d] || 0) + v;
  };
  const skip = new Set(["tenant_id", "user_id", "tenant", "user", "day", "date", "metric", "count", "value", "id"]);
  const row = r => {
    if (!r || typeof r !== "object") return;
    const d = String(r.day || r.date || "").slice(0, 10);
    if (r.metric !== undefined) return add(r.metric, d, r.count ?? r.value);
    for (const [k, v] of Object.entries(r)) {
      if (skip.has(k)) continue;
      if (typeof v === "number") add(k, d, v);
      else if (v && typeof v === "object" && !Array.isArray(v)) for (const [k2, v2] of Object.entries(v)) add(k2, d, v2);
    }
  };
  const visit = (x, depth) => {
    if (depth > 3 || !x || typeof x !== "object") return;
    if (Array.isArray(x)) return x.forEach(row);
    for (const [k, v] of Object.entries(x)) {
      if (/^\d{4}-\d{2}-\d{2}$/.test(k) && v && typeof v === "object") row({ day: k, ...v });
      else if (typeof v === "object") visit(v, depth + 1);
    }
  };
  visit(data, 0);
  return out;
}
