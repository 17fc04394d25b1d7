// Verbatim's web page: search, call detail with its completeness ledger,
// and playback with a waveform. It calls the API with the session cookie
// the server set at sign-in; it never sees a token.
"use strict";

const $ = (sel) => document.querySelector(sel);
let cursor = "";

async function api(path) {
  const resp = await fetch(path, { credentials: "same-origin" });
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

async function search(append) {
  const form = new FormData($("#search"));
  const q = new URLSearchParams();
  for (const [k, v] of form) {
    if (!v) continue;
    q.set(k, k === "from" || k === "to" ? new Date(v + "Z").toISOString() : v);
  }
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

async function detail(id) {
  const c = await api("/v1/calls/" + encodeURIComponent(id));
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
  $("#metadata").replaceChildren(...(c.metadata || []).map((m) => text(document.createElement("li"), [m.source, m.agent_name, m.agent_id, m.skill_group, m.wrap_up_code, ...(m.comments || [])].filter(Boolean).join(" · "))));
  const player = $("#player");
  player.src = "";
  if (c.recording && !c.recording.failure) {
    const src = "/v1/calls/" + encodeURIComponent(c.call_id) + "/recording";
    player.src = src; // the browser seeks with Range requests
    waveform(src);
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

$("#search").addEventListener("submit", (ev) => {
  ev.preventDefault();
  search(false);
});
$("#more").addEventListener("click", () => search(true));

(async () => {
  try {
    const me = await api("/v1/me");
    $("#who").textContent = (me.name || me.email || me.subject) + " · " + me.tenant + " · " + me.roles.join(", ");
    show("app");
  } catch (e) {
    $("#who").textContent = "";
  }
})();
