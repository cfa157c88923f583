// Weir UI: the little script the server-rendered pages use. No framework, no build step.
// - Live updates: <main data-live="URL"> opens a server-sent-events stream; each `state`
//   event carries the run's phase and every task's state, applied to the elements that
//   show them ([data-testid=run-phase], [data-task-state=NAME], [data-task-counts=NAME],
//   graph nodes g.node[data-task=NAME]).
// - Live lists: <main data-live-refresh="URL"> opens a stream whose `changed` events say the
//   list changed; the page reads itself again and replaces each [data-live-region] by id.
// - Logs: <pre data-log-url=URL data-follow=true> is read again every 2 s while its
//   attempt runs (live-following), and stops once it has finished.
"use strict";

const SHAPES = {
  Succeeded: "✓", Failed: "✗", UpstreamFailed: "✗", Running: "●", Retrying: "↻",
  Skipped: "–", Cancelled: "⊘", Queued: "…", Waiting: "⧖",
};

function setState(badge, state) {
  if (!badge || badge.dataset.state === state) return;
  badge.dataset.state = state;
  badge.className = "state state-" + state.toLowerCase();
  const shape = badge.querySelector(".shape");
  const word = badge.querySelector(".word");
  if (shape) shape.textContent = SHAPES[state] || "○";
  if (word) word.textContent = state;
}

function applyState(s) {
  setState(document.querySelector("[data-testid=run-phase]"), s.phase);
  const progress = document.querySelector("[data-testid=run-progress]");
  if (progress && s.progress) progress.textContent = s.progress;
  for (const [task, state] of Object.entries(s.tasks || {})) {
    for (const holder of document.querySelectorAll("[data-task-state]")) {
      if (holder.dataset.taskState === task) setState(holder.querySelector(".state"), state);
    }
    for (const node of document.querySelectorAll("g.node[data-task]")) {
      if (node.dataset.task === task && node.dataset.state !== state) {
        // graph.rs's markup: class "node s-<state>" (plus graph.js's match/hidden) and
        // the state in words in text.state.
        node.dataset.state = state;
        for (const c of [...node.classList]) if (c.startsWith("s-")) node.classList.remove(c);
        node.classList.add("s-" + state.toLowerCase().replace(/[^a-z]/g, ""));
        const word = node.querySelector("text.state");
        if (word) word.textContent = state;
      }
    }
  }
  for (const [task, text] of Object.entries(s.counts || {})) {
    for (const el of document.querySelectorAll("[data-task-counts]")) {
      if (el.dataset.taskCounts === task) el.textContent = text;
    }
  }
}

function live() {
  const main = document.getElementById("main");
  const url = main && main.dataset.live;
  if (!url || !window.EventSource) return;
  const source = new EventSource(url);
  source.addEventListener("state", (e) => {
    let s;
    try { s = JSON.parse(e.data); } catch (err) { return; /* a bad message changes nothing */ }
    applyState(s);
    addMissingTasks(s);
  });
}

// A run's page opened before the operator listed its tasks has no row to update: when the
// stream names a task the page does not show, the tasks table and timeline are read again.
let reading = false;
async function addMissingTasks(s) {
  const shown = new Set([...document.querySelectorAll("[data-task-state]")].map((h) => h.dataset.taskState));
  const missing = Object.keys(s.tasks || {}).some((t) => !shown.has(t));
  if (!missing || reading || !document.getElementById("tasks")) return;
  reading = true;
  try {
    await refresh(["tasks", "gantt"]);
  } finally {
    reading = false;
  }
}

async function refresh(ids) {
  let text;
  try {
    const res = await fetch(window.location.href, { headers: { Accept: "text/html" } });
    if (!res.ok) return;
    text = await res.text();
  } catch (err) {
    return;
  }
  const fresh = new DOMParser().parseFromString(text, "text/html");
  const regions = ids
    ? ids.map((id) => document.getElementById(id)).filter(Boolean)
    : document.querySelectorAll("[data-live-region]");
  for (const region of regions) {
    const next = region.id && fresh.getElementById(region.id);
    if (next && !region.contains(document.activeElement)) region.innerHTML = next.innerHTML;
  }
}

function liveRefresh() {
  const main = document.getElementById("main");
  const url = main && main.dataset.liveRefresh;
  if (!url || !window.EventSource) return;
  const source = new EventSource(url);
  source.addEventListener("changed", () => { refresh(null); });
}

async function followLog(pre) {
  const url = pre.dataset.logUrl;
  for (;;) {
    await new Promise((r) => setTimeout(r, 2000));
    let body;
    try {
      const res = await fetch(url, { headers: { Accept: "application/json" } });
      if (!res.ok) return;
      body = await res.json();
    } catch (err) {
      return;
    }
    const attempt = (body.attempts || [])[0];
    if (!attempt) continue;
    if (attempt.log !== undefined && pre.textContent !== attempt.log) {
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      pre.textContent = attempt.log;
      if (atEnd) pre.scrollTop = pre.scrollHeight;
    }
    const note = pre.parentElement.querySelector(".note");
    if (note) note.textContent = attempt.note || "";
    if (attempt.finished) return;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  live();
  liveRefresh();
  for (const pre of document.querySelectorAll("pre[data-follow=true]")) followLog(pre);
});
