// simgate's station page: a snapshot on connect, then changes, over server-sent events
// (/events). Every text from the daemon is set as text, never as markup.
"use strict";

const $ = (id) => document.getElementById(id);
const S = {
  rows: new Map(),      // iccid -> {row, mb, tr}
  modems: {},           // port -> {signal, registration}
  commands: new Map(),  // id -> command status
  swaps: new Map(),     // id -> {id, iccid, steps}
  mode: "",
  canAct: false,
  token: sessionStorage.getItem("simgate-token") || "",
  unlocked: false,
};
// When each SIM's row was first drawn present (ms since the epoch): the bench reads it.
window.simgateSeen = {};

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
const dash = "—";
const slug = (s) => (s || "none").toLowerCase().replace(/[^a-z]+/g, "-");
const STATUS_ICON = {
  "Active": "●", "Suspended": "‖", "Invalid": "✕", "Pending": "◷", "Blank": "○",
  "Activation ready": "◔", "Not available": "–",
};

function live(on, text) {
  const l = $("live");
  l.className = "live " + (on ? "on" : "off");
  $("live-text").textContent = text || (on ? "live" : "reconnecting…");
}

function connect() {
  const es = new EventSource("/events");
  es.onopen = () => live(true);
  es.onerror = () => live(false);
  es.onmessage = (ev) => {
    let m;
    try { m = JSON.parse(ev.data); } catch (e) { return; }
    handle(m);
  };
}

function handle(m) {
  switch (m.type) {
    case "snapshot": return snapshot(m);
    case "row": return putRow(m.row, m.this_month_mb);
    case "read": return read(m.read, m.tally, true);
    case "note": return note(m.note);
    case "command": return command(m.command);
    case "swap_step": return swap(m.swap);
    case "modem":
      S.modems[m.port] = m.modem;
      for (const r of S.rows.values()) {
        if (r.row.location && r.row.location.port === m.port) putRow(r.row, r.mb);
      }
      return;
  }
}

function snapshot(m) {
  const rec = m.recent || {};
  S.mode = rec.mode || "";
  S.canAct = !!m.can_act;
  S.modems = rec.modems || {};
  $("mode").textContent = S.mode === "station" ? "station" : "gateway";
  $("agent").textContent = rec.agent ? "agent " + rec.agent : "";
  S.commands = new Map((rec.commands || []).map((c) => [c.id, c]));
  S.swaps = new Map((rec.swaps || []).map((s) => [s.id, s]));
  $("rows").replaceChildren();
  S.rows.clear();
  const rows = (m.rows || []).slice().sort((a, b) => a.row.observed_at - b.row.observed_at);
  for (const r of rows) putRow(r.row, r.this_month_mb);
  const st = rec.station;
  $("station").hidden = !st;
  if (st) {
    const a = $("batch-attrs");
    a.replaceChildren();
    const attr = (k, v) => { if (v) { a.append(el("span", null, k + ": "), el("b", null, v), el("br")); } };
    attr("Labels", (st.batch.labels || []).join(", "));
    attr("Company", st.batch.company);
    attr("Note", st.batch.note);
    attr("Readers", (st.readers || []).length ? st.readers.join(", ") : "all readers");
    $("csv").hidden = !st.csv;
    $("reads").replaceChildren();
    for (const r of st.reads || []) read(r, st.tally, false);
    counts(st.tally);
  }
  $("tech").hidden = S.mode !== "run";
  tokenState();
  if (S.token && S.canAct && !S.unlocked) unlock(S.token);
  activity();
}

function counts(t) {
  if (!t) return;
  $("count-reads").textContent = t.reads;
  $("count-unique").textContent = t.unique;
  $("count-warned").textContent = t.warned;
}

function note(n) {
  const last = $("last");
  let sub = last.querySelector(".note");
  if (!sub) { sub = el("div", "note mono"); last.append(sub); }
  sub.textContent = n.text;
}

// A station's read: the big panel, the list of latest reads, the count.
function read(r, tally, fresh) {
  counts(tally);
  const iccid = r.iccid || (r.eid ? "EID " + r.eid : null);
  const last = $("last");
  last.replaceChildren();
  if (r.qr && r.iccid) {
    const img = el("img", "qr last-qr");
    img.width = 128; img.height = 128;
    img.alt = "QR code";
    img.src = "/qr/" + encodeURIComponent(r.iccid) + "?n=" + (r.n || 0);
    last.append(img);
  }
  last.append(el("div", "last-title", "#" + (r.n || "?") + " · " + r.reader));
  last.append(el("div", "big iccid", iccid || "card not read"));
  const facts = [];
  if (r.form_factor) facts.push(r.form_factor === "esim" ? "eSIM" : "physical SIM");
  if (r.status) facts.push(r.status);
  if (r.operator) facts.push(r.operator);
  if (r.lock && r.lock.state !== "ready") facts.push(lockText(r.lock));
  if (r.pin_disable) facts.push("PIN: " + r.pin_disable);
  if (r.eid && r.iccid) facts.push("EID " + r.eid);
  if (r.ms !== undefined) facts.push(r.ms + " ms");
  last.append(el("div", "facts", facts.join(" · ")));
  if (r.error) last.append(el("div", "facts", r.error));
  for (const w of r.warnings || []) {
    const d = el("div", "warning");
    d.setAttribute("role", "alert");
    d.append(el("span", "icon", "⚠"), el("span", null, w));
    last.append(d);
  }
  const li = el("li", (r.warnings || []).length ? "warned" : "",
    "#" + (r.n || "?") + "  " + (iccid || "unreadable") +
    ((r.warnings || []).length ? "  ⚠ " + r.warnings.join("; ") : ""));
  const list = $("reads");
  list.prepend(li);
  while (list.children.length > 4) list.lastChild.remove();
}

function money(v, unit) { return v === undefined || v === null ? null : (Math.round(v * 100) / 100) + unit; }

function figure(platform, estimate, key, unit) {
  const p = platform ? platform[key] : undefined;
  const e = estimate ? estimate[key] : undefined;
  if (e !== undefined && e !== null) {
    const s = el("span", "est", "≈ " + money(key === "days_left" ? Math.floor(e) : e, unit));
    s.title = "simgate's local estimate" + (p !== undefined ? "; platform said " + money(p, unit) : "");
    return s;
  }
  return p !== undefined && p !== null ? money(p, unit) : dash;
}

function where(loc) {
  if (!loc) return dash;
  if (loc.kind === "reader") return "reader " + loc.reader;
  return "modem " + loc.port + (loc.slot ? " · slot " + loc.slot : "");
}

function putRow(row, mb) {
  const old = S.rows.get(row.iccid);
  const tr = renderRow(row, mb);
  if (old) old.tr.replaceWith(tr); else $("rows").append(tr);
  S.rows.set(row.iccid, { row, mb, tr });
  if (row.present && !window.simgateSeen[row.iccid]) window.simgateSeen[row.iccid] = Date.now();
  $("empty").hidden = S.rows.size > 0;
}

function renderRow(row, mb) {
  const p = row.platform || {};
  const tr = el("tr", row.present ? "present" : "absent");
  tr.dataset.iccid = row.iccid;
  const td = (label, content, cls) => {
    const c = el("td", cls);
    c.dataset.label = label;
    if (content instanceof Node) c.append(content);
    else c.textContent = content === undefined || content === null || content === "" ? dash : String(content);
    tr.append(c);
    return c;
  };
  // ICCID, eSIM mark and QR code, buttons.
  const id = el("div");
  id.append(el("span", "iccid", row.iccid));
  if (row.form_factor === "esim") {
    id.append(el("span", "esim", "eSIM"));
    const payload = p.activation_code || row.eid;
    if (payload) {
      const img = el("img", "qr");
      img.width = 112; img.height = 112;
      img.alt = "QR code: " + payload;
      img.title = payload;
      img.src = "/qr/" + encodeURIComponent(row.iccid) + "?v=" + encodeURIComponent(payload);
      img.addEventListener("click", () => bigQr(img.src, payload));
      id.append(img);
    }
  }
  if (row.problem) id.append(el("div", "cmd-state failed", row.problem));
  if (row.lock && row.lock.state !== "ready") id.append(el("div", "cmd-state failed", lockText(row.lock)));
  if (row.pending) id.append(el("div", "cmd-state", "pending: " + row.pending));
  id.append(actions(row));
  td("ICCID", id);
  const b = el("span", "badge s-" + slug(row.status));
  b.append(el("span", null, STATUS_ICON[row.status] || "·"), el("span", null, row.status || "no record"));
  td("Status", b);
  td("In session", row.in_session);
  td("Operator", row.operator || row.spn);
  td("Plan", p.plan);
  td("Company", p.company || row.company);
  td("End user", p.end_user);
  td("Data left", figure(p, row.estimate, "data_left_mb", " MB"));
  td("Days left", figure(p, row.estimate, "days_left", " d"));
  td("This month (MB)", mb === undefined || mb === null ? dash : mb);
  td("Note", p.note || row.note);
  const rules = p.rules || [];
  td("Rules", rules.length ? rules.length + (rules.length === 1 ? " rule" : " rules") : dash);
  td("Labels", (p.labels && p.labels.length ? p.labels : row.labels || []).join(", "));
  td("SIM type", p.sim_type);
  td("Where", where(row.location));
  const m = row.location && row.location.kind === "modem" ? S.modems[row.location.port] : null;
  const sig = m && m.signal ? (m.signal.dbm !== undefined ? m.signal.dbm + " dBm" : "unknown") : (m ? dash : "n/a");
  td("Signal", sig);
  const reg = m && m.registration ? m.registration.state + (m.registration.access_tech ? " · " + m.registration.access_tech : "") : (m ? dash : "n/a");
  td("Registration", reg);
  const pres = el("span", row.present ? "p-yes" : "p-no",
    (row.present ? "● yes" : "○ no") + (row.modem_silent ? " (modem silent)" : ""));
  td("Present", pres);
  return tr;
}

// A SIM's PIN lock for people (MQTT.md, "SIM state": lock).
function lockText(l) {
  const words = { pin_required: "PIN required", puk_required: "PUK required", blocked: "blocked (PUK exhausted)", ready: "ready" };
  let t = words[l.state] || l.state;
  const n = l.state === "pin_required" ? l.pin_attempts : l.state === "puk_required" ? l.puk_attempts : undefined;
  if (n !== undefined && n !== null) t += " · " + n + (n === 1 ? " attempt left" : " attempts left");
  return t;
}

function bigQr(src, payload) {
  $("qr-big").src = src;
  $("qr-text").textContent = payload;
  $("qr-dialog").showModal();
}

// Buttons for a technician with the token; the latest command's state for this SIM.
function actions(row) {
  const box = el("div", "acts");
  let latest = null;
  for (const c of S.commands.values()) if (c.iccid === row.iccid) latest = c;
  if (latest) {
    box.append(el("span", "cmd-state " + latest.status,
      latest.action + ": " + latest.status + (latest.reason ? " — " + latest.reason : "")));
  }
  if (!S.unlocked || !row.present) return box;
  const refill = el("button", null, "Request refill");
  refill.type = "button";
  refill.addEventListener("click", () => {
    const mb = prompt("Megabytes to ask for (empty: the plan's default)", "");
    if (mb === null) return;
    const params = mb.trim() ? { amount_mb: Number(mb) } : {};
    send({ action: "request_refill", iccid: row.iccid, params });
  });
  box.append(refill);
  if (row.location && row.location.kind === "modem") {
    const sw = el("button", null, "Start swap");
    sw.type = "button";
    sw.addEventListener("click", () => {
      const t = prompt("Slot to switch to (a number), or the ICCID of the SIM you will insert", "");
      if (t === null || !t.trim()) return;
      const v = t.trim();
      const params = /^\d{1,2}$/.test(v) ? { to_slot: Number(v) } : { expect_iccid: v };
      send({ action: "swap", iccid: row.iccid, params });
    });
    box.append(sw);
  }
  return box;
}

function newId() {
  const b = new Uint8Array(8);
  crypto.getRandomValues(b);
  return "web-" + Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
}

async function send(cmd) {
  cmd.id = newId();
  const local = { id: cmd.id, iccid: cmd.iccid, action: cmd.action, status: "sent" };
  S.commands.set(cmd.id, local);
  redraw(cmd.iccid);
  try {
    const r = await fetch("/api/command", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Authorization": "Bearer " + S.token },
      body: JSON.stringify(cmd),
    });
    if (r.status !== 202) {
      local.status = "failed";
      local.reason = (await r.text()).trim() + " (HTTP " + r.status + ")";
      if (r.status === 401) { S.unlocked = false; tokenState("bad"); }
    }
  } catch (e) {
    local.status = "failed";
    local.reason = "not sent: " + e;
  }
  // The daemon's own statuses arrive on the stream and replace this one.
  if (S.commands.get(cmd.id) === local) { redraw(cmd.iccid); activity(); }
}

function redraw(iccid) {
  const r = S.rows.get(iccid);
  if (r) putRow(r.row, r.mb);
}

function command(c) {
  S.commands.set(c.id, c);
  while (S.commands.size > 50) S.commands.delete(S.commands.keys().next().value);
  redraw(c.iccid);
  activity();
}

function swap(s) {
  S.swaps.set(s.id, s);
  activity();
}

// Commands and swaps of this run, newest first.
function activity() {
  const box = $("activity");
  box.replaceChildren();
  for (const s of Array.from(S.swaps.values()).reverse()) {
    const d = el("div", "swap");
    d.append(el("b", null, "swap " + s.id + " (" + s.iccid + "): "));
    d.append(el("span", null, s.steps.map((st) =>
      st.step + (st.ok === true ? " ✓" : st.ok === false ? " ✕" : " …") + (st.detail ? " (" + st.detail + ")" : "")
    ).join(" → ")));
    box.append(d);
  }
  const cmds = Array.from(S.commands.values()).reverse().slice(0, 10);
  for (const c of cmds) {
    box.append(el("div", "cmd cmd-state " + c.status,
      c.action + " " + c.iccid + ": " + c.status + (c.reason ? " — " + c.reason : "") + " [" + c.id + "]"));
  }
}

function tokenState(kind) {
  const s = $("token-state");
  if (!S.canAct) { s.textContent = "read-only (no token configured)"; s.className = "token-state"; return; }
  if (S.unlocked) { s.textContent = "✓ buttons unlocked"; s.className = "token-state ok"; return; }
  s.textContent = kind === "bad" ? "✕ wrong token" : "read-only";
  s.className = "token-state" + (kind === "bad" ? " bad" : "");
}

async function unlock(token) {
  const r = await fetch("/api/token", { headers: { "Authorization": "Bearer " + token } }).catch(() => null);
  S.unlocked = !!r && r.status === 204;
  if (S.unlocked) { S.token = token; sessionStorage.setItem("simgate-token", token); }
  tokenState(S.unlocked ? "" : "bad");
  for (const r2 of Array.from(S.rows.values())) putRow(r2.row, r2.mb);
}

$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  unlock($("token").value.trim());
});

connect();
