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
    case "provision": return provision(m.progress);
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
  shown = [];
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
    S.provisions = {};
    $("provisions").replaceChildren();
    for (const [reader, steps] of Object.entries(st.provisions || {})) {
      for (const p of steps) provision(p);
    }
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
  // The warnings first and whole: what a person must act on is never below the fold
  // nor cut by the panel.
  for (const w of r.warnings || []) {
    const d = el("div", "warning");
    d.setAttribute("role", "alert");
    d.append(el("span", "icon", "⚠"), el("span", null, w));
    last.append(d);
  }
  if (r.qr && r.iccid) {
    const img = el("img", "qr last-qr");
    img.width = 128; img.height = 128;
    img.alt = "QR code";
    img.src = "/qr/" + encodeURIComponent(r.iccid) + "?n=" + (r.n || 0);
    last.append(img);
  }
  last.append(el("div", "last-title", "#" + (r.n || "?") + " · " + r.reader));
  const big = el("div", "big");
  if (r.iccid) big.append(iccidText(r.iccid));
  else big.textContent = iccid || "card not read";
  last.append(big);
  const facts = [];
  if (r.form_factor) facts.push(kindWord(r.form_factor, r.blank_esim));
  if (r.status) facts.push(r.status);
  if (r.operator) facts.push(r.operator);
  if (r.lock && r.lock.state !== "ready") facts.push(lockText(r.lock));
  if (r.pin_disable) facts.push("PIN: " + r.pin_disable);
  if (r.eid && r.iccid) facts.push("EID " + r.eid);
  if (r.ms !== undefined) facts.push(r.ms + " ms");
  last.append(el("div", "facts", facts.join(" · ")));
  if (r.error) last.append(el("div", "facts", r.error));
  const li = el("li", (r.warnings || []).length ? "warned" : "",
    "#" + (r.n || "?") + "  " + (iccid || "unreadable") +
    ((r.warnings || []).length ? "  ⚠ " + r.warnings.join("; ") : ""));
  const list = $("reads");
  list.prepend(li);
  while (list.children.length > 4) list.lastChild.remove();
}

// A station's provisioning (--provision): per reader, the card's code, the profile's
// preview, a progress bar and a loud end: "OK — take it out" or the error in words.
function provision(p) {
  S.provisions = S.provisions || {};
  const fresh = p.provision === "assigned" || (p.provision === "done" && p.result === "skipped");
  const card = fresh || !S.provisions[p.reader] ? { steps: [] } : S.provisions[p.reader];
  card.steps.push(p);
  S.provisions[p.reader] = card;
  let box = document.querySelector('[data-reader="' + CSS.escape(p.reader) + '"]');
  if (!box) {
    box = el("div", "provision");
    box.dataset.reader = p.reader;
    $("provisions").append(box);
  }
  box.replaceChildren();
  box.append(el("div", "last-title", p.reader + (p.eid ? " · EID " + p.eid : "")));
  let loading = null, end = null;
  for (const s of card.steps) {
    if (s.provision === "assigned") {
      box.append(el("div", "facts", "code of line " + s.line + (s.for_this_eid ? " (the one for this EID)" : " (the next unused)")));
    } else if (s.provision === "reconciled") {
      box.append(el("div", "facts", "interrupted download settled: " + (s.landed ? "the profile had landed" : "nothing had landed; downloading again")));
    } else if (s.provision === "preview") {
      const pr = s.profile;
      box.append(el("div", "facts", "profile " + pr.iccid + " · " + pr.name + " · " + pr.provider + " · " + pr.class));
    } else if (s.provision === "loading") {
      loading = s;
    } else if (s.provision === "done") {
      end = s;
    }
  }
  if (loading && !end) {
    const bar = el("progress", "bar");
    bar.max = loading.of || 1;
    bar.value = loading.done;
    bar.setAttribute("aria-label", "installing");
    box.append(bar, el("span", "facts", " " + loading.done + "/" + loading.of));
  }
  if (end) {
    const d = el("div", end.result === "ok" ? "provision-ok" : end.result === "skipped" ? "provision-skip" : "warning");
    d.setAttribute("role", "alert");
    d.append(el("span", null, end.words + (end.iccid && end.result === "ok" ? " · ICCID " + end.iccid : "")));
    box.append(d);
  }
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

// An ICCID (or EID) in groups of four, as printed on a SIM's card body: read at arm's
// length, never wrapped; copied, it is the bare number (the gaps are margins).
function iccidText(id) {
  // An EID (32 digits, a Blank eSIM's key) may break between its groups on a phone.
  const s = el("span", id.length > 20 ? "iccid eid" : "iccid");
  for (let i = 0; i < id.length; i += 4) s.append(el("span", null, id.slice(i, i + 4)));
  return s;
}

function kindWord(form, blank) {
  if (form === "esim") return blank ? "Blank eSIM" : "eSIM";
  return form === "physical" ? "physical SIM" : null;
}

const any = (pred) => { for (const r of S.rows.values()) if (pred(r.row, r.mb)) return true; return false; };
const modemRow = (row) => row.location && row.location.kind === "modem";
const has = (v) => v !== undefined && v !== null && v !== "" && !(Array.isArray(v) && !v.length);

// The table's columns, for the people who read it. A warehouse person needs the ICCID,
// whether it is there, its kind (physical, eSIM, Blank), its status and warnings and the
// batch; a technician what the modem sees. A column is drawn only when some row has
// something for it: platform columns once a record exists, the modem's once a SIM sits
// in a modem. So nothing is a wall of dashes, and nothing is off-screen at 1366 px.
const COLS = [
  { label: "ICCID", cell: iccidCell },
  { label: "Present", cell: (row) => el("span", row.present ? "p-yes" : "p-no",
      (row.present ? "● here" : "○ gone") + (row.modem_silent ? " (modem silent)" : "")) },
  { label: "Type", cell: (row) => {
      const w = kindWord(row.form_factor, row.blank_esim);
      return w ? el("span", "kind k-" + slug(w), w) : null;
    } },
  { label: "Status", cell: (row) => {
      const b = el("span", "badge s-" + slug(row.status));
      b.append(el("span", null, STATUS_ICON[row.status] || "·"), el("span", null, row.status || "no record"));
      return b;
    } },
  { label: "Where", cell: (row) => where(row.location) },
  { label: "In session", when: () => any(modemRow), cell: (row) => row.in_session },
  { label: "Network", when: () => any(modemRow), cell: (row) => {
      const m = modemRow(row) ? S.modems[row.location.port] : null;
      if (!m) return null;
      const parts = [];
      if (m.signal) parts.push(m.signal.dbm !== undefined ? m.signal.dbm + " dBm" : "signal unknown");
      if (m.registration) parts.push(m.registration.state + (m.registration.access_tech ? " · " + m.registration.access_tech : ""));
      return parts.join(", ");
    } },
  { label: "Operator", when: () => any((r) => r.operator || r.spn), cell: (row) => row.operator || row.spn },
  { label: "Plan", when: () => any((r) => r.platform), cell: (row, p) => p.plan },
  { label: "SIM type", when: () => any((r) => r.platform), cell: (row, p) => p.sim_type },
  { label: "Data left", when: () => any((r) => r.platform), cell: (row, p) => figure(p, row.estimate, "data_left_mb", " MB") },
  { label: "Days left", when: () => any((r) => r.platform), cell: (row, p) => figure(p, row.estimate, "days_left", " d") },
  { label: "This month", when: () => any((r, mb) => has(mb)), cell: (row, p, mb) => has(mb) ? mb + " MB" : null },
  { label: "Company", when: () => any((r) => has((r.platform || {}).company) || has(r.company)), cell: (row, p) => p.company || row.company },
  { label: "End user", when: () => any((r) => has((r.platform || {}).end_user)), cell: (row, p) => p.end_user },
  { label: "Labels", when: () => any((r) => has((r.platform || {}).labels) || has(r.labels)),
    cell: (row, p) => (has(p.labels) ? p.labels : row.labels || []).join(", ") },
  { label: "Note", when: () => any((r) => has((r.platform || {}).note) || has(r.note)), cell: (row, p) => p.note || row.note },
  { label: "Rules", when: () => any((r) => has((r.platform || {}).rules)),
    cell: (row, p) => has(p.rules) ? p.rules.length + (p.rules.length === 1 ? " rule" : " rules") : null },
];
let shown = [];

function iccidCell(row) {
  const p = row.platform || {};
  const id = el("div");
  id.append(iccidText(row.iccid));
  // What is wrong comes first under the number, in words.
  if (row.problem) id.append(el("div", "problem", "⚠ " + row.problem));
  if (row.pending) id.append(el("div", "cmd-state", "pending: " + row.pending));
  if (row.lock && row.lock.state !== "ready") id.append(el("div", "problem", "⚠ " + lockText(row.lock)));
  if (row.form_factor === "esim") {
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
  id.append(actions(row));
  return id;
}

function putRow(row, mb) {
  const old = S.rows.get(row.iccid);
  S.rows.set(row.iccid, { row, mb, tr: old ? old.tr : null, seen: old ? old.seen : S.rows.size });
  if (row.present && !window.simgateSeen[row.iccid]) window.simgateSeen[row.iccid] = Date.now();
  const cols = COLS.filter((c) => !c.when || c.when());
  const same = cols.length === shown.length && cols.every((c, i) => c === shown[i]);
  if (!same) { shown = cols; header(); for (const r of S.rows.values()) draw(r); }
  else draw(S.rows.get(row.iccid));
  order();
  $("empty").hidden = S.rows.size > 0;
}

function header() {
  const tr = el("tr");
  for (const c of shown) tr.append(el("th", null, c.label));
  $("head").replaceChildren(tr);
}

function draw(r) {
  const tr = renderRow(r.row, r.mb);
  if (r.tr) r.tr.replaceWith(tr); else $("rows").append(tr);
  r.tr = tr;
}

// Present SIMs first, each group in the order first seen; only rows out of place move.
function order() {
  const want = Array.from(S.rows.values())
    .sort((a, b) => (b.row.present - a.row.present) || (a.seen - b.seen));
  const body = $("rows");
  want.forEach((r, i) => { if (body.children[i] !== r.tr) body.insertBefore(r.tr, body.children[i] || null); });
}

function renderRow(row, mb) {
  const p = row.platform || {};
  const tr = el("tr", row.present ? "present" : "absent");
  tr.dataset.iccid = row.iccid;
  for (const c of shown) {
    const content = c.cell(row, p, mb);
    const td = el("td");
    td.dataset.label = c.label;
    if (content instanceof Node) td.append(content);
    else td.textContent = content === undefined || content === null || content === "" ? dash : String(content);
    tr.append(td);
  }
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

// Commands and swaps of this run, newest first: a swap as a list of its steps in words.
const STEP_WORD = {
  prepare: "Prepare", act: "Switch / replace", detect: "New SIM detected", verify: "Verify",
  commit: "Committed", rollback: "Roll back",
};
function activity() {
  const box = $("activity");
  box.replaceChildren();
  for (const s of Array.from(S.swaps.values()).reverse()) {
    const d = el("div", "swap");
    const last = s.steps[s.steps.length - 1];
    const end = last && (last.step === "commit" || last.step === "rollback") && last.ok !== undefined && last.ok !== null;
    const head = el("div", "swap-head");
    head.append(el("b", null, "Swap of "), iccidText(s.iccid),
      el("span", "muted", end ? (last.step === "commit" && last.ok ? " — done" : " — ended") : " — under way"));
    d.append(head);
    const ol = el("ol", "steps");
    // One line per step: its end replaces its start.
    const steps = new Map();
    for (const st of s.steps) steps.set(st.step, st);
    for (const st of steps.values()) {
      const li = el("li", st.ok === true ? "ok" : st.ok === false ? "bad" : "run");
      li.append(el("span", "mark", st.ok === true ? "✓" : st.ok === false ? "✕" : "…"),
        el("b", null, STEP_WORD[st.step] || st.step),
        el("span", null, st.detail ? " " + st.detail : ""),
        el("span", "muted", st.secs !== undefined && st.secs !== null ? " (" + st.secs.toFixed(1) + " s)" : ""));
      ol.append(li);
    }
    d.append(ol);
    box.append(d);
  }
  const cmds = Array.from(S.commands.values()).reverse().slice(0, 10);
  for (const c of cmds) {
    box.append(el("div", "cmd cmd-state " + c.status,
      c.action + " " + c.iccid + ": " + c.status + (c.reason ? " — " + c.reason : "")));
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
