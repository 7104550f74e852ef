// The Writ console's one script: local times, countdowns, the live inbox, and local-time
// filters. Everything it inserts comes from the gateway's own escaped HTML.
"use strict";

function localTimes(root) {
  for (const el of root.querySelectorAll("time[data-ms]")) {
    const d = new Date(Number(el.dataset.ms));
    el.title = el.getAttribute("datetime");
    el.textContent = d.toLocaleString();
  }
}

function formatLeft(ms) {
  if (ms <= 0) return "expired";
  const s = Math.floor(ms / 1000);
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
}

// Deadlines are the gateway's clock: count down from the gateway's "now" when rendered.
function startCountdowns(root) {
  const seen = Date.now();
  for (const el of root.querySelectorAll(".countdown[data-deadline]")) {
    el.dataset.left = String(Number(el.dataset.deadline) - Number(el.dataset.now));
    el.dataset.seen = String(seen);
  }
}

function tick() {
  for (const el of document.querySelectorAll(".countdown[data-left]")) {
    const left = Number(el.dataset.left) - (Date.now() - Number(el.dataset.seen));
    el.textContent = formatLeft(left);
    el.classList.toggle("urgent", left < 60000);
  }
}

// Replaces the inbox with the gateway's new rendering, keeping what the reviewer was typing
// and which sections they opened or closed.
function replaceInbox(inbox, html) {
  const notes = {};
  for (const t of inbox.querySelectorAll("textarea")) notes[t.id] = t.value;
  const focused = document.activeElement && document.activeElement.id;
  const closed = new Set();
  for (const d of inbox.querySelectorAll("details")) {
    if (!d.open) closed.add(d.closest("[data-escalation]").id + "/" + d.className);
  }
  const template = document.createElement("template");
  template.innerHTML = html;
  inbox.replaceChildren(template.content);
  for (const t of inbox.querySelectorAll("textarea")) {
    if (notes[t.id]) t.value = notes[t.id];
  }
  for (const d of inbox.querySelectorAll("details")) {
    if (closed.has(d.closest("[data-escalation]").id + "/" + d.className)) d.open = false;
  }
  if (focused) {
    const el = document.getElementById(focused);
    if (el) el.focus();
  }
  localTimes(inbox);
  startCountdowns(inbox);
  tick();
}

function liveInbox() {
  const inbox = document.querySelector("[data-stream]");
  if (!inbox || !window.EventSource) return;
  const events = new EventSource(inbox.dataset.stream);
  events.addEventListener("inbox", (e) => replaceInbox(inbox, e.data));
  events.addEventListener("signedout", () => {
    events.close();
    window.location.assign("/console/signin?expired=1");
  });
  events.addEventListener("error", () => {
    // A stream the gateway refused (the session ended) is not retried by the browser.
    if (events.readyState === EventSource.CLOSED) {
      window.location.assign("/console/signin?expired=1");
    }
  });
  inbox.dataset.live = "yes";
}

function pad(n) {
  return String(n).padStart(2, "0");
}

// Time filters: shown and entered in the browser's time zone, sent as ms since the epoch.
function localTimeFilters() {
  for (const input of document.querySelectorAll("input[data-local-time]")) {
    if (input.value) {
      const d = new Date(input.value + ":00Z");
      if (!isNaN(d)) {
        input.value = d.getFullYear() + "-" + pad(d.getMonth() + 1) + "-" + pad(d.getDate()) +
          "T" + pad(d.getHours()) + ":" + pad(d.getMinutes());
      }
    }
    input.form.addEventListener("submit", () => {
      if (!input.value) return;
      const hidden = document.createElement("input");
      hidden.type = "hidden";
      hidden.name = input.name;
      hidden.value = String(new Date(input.value).getTime());
      input.form.appendChild(hidden);
      input.disabled = true;
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  startCountdowns(document);
  tick();
  setInterval(tick, 1000);
  liveInbox();
  localTimeFilters();
});
