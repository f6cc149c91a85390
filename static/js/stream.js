// The one WebSocket of a tab: subscriptions, heartbeats, reconnects, frame-batched updates.
//
// Protocol (docs/architecture.md §6): the server sends {"batch": [{ch, seq, ts, data}, ...]} frames,
// {"op": "heartbeat"} every few seconds (we answer so the server knows we are alive),
// {"op": "status", ...} when a part of the platform is degraded, and {"op": "error", ...}.
//
// While a status says the live stream cannot reach this socket ("live": "down", or
// "redis": "down"), the client polls `fallback.url` (a JSON snapshot of {ch, ts, data} items,
// served without Redis) every `fallback.intervalMs` and feeds it through the same path as
// stream frames; its state is then "polling". A status without them stops the polling.
//
// `onMessages` gets at most one message per channel per animation frame (the latest): right
// for the watchlist, wrong for chained channels whose every update matters. Such users (the
// MarketStream of marketstream.js) pass `onRaw` instead, which sees every parsed message in
// the order it arrived, and `onOpen`, called once a new socket has sent its subscriptions.
// `subscribe(channels, {depth})` remembers the options per channel and sends them again on
// reconnect; `resubscribe(channels)` asks for fresh snapshots of some channels only.

const BACKOFF_BASE_MS = 500;
const PING_EVERY_MS = 5000;
const BACKOFF_CAP_MS = 15000;
// The server's close code when this user or address has too many sockets open.
const CLOSE_TOO_MANY_SOCKETS = 4429;
const BACKOFF_LIMITED_ATTEMPT = 5; // 500 ms * 2^5 > the cap: retry at the cap

export class StreamClient {
  constructor({
    path = "/ws/stream/",
    onMessages = null,
    onRaw = null,
    onOpen = null,
    onState,
    onStatus,
    onRtt = null,
    staleAfterMs = 5000,
    fallback = null,
  }) {
    this.url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`;
    this.onMessages = onMessages;
    this.onRaw = onRaw;
    this.onOpen = onOpen || (() => {});
    // The server round trip, by a ping every PING_EVERY_MS while open (`rttMs`, `onRtt`).
    this.onRtt = onRtt || (() => {});
    this.rttMs = null;
    this.pings = new Map(); // id -> when sent
    this.pingId = 0;
    this.lastPing = -Infinity; // the first ping goes at the first liveness check
    this.onState = onState || (() => {});
    this.onStatus = onStatus || (() => {});
    this.staleAfterMs = staleAfterMs;
    this.channels = new Set();
    this.channelOptions = new Map(); // channel -> extra subscribe fields ({depth}), if any
    this.pending = new Map(); // channel -> latest message, applied on the next frame
    this.frameRequested = false;
    this.attempt = 0;
    this.heartbeatMs = 5000;
    this.lastHeard = 0;
    this.state = null;
    this.socket = null;
    this.reconnectTimer = null;
    this.fallback = fallback; // {url, intervalMs}, or null for no polling
    this.polling = false;
    this.pollRound = 0; // a new round per start, so a stopped round's answer is dropped
    this.pollTimer = null;
    this.polled = new Map(); // channel -> its data as last polled, to pass on changes only
    this.watchdog = setInterval(() => this.checkLiveness(), 1000);
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") this.resync();
    });
  }

  start() {
    this.connect();
  }

  subscribe(channels, options = {}) {
    for (const ch of channels) {
      this.channels.add(ch);
      if (Object.keys(options).length) this.channelOptions.set(ch, options);
      else this.channelOptions.delete(ch);
    }
    this.send({ op: "subscribe", channels, ...options });
  }

  unsubscribe(channels) {
    for (const ch of channels) {
      this.channels.delete(ch);
      this.channelOptions.delete(ch);
    }
    this.send({ op: "unsubscribe", channels });
  }

  resubscribe(channels = [...this.channels]) {
    // The server answers a subscribe to a channel it already sends with a fresh snapshot.
    // Options such as depth apply to every channel of a message, so one message per options.
    const groups = new Map();
    for (const ch of channels) {
      if (!this.channels.has(ch)) continue;
      const options = this.channelOptions.get(ch) || {};
      const key = JSON.stringify(options);
      if (!groups.has(key)) groups.set(key, { options, channels: [] });
      groups.get(key).channels.push(ch);
    }
    for (const { options, channels: group } of groups.values()) {
      this.send({ op: "subscribe", channels: group, ...options });
    }
  }

  send(message) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.socket.send(JSON.stringify(message));
    }
  }

  setState(state) {
    if (state !== this.state) {
      this.state = state;
      this.onState(state);
    }
  }

  connect() {
    clearTimeout(this.reconnectTimer);
    this.setState(this.attempt === 0 ? "connecting" : "reconnecting");
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.onopen = () => {
      this.attempt = 0;
      this.lastHeard = performance.now();
      this.setState(this.connectedState());
      this.resubscribe();
      this.onOpen();
    };
    socket.onmessage = (event) => this.receive(event.data);
    socket.onclose = (event) => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (event.code === CLOSE_TOO_MANY_SOCKETS) {
        // Too many sockets open for this user or address: poll meanwhile, retry slowly.
        this.attempt = Math.max(this.attempt, BACKOFF_LIMITED_ATTEMPT);
        this.startPolling();
      }
      this.scheduleReconnect();
    };
    socket.onerror = () => socket.close();
  }

  scheduleReconnect() {
    // Exponential backoff with jitter, so a restarted server is not hit by every tab at once.
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** this.attempt);
    const delay = ceiling / 2 + Math.random() * (ceiling / 2);
    this.attempt += 1;
    this.setState("reconnecting");
    this.reconnectTimer = setTimeout(() => this.connect(), delay);
  }

  resync() {
    // After a hidden tab or a long pause: fresh snapshots by subscribing again.
    if (this.socket && this.socket.readyState === WebSocket.OPEN) {
      this.resubscribe();
    } else {
      this.attempt = 0;
      this.connect();
    }
  }

  ping() {
    const id = ++this.pingId;
    this.lastPing = performance.now();
    this.pings.set(id, this.lastPing);
    if (this.pings.size > 8) this.pings.delete(this.pings.keys().next().value);
    this.send({ op: "ping", id });
  }

  checkLiveness() {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return;
    if (performance.now() - this.lastPing > PING_EVERY_MS) this.ping();
    const silence = performance.now() - this.lastHeard;
    if (silence > this.heartbeatMs * 4) {
      this.socket.close(); // the server is gone without a close frame: start over
    } else if (silence > this.heartbeatMs * 2) {
      this.setState("stale");
    }
  }

  receive(text) {
    this.lastHeard = performance.now();
    if (this.state === "stale") this.setState(this.connectedState());
    let message;
    try {
      message = JSON.parse(text);
    } catch {
      console.warn("stream: unreadable frame ignored");
      return;
    }
    if (message === null || typeof message !== "object") {
      console.warn("stream: a frame that is not an object ignored");
      return;
    }
    if (this.onRaw) {
      try {
        this.onRaw(message);
      } catch (error) {
        console.error("stream: onRaw failed", error);
      }
    }
    if (Array.isArray(message.batch)) {
      if (!this.onMessages) return;
      for (const item of message.batch) this.pending.set(item.ch, item);
      this.requestFrame();
      return;
    }
    switch (message.op) {
      case "welcome":
        this.heartbeatMs = (message.heartbeat_s || 5) * 1000;
        break;
      case "heartbeat":
        this.send({ op: "heartbeat" });
        break;
      case "pong": {
        const sent = this.pings.get(message.id);
        if (sent !== undefined) {
          this.pings.delete(message.id);
          this.rttMs = performance.now() - sent;
          this.onRtt(this.rttMs);
        }
        break;
      }
      case "status":
        if (message.live === "down" || message.redis === "down") this.startPolling();
        else this.stopPolling();
        this.onStatus(message);
        break;
      case "error":
        console.warn(`stream: ${message.code}: ${message.detail}`);
        break;
      default:
        break;
    }
  }

  connectedState() {
    return this.polling ? "polling" : "live";
  }

  socketOpen() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  startPolling() {
    if (!this.fallback || this.polling) return;
    this.polling = true;
    this.pollRound += 1;
    if (this.socketOpen()) this.setState("polling");
    this.poll(this.pollRound);
  }

  stopPolling() {
    if (!this.polling) return;
    this.polling = false;
    clearTimeout(this.pollTimer);
    this.polled.clear();
    if (this.socketOpen()) this.setState("live");
  }

  async poll(round) {
    try {
      const response = await fetch(this.fallback.url, {
        headers: { Accept: "application/json" },
        cache: "no-store",
      });
      if (response.ok) {
        const { messages } = await response.json();
        if (round !== this.pollRound || !this.polling) return; // live again meanwhile
        for (const item of messages) {
          if (!this.channels.has(item.ch)) continue;
          const text = JSON.stringify(item.data);
          // Unchanged since the last poll: not an update, so the row may go stale.
          if (this.polled.get(item.ch) === text) continue;
          this.polled.set(item.ch, text);
          this.pending.set(item.ch, item);
        }
        if (this.pending.size) this.requestFrame();
      }
    } catch {
      // The server is away too: the socket's reconnecting state already says so.
    }
    if (round === this.pollRound && this.polling) {
      this.pollTimer = setTimeout(() => this.poll(round), this.fallback.intervalMs);
    }
  }

  requestFrame() {
    if (this.frameRequested) return;
    this.frameRequested = true;
    requestAnimationFrame(() => {
      this.frameRequested = false;
      const messages = [...this.pending.values()];
      this.pending.clear();
      if (messages.length && this.onMessages) this.onMessages(messages);
    });
  }
}
