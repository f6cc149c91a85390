// The watchlist: one row per instrument, cells flash when their value changes.
import { showConnection, showPlatformStatus } from "./status.js";
import { StreamClient } from "./stream.js";

const table = document.getElementById("watchlist");
const staleAfterMs = Number(document.body.dataset.staleAfter || 5) * 1000;
const pollMs = Number(table.dataset.pollMs || 2000);
const rows = new Map(
  [...table.querySelectorAll("tbody tr[data-symbol]")].map((row) => [row.dataset.symbol, row]),
);
const lastUpdate = new Map();
const FIELDS = ["bid", "ask", "last", "change_pct"];

function flash(cell, direction) {
  cell.animate(
    [{ backgroundColor: direction > 0 ? "var(--flash-up)" : "var(--flash-down)" },
     { backgroundColor: "transparent" }],
    { duration: 700, easing: "ease-out" },
  );
}

function render(messages) {
  const now = performance.now();
  for (const { ch, data } of messages) {
    const row = rows.get(ch.slice("ticker.".length));
    if (!row) continue;
    lastUpdate.set(row, now);
    row.classList.remove("stale");
    for (const field of FIELDS) {
      if (data[field] == null) continue; // no reference tick yet: this venue's side only
      const cell = row.querySelector(`[data-field="${field}"]`);
      const text = field === "change_pct" ? `${data[field]}%` : data[field];
      if (cell.textContent === text) continue;
      const previous = Number.parseFloat(cell.textContent);
      cell.textContent = text;
      if (field === "change_pct") {
        cell.classList.toggle("up", Number.parseFloat(data[field]) > 0);
        cell.classList.toggle("down", Number.parseFloat(data[field]) < 0);
      } else if (!Number.isNaN(previous)) {
        flash(cell, Number.parseFloat(text) - previous);
      }
    }
  }
}

// Rows with no update for a while are marked stale instead of pretending to be live.
setInterval(() => {
  const now = performance.now();
  for (const [row, at] of lastUpdate) row.classList.toggle("stale", now - at > staleAfterMs);
}, 1000);

const client = new StreamClient({
  path: document.body.dataset.wsPath,
  onMessages: render,
  onState: showConnection,
  onStatus: (status) => showPlatformStatus(status, { pollMs }),
  staleAfterMs,
  fallback: table.dataset.snapshotUrl ? { url: table.dataset.snapshotUrl, intervalMs: pollMs } : null,
});
client.start();
client.subscribe([...rows.keys()].map((symbol) => `ticker.${symbol}`));
window.tredyeStream = client; // for the console and the browser tests
