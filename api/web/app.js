// Verbatim's web page: search, call detail with its completeness ledger,
// playback with a waveform, comments and tags, and exports with their
// progress. It calls the API with the session cookie the server set at
// sign-in; it never sees a token. Changes carry the page's own header
// (X-Verbatim-Request), which pages of other sites cannot send.
"use strict";

const $ = (sel) => document.querySelector(sel);
let cursor = "";
let current = ""; // the call shown in detail

async function api(path, method, payload) {
  const init = { credentials: "same-origin" };
  if (method) {
    init.method = method;
    init.headers = { "Content-Type": "application/json", "X-Verbatim-Request": "1", "Idempotency-Key": crypto.randomUUID() };
    init.body = JSON.stringify(payload);
  }
  const resp = await fetch(path, init);
  if (resp.status === 401) {
    show("signin");
    throw new Error("signed out");
  }
  const body = await resp.json();
  if (!resp.ok) {
    throw new Error(body.error ? body.error.code + ": " + body.error.message : resp.statusText);
  }
  return body;
}

function show(id) {
  $("#signin").hidden = id !== "signin";
  $("#app").hidden = id !== "app";
  $("#audit").hidden = id !== "audit";
}

function text(el, s) {
  el.textContent = s;
  return el;
}

function cell(tr, s) {
  tr.appendChild(text(document.createElement("td"), s));
}

function label(rec, status) {
  if (!rec) return status;
  if (rec.failure) return "FAILED: " + rec.failure;
  if (!rec.completeness) return "unverified (stored before ledgers)";
  const c = rec.completeness;
  if (c.status === "complete") return "complete, " + c.audio_recorded + " audio packets";
  if (c.status === "partial") return "partial: " + c.audio_recorded + " of " + c.audio_expected + " audio packets recorded";
  return c.status;
}

function party(r, role) {
  const p = (r.parties || []).find((p) => p.id === role || p.role === "PARTICIPANT_ROLE_" + role.toUpperCase());
  return p ? p.uri || p.number : "";
}

// filters are the search form's fields that are set, as the API names
// them (times in UTC).
function filters() {
  const out = {};
  for (const [k, v] of new FormData($("#search"))) {
    if (v) out[k] = k === "from" || k === "to" ? new Date(v + "Z").toISOString() : v;
  }
  return out;
}

async function search(append) {
  const q = new URLSearchParams(filters());
  if (append && cursor) q.set("cursor", cursor);
  $("#status").textContent = "searching…";
  try {
    const page = await api("/v1/calls?" + q);
    const tbody = $("#results tbody");
    if (!append) tbody.replaceChildren();
    for (const r of page.calls) {
      const tr = document.createElement("tr");
      tr.dataset.callId = r.call_id;
      cell(tr, r.started_at.replace("T", " ").replace("Z", ""));
      cell(tr, r.duration_seconds.toFixed(1) + " s");
      cell(tr, party(r, "caller"));
      cell(tr, party(r, "callee"));
      cell(tr, label(r.recording, r.status));
      cell(tr, r.sip_call_id);
      tr.addEventListener("click", () => detail(r.call_id));
      tbody.appendChild(tr);
    }
    cursor = page.next_cursor;
    $("#more").hidden = !cursor;
    $("#status").textContent = tbody.children.length + " calls";
  } catch (e) {
    $("#status").textContent = e.message;
  }
}

function describe(m) {
  const scores = Object.entries(m.scores || {}).map(([k, v]) => k + " " + v);
  const tags = (m.tags || []).map((t) => "#" + t);
  return [m.source, m.agent_name, m.agent_id, m.skill_group, m.wrap_up_code, ...tags, ...scores, ...(m.comments || [])].filter(Boolean).join(" · ");
}

async function detail(id) {
  const c = await api("/v1/calls/" + encodeURIComponent(id));
  current = c.call_id;
  $("#change-status").textContent = "";
  $("#detail").hidden = false;
  $("#detail-id").textContent = c.call_id;
  $("#parties").replaceChildren(...(c.parties || []).map((p) => text(document.createElement("li"), p.id + ": " + (p.display_name ? p.display_name + " " : "") + (p.uri || p.number))));
  $("#label").textContent = label(c.recording, c.status);
  const tbody = $("#ledger tbody");
  tbody.replaceChildren();
  for (const l of (c.recording && c.recording.ledgers) || []) {
    const tr = document.createElement("tr");
    for (const v of [l.stream_id, l.captured, l.recorded, l.events, l.comfort_noise, l.not_decodable, l.lost_in_transit, l.never_captured, l.detail || l.capture_damaged || ""]) cell(tr, String(v));
    tbody.appendChild(tr);
  }
  $("#metadata").replaceChildren(...(c.metadata || []).map((m) => text(document.createElement("li"), describe(m))));
  const player = $("#player");
  player.src = "";
  $("#download").hidden = true;
  if (c.recording && !c.recording.failure) {
    const src = "/v1/calls/" + encodeURIComponent(c.call_id) + "/recording";
    player.src = src; // the browser seeks with Range requests
    $("#download").href = src + "?download=true";
    $("#download").hidden = false;
    waveform(src);
  }
}

// change posts a comment or tags on the call shown, then shows it again
// once the change is committed. The projection shows it in the call's
// metadata a moment later (search tables are built from the events).
async function change(what, body, form) {
  const st = $("#change-status");
  st.textContent = "saving…";
  try {
    await api("/v1/calls/" + encodeURIComponent(current) + "/" + what, "POST", body);
    st.textContent = what === "comments" ? "comment saved" : "tagged";
    form.reset();
    st.dataset.saved = what;
  } catch (e) {
    st.textContent = e.message;
  }
}

// exportCalls starts an export of the calls the form selects and follows
// its progress until its zip can be downloaded.
async function exportCalls() {
  const st = $("#export-status");
  st.replaceChildren();
  try {
    let job = await api("/v1/exports", "POST", filters());
    while (job.state === "running") {
      st.textContent = "exporting: " + job.recordings_written + " of " + job.calls_selected + " recordings";
      await new Promise((r) => setTimeout(r, 1000)); // the page's progress display, not a test's wait
      job = await api("/v1/exports/" + encodeURIComponent(job.export_id));
    }
    if (job.state !== "done") {
      st.textContent = "export " + job.state + ": " + (job.error || "");
      return;
    }
    const without = Object.keys(job.calls_without_recording || {}).length;
    st.textContent = "exported " + job.recordings_written + " recordings of " + job.calls_selected + " calls" + (without ? " (" + without + " without a recording) " : " ");
    const a = document.createElement("a");
    a.id = "export-download";
    a.href = "/v1/exports/" + encodeURIComponent(job.export_id) + "/download";
    a.textContent = "Download the zip (" + job.size_bytes + " bytes)";
    st.appendChild(a);
  } catch (e) {
    st.textContent = e.message;
  }
}

// waveform draws the recording's peaks (both channels summed) on the canvas.
async function waveform(src) {
  const canvas = $("#wave");
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, canvas.width, canvas.height);
  try {
    const buf = await (await fetch(src, { credentials: "same-origin" })).arrayBuffer();
    const audio = await new AudioContext().decodeAudioData(buf);
    const n = canvas.width, per = Math.max(1, Math.floor(audio.length / n)), mid = canvas.height / 2;
    g.fillStyle = "#2b6cb0";
    for (let x = 0; x < n; x++) {
      let peak = 0;
      for (let ch = 0; ch < audio.numberOfChannels; ch++) {
        const d = audio.getChannelData(ch);
        for (let i = x * per; i < (x + 1) * per && i < d.length; i++) peak = Math.max(peak, Math.abs(d[i]));
      }
      g.fillRect(x, mid - peak * mid, 1, Math.max(1, 2 * peak * mid));
    }
    canvas.dataset.drawn = "true";
  } catch (e) {
    canvas.dataset.drawn = "error: " + e.message;
  }
}

// The audit view (auditors): the log's entries by call, user, action,
// result and time, its exports, and its latest signed checkpoint.
let auditCursor = "";

function auditFilters() {
  const q = new URLSearchParams();
  for (const [k, v] of new FormData($("#audit-search"))) {
    if (v) q.set(k, k === "from" || k === "to" ? new Date(v + "Z").toISOString() : v);
  }
  return q;
}

async function auditSearch(append) {
  const q = auditFilters();
  for (const f of ["csv", "xlsx"]) {
    const e = new URLSearchParams(q);
    e.set("format", f);
    $("#audit-" + f).href = "/v1/audit?" + e;
  }
  q.set("sort", "-index");
  if (append && auditCursor) q.set("cursor", auditCursor);
  const st = $("#audit-status");
  st.textContent = "searching…";
  try {
    const page = await api("/v1/audit?" + q);
    const tbody = $("#audit-entries tbody");
    if (!append) tbody.replaceChildren();
    for (const e of page.entries) {
      const tr = document.createElement("tr");
      for (const v of [e.index, e.occurred_at.replace("T", " ").replace("Z", ""), e.action, e.actor_subject, e.actor_role,
        e.target_type ? e.target_type + " " + e.target_id : "", e.call_id || "", e.result, e.reason || ""]) cell(tr, String(v));
      tbody.appendChild(tr);
    }
    auditCursor = page.next_cursor;
    $("#audit-more").hidden = !auditCursor;
    st.textContent = tbody.children.length + " entries, newest first";
  } catch (e) {
    st.textContent = e.message;
  }
  try {
    const cp = await api("/v1/audit/checkpoint");
    $("#checkpoint").textContent = "Latest signed checkpoint: " + cp.size + " entries (" + cp.origin + "), verifier key " + cp.verifier_key;
  } catch (e) {
    $("#checkpoint").textContent = "No signed checkpoint yet: " + e.message;
  }
}

$("#audit-search").addEventListener("submit", (ev) => {
  ev.preventDefault();
  auditSearch(false);
});
$("#audit-more").addEventListener("click", () => auditSearch(true));

$("#search").addEventListener("submit", (ev) => {
  ev.preventDefault();
  search(false);
});
$("#more").addEventListener("click", () => search(true));
$("#export").addEventListener("click", () => exportCalls());
$("#comment").addEventListener("submit", (ev) => {
  ev.preventDefault();
  change("comments", { text: new FormData(ev.target).get("text") }, ev.target);
});
$("#tags").addEventListener("submit", (ev) => {
  ev.preventDefault();
  change("tags", { tags: new FormData(ev.target).get("tags").split(",").map((t) => t.trim()).filter(Boolean) }, ev.target);
});

(async () => {
  try {
    const me = await api("/v1/me");
    $("#who").textContent = (me.name || me.email || me.subject) + " · " + me.tenant + " · " + me.roles.join(", ");
    if (me.roles.includes("auditor") && !me.roles.some((r) => ["user", "supervisor", "administrator"].includes(r))) {
      show("audit");
      auditSearch(false);
    } else {
      show("app");
    }
  } catch (e) {
    $("#who").textContent = "";
  }
})();
