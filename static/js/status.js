// The top bar's two indicators, for every page with a live stream: the connection's state
// (connecting, live, reconnecting, stale, polling) and the platform's degraded parts in words.

const indicator = document.getElementById("connection");
const platformStatus = document.getElementById("platform-status");

export function showConnection(state) {
  indicator.dataset.state = state;
  indicator.querySelector(".label").textContent = state;
}

// `pollMs`: how often the page polls saved prices while the live stream cannot reach it
// (null on a page that does not poll).
export function showPlatformStatus(status, { pollMs = null } = {}) {
  const problems = [];
  if (status.live === "down" || status.redis === "down") {
    // What the stream worker reports cannot be read then: say only how prices arrive now.
    problems.push(
      pollMs
        ? `Live stream unavailable — prices refresh every ${pollMs / 1000} s`
        : "Live stream unavailable — reconnecting",
    );
  } else if (status.stream === "down") {
    problems.push("price stream offline");
  }
  if (status.kafka === "down") problems.push("event bus unreachable");
  else if (status.feed === "stale") problems.push("prices stale");
  // Parts the platform reports degraded, in its own words ("Orders are queued: …").
  for (const part of status.degraded || []) problems.push(part.message);
  platformStatus.hidden = problems.length === 0;
  platformStatus.textContent = problems.join(" · ");
  document.body.classList.toggle("degraded", problems.length > 0);
}
