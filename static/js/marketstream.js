// Market data over the one socket of a tab: snapshots, updates, gaps and resyncs.
//
// Protocol: docs/architecture.md §6. Every channel keeps the state the server last described
// and the `seq` of the message that produced it. A snapshot replaces the state. An update of a
// chained channel (book, trades, orders) applies only when its `prev_seq` is the held `seq`;
// one at or below the held `seq` is stale and dropped; any other is a gap: the channel turns
// "resyncing", `onGap` is told, and the channel is subscribed again, which makes the server
// send a fresh snapshot. Updates that arrive while a channel waits for its snapshot are
// dropped (the snapshot covers them). Latest-wins channels (ticker, candles) drop what is
// older than what they hold; balances and positions are always snapshots.
//
//   const market = new MarketStream({ onGap: (ch, gap) => console.warn(ch, gap) });
//   market.start();
//   const book = market.subscribe("book.AAPL", { depth: 10, onChange: (book) => draw(book) });
//   book.levels(5); // {bids: [["100.25", "3"], ...] best first, asks: [...] best first}
//
// `onChange(state, changes)` runs at most once per animation frame per channel, however many
// messages arrived; `changes` gathers what those messages brought (see each state's
// `takeChanges`). Malformed or unknown messages are logged and ignored, never thrown.
// Prices and quantities stay strings: levels are ordered by `compareDecimal`, exactly.

import { StreamClient } from "./stream.js";

export const BOOK_DEPTHS = [1, 5, 10, 20, 50, 100];
const DEFAULT_DEPTH = 20;
const DEFAULT_TRADES = 50;
const DEFAULT_BARS = 500;
const DEFAULT_FILLS = 100;
// A resubscribe whose snapshot never came (a lost frame, a busy server) is sent again.
const RESYNC_RETRY_MS = 5000;
const FINAL_ORDER_STATUSES = new Set(["filled", "canceled", "rejected", "expired"]);
const DECIMAL = /^([+-]?)(\d*)(?:\.(\d*))?$/;

// ---------------------------------------------------------------------------------------------
// Decimal strings, compared without floats.

function parseDecimal(text) {
  if (typeof text !== "string" && typeof text !== "number") return null;
  const match = DECIMAL.exec(String(text).trim());
  if (!match || (match[2] === "" && !match[3])) return null;
  const integer = match[2].replace(/^0+/, "");
  const fraction = (match[3] || "").replace(/0+$/, "");
  const zero = integer === "" && fraction === "";
  return { negative: match[1] === "-" && !zero, integer, fraction };
}

export function isDecimal(text) {
  return parseDecimal(text) !== null;
}

export function isZeroDecimal(text) {
  const value = parseDecimal(text);
  return value !== null && value.integer === "" && value.fraction === "";
}

// -1, 0 or 1 as a is below, equal to or above b ("100.25" < "100.3" < "1000"); NaN when
// either is not a decimal string.
export function compareDecimal(a, b) {
  const x = parseDecimal(a);
  const y = parseDecimal(b);
  if (x === null || y === null) return Number.NaN;
  if (x.negative !== y.negative) return x.negative ? -1 : 1;
  const sign = x.negative ? -1 : 1;
  if (x.integer.length !== y.integer.length) {
    return x.integer.length < y.integer.length ? -sign : sign;
  }
  if (x.integer !== y.integer) return x.integer < y.integer ? -sign : sign;
  const width = Math.max(x.fraction.length, y.fraction.length);
  const fx = x.fraction.padEnd(width, "0");
  const fy = y.fraction.padEnd(width, "0");
  if (fx === fy) return 0;
  return fx < fy ? -sign : sign;
}

// ---------------------------------------------------------------------------------------------
// Channel states. `apply(message)` returns "applied", "stale", "gap", "waiting" (an update
// before the snapshot) or "invalid", and never changes anything unless it returns "applied".

class Malformed extends Error {}

function ensure(condition, what) {
  if (!condition) throw new Malformed(what);
}

function isSeq(value) {
  return Number.isSafeInteger(value) && value >= 0;
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

export class ChannelState {
  constructor(channel, options = {}) {
    this.channel = channel;
    this.kind = channel.split(".")[0];
    this.options = options;
    this.seq = null; // the seq of the message the held state came from
    this.status = "resyncing"; // "live" once a snapshot arrived; "resyncing" while awaited
    this.ts = null; // the last applied event's own time, epoch ms
    this.receivedAt = null; // when it arrived, epoch ms of this browser
    this.resyncs = 0; // times this channel was asked for a fresh snapshot
    this.gaps = 0;
    this.dropped = 0; // stale updates and updates while resyncing
    this.invalid = 0;
    this.changes = this.emptyChanges();
  }

  // Milliseconds since the last applied event happened (by its `ts`), or null before one.
  age(now = Date.now()) {
    return this.ts === null ? null : now - this.ts;
  }

  chained() {
    return false;
  }

  apply(message) {
    try {
      ensure(message.type === "snapshot" || message.type === "update", "type");
      ensure(isSeq(message.seq), "seq");
      // null: a snapshot of a channel with no event yet (a book nobody has traded in)
      ensure(message.ts == null || Number.isFinite(message.ts), "ts");
      ensure(isObject(message.data), "data");
      const verdict = this.check(message);
      if (verdict !== "ok") return verdict;
      // Parse everything first: a malformed message must not leave half of it applied.
      const commit = this.prepare(message);
      commit();
    } catch (error) {
      if (!(error instanceof Malformed)) throw error;
      this.invalid += 1;
      console.warn(`marketstream: ${this.channel}: malformed message ignored (${error.message})`);
      return "invalid";
    }
    this.seq = message.seq;
    if (Number.isFinite(message.ts)) this.ts = message.ts;
    this.receivedAt = Date.now();
    this.status = "live";
    return "applied";
  }

  check(message) {
    const snapshot = message.type === "snapshot";
    if (this.chained()) {
      if (snapshot) return "ok";
      if (this.status !== "live") return "waiting";
      if (message.seq <= this.seq) return "stale";
      ensure(isSeq(message.prev_seq), "prev_seq");
      return message.prev_seq === this.seq ? "ok" : "gap";
    }
    // Latest wins: a snapshot asked for replaces; otherwise only newer messages count.
    if (snapshot && this.status !== "live") return "ok";
    if (this.seq !== null && message.seq <= this.seq) return "stale";
    return "ok";
  }

  emptyChanges() {
    return {};
  }

  takeChanges() {
    const changes = this.changes;
    this.changes = this.emptyChanges();
    return changes;
  }
}

function parseLevels(levels) {
  ensure(Array.isArray(levels), "levels");
  return levels.map((level) => {
    ensure(Array.isArray(level) && level.length >= 2, "level");
    const [price, quantity] = level;
    ensure(typeof price === "string" && isDecimal(price), "price");
    ensure(typeof quantity === "string" && isDecimal(quantity), "quantity");
    return [price, quantity];
  });
}

export class BookState extends ChannelState {
  constructor(channel, options = {}) {
    super(channel, options);
    this.depth = options.depth ?? DEFAULT_DEPTH;
    this.bids = new Map(); // price string -> quantity string
    this.asks = new Map();
  }

  chained() {
    return true;
  }

  prepare(message) {
    const bids = parseLevels(message.data.bids ?? []);
    const asks = parseLevels(message.data.asks ?? []);
    const depth = Number.isSafeInteger(message.depth) ? message.depth : this.depth;
    return () => {
      if (message.type === "snapshot") {
        this.bids.clear();
        this.asks.clear();
      }
      for (const [side, levels] of [[this.bids, bids], [this.asks, asks]]) {
        for (const [price, quantity] of levels) {
          // Keyed by the price as sent: the server writes each price one way ("1.5", never
          // "1.50"), so the string is the level's identity.
          if (isZeroDecimal(quantity)) side.delete(price);
          else side.set(price, quantity);
        }
      }
      // Levels pushed out of the top `depth` by better ones are not always removed by an
      // update; what lies past the depth is not maintained, so it is not kept.
      this.depth = depth;
      this.trim(this.bids, -1);
      this.trim(this.asks, 1);
    };
  }

  trim(side, direction) {
    if (side.size <= this.depth) return;
    const keep = new Set(this.sorted(side, direction, this.depth).map(([price]) => price));
    for (const price of [...side.keys()]) if (!keep.has(price)) side.delete(price);
  }

  sorted(side, direction, count) {
    return [...side.entries()]
      .sort(([a], [b]) => direction * compareDecimal(a, b))
      .slice(0, count);
  }

  // The best `count` levels a side, best first: bids highest first, asks lowest first.
  levels(count = this.depth) {
    return { bids: this.sorted(this.bids, -1, count), asks: this.sorted(this.asks, 1, count) };
  }

  bestBid() {
    return this.sorted(this.bids, -1, 1)[0] ?? null;
  }

  bestAsk() {
    return this.sorted(this.asks, 1, 1)[0] ?? null;
  }
}

function parseTrades(trades) {
  ensure(Array.isArray(trades), "trades");
  for (const trade of trades) ensure(isObject(trade) && isSeq(trade.seq), "trade");
  return trades;
}

export class TradesState extends ChannelState {
  constructor(channel, options = {}) {
    super(channel, options);
    this.limit = options.limit ?? DEFAULT_TRADES;
    this.trades = []; // oldest first, at most `limit`
  }

  chained() {
    return true;
  }

  emptyChanges() {
    return { trades: [] }; // new trades since the last onChange, oldest first
  }

  prepare(message) {
    const trades = parseTrades(message.data.trades);
    return () => {
      if (message.type === "snapshot") this.trades = [];
      this.trades.push(...trades);
      if (this.trades.length > this.limit) this.trades.splice(0, this.trades.length - this.limit);
      if (message.type === "update") this.changes.trades.push(...trades);
    };
  }

  // The latest `count` trades, newest first.
  latest(count = this.limit) {
    return this.trades.slice(-count).reverse();
  }
}

export class TickerState extends ChannelState {
  constructor(channel, options = {}) {
    super(channel, options);
    this.ticker = null;
  }

  prepare(message) {
    return () => {
      this.ticker = message.data;
    };
  }
}

function compareOpenTime(a, b) {
  if (typeof a === "number" && typeof b === "number") return a - b;
  // ISO times of one format sort as text.
  return String(a) < String(b) ? -1 : String(a) > String(b) ? 1 : 0;
}

export class CandlesState extends ChannelState {
  constructor(channel, options = {}) {
    super(channel, options);
    this.interval = channel.split(".").slice(2).join(".");
    this.limit = options.limit ?? DEFAULT_BARS;
    this.bars = new Map(); // start -> bar
  }

  emptyChanges() {
    return { bars: [] };
  }

  check(message) {
    // Bars are independent, keyed by start: a snapshot (the forming bar) adds to the
    // history held rather than wiping it; within a bar the latest message wins.
    if (message.type === "snapshot") return "ok";
    return super.check(message);
  }

  prepare(message) {
    const bars = message.data.bars;
    ensure(Array.isArray(bars), "bars");
    for (const bar of bars) {
      const time = isObject(bar) ? typeof bar.start : null;
      ensure(time === "number" || time === "string", "bar");
    }
    return () => {
      for (const bar of bars) {
        const held = this.bars.get(bar.start);
        if (held && held.closed && !bar.closed) continue; // a closed bar is final
        this.bars.set(bar.start, bar);
        this.changes.bars.push(bar);
      }
      if (this.bars.size > this.limit) {
        const times = [...this.bars.keys()].sort(compareOpenTime);
        for (const time of times.slice(0, times.length - this.limit)) this.bars.delete(time);
      }
    };
  }

  // The bars held, oldest first.
  list() {
    return [...this.bars.values()].sort((a, b) => compareOpenTime(a.start, b.start));
  }
}

export class OrdersState extends ChannelState {
  constructor(channel, options = {}) {
    super(channel, options);
    this.fillLimit = options.fillLimit ?? DEFAULT_FILLS;
    this.open = new Map(); // order id -> order, open orders only
    this.fills = []; // the latest fills seen, oldest first
  }

  chained() {
    return true;
  }

  emptyChanges() {
    // changed: orders still open; closed: orders that left the open set (filled, canceled,
    // rejected, expired); fills: new fills. Oldest first.
    return { changed: [], closed: [], fills: [] };
  }

  prepare(message) {
    const orders = message.data.orders ?? [];
    const fills = message.data.fills ?? [];
    ensure(Array.isArray(orders) && Array.isArray(fills), "orders");
    for (const order of orders) {
      ensure(isObject(order) && order.id !== undefined, "order");
      ensure(typeof order.status === "string", "order status");
    }
    return () => {
      if (message.type === "snapshot") this.open.clear();
      for (const order of orders) {
        const closed = FINAL_ORDER_STATUSES.has(order.status);
        if (closed) this.open.delete(order.id);
        else this.open.set(order.id, order);
        if (message.type === "update") this.changes[closed ? "closed" : "changed"].push(order);
      }
      this.fills.push(...fills);
      if (this.fills.length > this.fillLimit) {
        this.fills.splice(0, this.fills.length - this.fillLimit);
      }
      this.changes.fills.push(...fills);
    };
  }

  openOrders() {
    return [...this.open.values()];
  }
}

class ListSnapshotState extends ChannelState {
  // Every message is a snapshot of the whole list: replace, latest wins.
  constructor(channel, options, field, key) {
    super(channel, options);
    this.field = field;
    this.key = key;
    this.rows = new Map();
  }

  check(message) {
    if (this.status !== "live") return "ok";
    return message.seq <= this.seq ? "stale" : "ok";
  }

  prepare(message) {
    const rows = message.data[this.field];
    ensure(Array.isArray(rows), this.field);
    for (const row of rows) ensure(isObject(row) && row[this.key] !== undefined, this.key);
    return () => {
      this.rows = new Map(rows.map((row) => [row[this.key], row]));
    };
  }

  list() {
    return [...this.rows.values()];
  }
}

export class BalancesState extends ListSnapshotState {
  constructor(channel, options = {}) {
    super(channel, options, "balances", "asset");
  }
}

export class PositionsState extends ListSnapshotState {
  constructor(channel, options = {}) {
    super(channel, options, "positions", "symbol");
  }
}

const KINDS = {
  book: { State: BookState, parts: 2 },
  trades: { State: TradesState, parts: 2 },
  ticker: { State: TickerState, parts: 2 },
  candles: { State: CandlesState, parts: 3 },
  orders: { State: OrdersState, parts: 1 },
  balances: { State: BalancesState, parts: 1 },
  positions: { State: PositionsState, parts: 1 },
};

function kindOf(channel) {
  if (typeof channel !== "string") return null;
  const parts = channel.split(".");
  const kind = KINDS[parts[0]];
  return kind && parts.length === kind.parts && parts.every(Boolean) ? kind : null;
}

// ---------------------------------------------------------------------------------------------

export class MarketStream {
  // `client` is a StreamClient of one's own, for tests; by default one is made from the
  // options (`path`, `onState`, `onStatus`, `staleAfterMs`) and wired to this stream.
  constructor({
    path,
    onState,
    onStatus,
    onRtt,
    onGap,
    onError,
    onFrame,
    staleAfterMs,
    client,
  } = {}) {
    this.onFrame = onFrame || (() => {});
    this.states = new Map(); // channel -> ChannelState
    this.callbacks = new Map(); // channel -> {onChange, onGap}
    this.onGap = onGap || (() => {});
    this.onError = onError || (() => {}); // the StreamClient logs errors already
    this.dirty = new Set();
    this.frameRequested = false;
    this.resyncTimers = new Map();
    this.client =
      client ||
      new StreamClient({
        path,
        staleAfterMs,
        onStatus,
        onRtt,
        onRaw: (message) => this.receive(message),
        onOpen: () => this.resyncAll(),
        onState: (state) => {
          // The socket is gone: what each channel holds may miss updates from now on.
          if (state === "reconnecting") this.markAllResyncing();
          if (onState) onState(state);
        },
      });
  }

  start() {
    this.client.start();
    return this;
  }

  // Subscribe to `channel`; returns its state object (also `channel(name)`).
  // Options: `depth` (book: 1, 5, 10, 20, 50 or 100), `limit` (trades, candles: how many to
  // keep), `onChange(state, changes)` once per frame at most, `onGap(channel, gap)`.
  subscribe(channel, { depth, limit, onChange, onGap } = {}) {
    const kind = kindOf(channel);
    if (!kind) throw new TypeError(`marketstream: unknown channel ${channel}`);
    if (depth !== undefined && !BOOK_DEPTHS.includes(depth)) {
      throw new RangeError(`marketstream: depth must be one of ${BOOK_DEPTHS.join(", ")}`);
    }
    const options = { depth, limit };
    const state = new kind.State(channel, options);
    state.resyncs = 1;
    this.states.set(channel, state);
    this.callbacks.set(channel, { onChange, onGap });
    const extra = kind.State === BookState ? { depth: state.depth } : {};
    this.client.subscribe([channel], extra);
    return state;
  }

  unsubscribe(channel) {
    if (!this.states.delete(channel)) return;
    this.callbacks.delete(channel);
    this.dirty.delete(channel);
    clearTimeout(this.resyncTimers.get(channel));
    this.resyncTimers.delete(channel);
    this.client.unsubscribe([channel]);
  }

  channel(name) {
    return this.states.get(name) ?? null;
  }

  // Every channel's status and age, for a status bar.
  health(now = Date.now()) {
    return [...this.states.values()].map((state) => ({
      channel: state.channel,
      status: state.status,
      seq: state.seq,
      age: state.age(now),
    }));
  }

  receive(frame) {
    if (Array.isArray(frame.batch)) {
      for (const message of frame.batch) {
        try {
          this.receiveMessage(message);
        } catch (error) {
          console.error("marketstream: message ignored", message, error);
        }
      }
    } else if (frame.op === "error") {
      this.onError(frame);
    }
  }

  receiveMessage(message) {
    if (!isObject(message) || typeof message.ch !== "string") {
      console.warn("marketstream: a message without a channel ignored", message);
      return;
    }
    const state = this.states.get(message.ch);
    if (!state) return; // unsubscribed meanwhile, or never ours
    const wasLive = state.status === "live";
    const verdict = state.apply(message);
    if (verdict === "applied") {
      if (message.type === "snapshot") {
        clearTimeout(this.resyncTimers.get(state.channel));
        this.resyncTimers.delete(state.channel);
      }
      this.markDirty(state.channel);
    } else if (verdict === "stale" || verdict === "waiting") {
      state.dropped += 1;
    } else if (verdict === "gap") {
      state.gaps += 1;
      const gap = { held: state.seq, prev_seq: message.prev_seq, seq: message.seq };
      console.info(`marketstream: ${state.channel}: gap after ${gap.held}, resync`, gap);
      this.resync(state.channel);
      this.notifyGap(state.channel, gap);
    }
    if (wasLive !== (state.status === "live")) this.markDirty(state.channel);
  }

  notifyGap(channel, gap) {
    const own = this.callbacks.get(channel)?.onGap;
    for (const callback of [own, this.onGap]) {
      if (!callback) continue;
      try {
        callback(channel, gap);
      } catch (error) {
        console.error("marketstream: onGap failed", error);
      }
    }
  }

  // Ask for a fresh snapshot of `channel`; until it comes, its updates are dropped.
  resync(channel) {
    const state = this.states.get(channel);
    if (!state) return;
    this.markResyncing(state);
    this.client.resubscribe([channel]);
    this.armResyncRetry(channel);
  }

  armResyncRetry(channel) {
    clearTimeout(this.resyncTimers.get(channel));
    this.resyncTimers.set(
      channel,
      setTimeout(() => {
        this.resyncTimers.delete(channel);
        const state = this.states.get(channel);
        if (state && state.status === "resyncing" && this.client.socketOpen()) {
          this.resync(channel);
        }
      }, RESYNC_RETRY_MS),
    );
  }

  markResyncing(state) {
    if (state.status === "resyncing") return;
    state.status = "resyncing";
    state.resyncs += 1;
    this.markDirty(state.channel);
  }

  markAllResyncing() {
    for (const state of this.states.values()) this.markResyncing(state);
  }

  resyncAll() {
    // A new socket has just subscribed to every channel again: each waits for its snapshot.
    this.markAllResyncing();
    for (const channel of this.states.keys()) this.armResyncRetry(channel);
  }

  markDirty(channel) {
    this.dirty.add(channel);
    if (this.frameRequested) return;
    this.frameRequested = true;
    requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.frameRequested = false;
    const started = performance.now();
    const channels = [...this.dirty];
    this.dirty.clear();
    for (const channel of channels) {
      const state = this.states.get(channel);
      const onChange = this.callbacks.get(channel)?.onChange;
      if (!state) continue;
      const changes = state.takeChanges();
      if (!onChange) continue;
      try {
        onChange(state, changes);
      } catch (error) {
        console.error(`marketstream: ${channel}: onChange failed`, error);
      }
    }
    // The frame's work: applying what arrived and every panel's redraw (`onFrame(ms)`).
    if (channels.length) this.onFrame(performance.now() - started);
  }
}
