// The trading screen: the book ladder, the tape, the markets list, and (signed in) the order
// ticket, open orders, positions and balances, all from one MarketStream (marketstream.js).
// Each panel redraws at most once per animation frame (the library batches its callbacks).

import { mountChart } from "../chart.js";
import { MarketStream } from "../marketstream.js";
import { showConnection, showPlatformStatus } from "../status.js";
import { format, multiply, parse } from "./decimal.js";
import { DepthChart } from "./depth.js";
import { History } from "./history.js";
import { OpenOrders } from "./orders.js";
import { Ticket } from "./ticket.js";

const root = document.getElementById("trade");
const symbol = root.dataset.symbol;
const signedIn = root.dataset.signedIn === "true";
const markets = new Map(
  JSON.parse(document.getElementById("markets-data").textContent).map((m) => [m.symbol, m]),
);
const market = markets.get(symbol);
const DEPTH = 20;

const rttLabel = document.getElementById("rtt");
// Frame render times: a beacon to the server every BEACON_EVERY_MS (a histogram on /metrics)
// and the last FRAMES_KEPT for the console and the render benchmark.
const BEACON_EVERY_MS = 15000;
const FRAMES_KEPT = 5000;
const frames = [];
let unsent = [];
function sendFrames() {
  if (!unsent.length) return;
  const body = JSON.stringify({ page: "trade", frames_ms: unsent.slice(-500) });
  unsent = [];
  navigator.sendBeacon("/metrics/frames", new Blob([body], { type: "application/json" }));
}
setInterval(sendFrames, BEACON_EVERY_MS);
addEventListener("pagehide", sendFrames);
window.tredyeFrames = frames;
const stream = new MarketStream({
  onFrame: (ms) => {
    frames.push(ms);
    unsent.push(Math.round(ms * 1000) / 1000);
    if (frames.length > FRAMES_KEPT) frames.splice(0, frames.length - FRAMES_KEPT);
  },
  path: document.body.dataset.wsPath,
  onState: showConnection,
  onStatus: (status) => showPlatformStatus(status),
  onRtt: (ms) => {
    rttLabel.textContent = `${Math.round(ms)} ms`;
  },
});

// -- theme -----------------------------------------------------------------------------------
const THEME_KEY = "tredye.theme";
function applyTheme(name) {
  document.documentElement.dataset.theme = name;
  localStorage.setItem(THEME_KEY, name);
  chart?.setTheme(name);
}
const initialTheme =
  localStorage.getItem(THEME_KEY) ||
  (matchMedia("(prefers-color-scheme: light)").matches ? "light" : "dark");
document.documentElement.dataset.theme = initialTheme;
document.getElementById("theme-toggle").addEventListener("click", () => {
  applyTheme(document.documentElement.dataset.theme === "light" ? "dark" : "light");
});

// -- chart -----------------------------------------------------------------------------------
const chart = mountChart(document.getElementById("chart"), {
  symbol,
  interval: "1m",
  market: stream,
  theme: initialTheme,
});
for (const button of document.querySelectorAll(".intervals [data-interval]")) {
  button.addEventListener("click", () => {
    chart.setInterval(button.dataset.interval);
    for (const other of document.querySelectorAll(".intervals [data-interval]")) {
      other.setAttribute("aria-pressed", String(other === button));
    }
  });
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function row(cells, attributes = {}) {
  const tr = document.createElement("tr");
  tr.append(...cells);
  for (const [name, value] of Object.entries(attributes)) tr.setAttribute(name, value);
  return tr;
}

// -- the ladder ----------------------------------------------------------------------------
const asksBody = document.getElementById("asks");
const bidsBody = document.getElementById("bids");
const spreadCell = document.getElementById("spread");
const depth = new DepthChart(document.getElementById("depth"));
window.tredyeDepth = depth;
let ownPrices = { buy: new Set(), sell: new Set() }; // the trader's resting orders here

// Rows are kept and rewritten in place: a frame changes text and a bar's width, it does not
// build the table again (the render benchmark's frame time is mostly DOM churn otherwise).
function setText(td, text) {
  if (td.textContent !== text) td.textContent = text;
}

function ladderRow(side) {
  const tr = row([cell("", "num price"), cell("", "num"), cell("", "num")], {
    "data-side": side,
    tabindex: "0",
  });
  return tr;
}

function drawSide(body, levels, side, maxTotal, reversed) {
  while (body.children.length < levels.length) body.append(ladderRow(side));
  while (body.children.length > levels.length) body.lastElementChild.remove();
  const mine = ownPrices[side === "bid" ? "buy" : "sell"];
  let total = 0;
  levels.forEach(([price, size], i) => {
    total += Number(size); // drawing only: the bar's width
    const tr = body.children[reversed ? levels.length - 1 - i : i];
    tr.dataset.price = price;
    const [priceCell, sizeCell, totalCell] = tr.children;
    setText(priceCell, price);
    setText(sizeCell, size);
    setText(totalCell, String(+total.toFixed(10)));
    tr.style.setProperty("--depth", `${Math.min(100, (total / maxTotal) * 100).toFixed(1)}%`);
    tr.classList.toggle("own", mine.has(price));
  });
}

function drawBook(book) {
  const { bids, asks } = book.levels(DEPTH);
  const sum = (levels) => levels.reduce((total, [, size]) => total + Number(size), 0);
  const maxTotal = Math.max(sum(bids), sum(asks), 1e-12);
  // Asks above the spread, best (lowest) nearest to it.
  drawSide(asksBody, asks, "ask", maxTotal, true);
  drawSide(bidsBody, bids, "bid", maxTotal, false);
  depth.draw(bids, asks);
  spreadCell.textContent =
    bids.length && asks.length
      ? `spread ${+(Number(asks[0][0]) - Number(bids[0][0])).toFixed(10)}`
      : "no two-sided market";
  root.dataset.bookSeq = String(book.seq);
}

for (const body of [asksBody, bidsBody]) {
  const pick = (event) => {
    const tr = event.target.closest("tr[data-price]");
    if (tr) ticket?.pickPrice(tr.dataset.price, tr.dataset.side === "ask" ? "buy" : "sell");
  };
  body.addEventListener("click", pick);
  body.addEventListener("keydown", (event) => {
    if (event.key === "Enter") pick(event);
  });
}

// -- the tape ------------------------------------------------------------------------------
const tapeBody = document.getElementById("tape");

const TAPE_ROWS = 50;
let tapeSeq = 0; // the last trade drawn

function tapeRow(trade) {
  const time = new Date(trade.ts).toLocaleTimeString([], { hour12: false });
  return row([cell(time), cell(trade.price, "num"), cell(trade.quantity, "num")], {
    class: trade.aggressor === "buy" ? "up" : "down",
    "data-seq": String(trade.seq),
  });
}

// New trades go on top; a snapshot older than what is drawn (a resync) redraws all.
function drawTape(tape) {
  const trades = tape.trades;
  const fresh = trades.filter((trade) => trade.seq > tapeSeq);
  if (!trades.length || trades[trades.length - 1].seq < tapeSeq || fresh.length >= TAPE_ROWS) {
    tapeBody.replaceChildren(...[...trades].reverse().slice(0, TAPE_ROWS).map(tapeRow));
  } else if (fresh.length) {
    tapeBody.prepend(...fresh.reverse().map(tapeRow));
    while (tapeBody.children.length > TAPE_ROWS) tapeBody.lastElementChild.remove();
  }
  tapeSeq = trades.length ? trades[trades.length - 1].seq : 0;
}

// -- the markets list ------------------------------------------------------------------------
for (const link of document.querySelectorAll("#markets a[data-symbol]")) {
  stream.subscribe(`ticker.${link.dataset.symbol}`, {
    onChange: (state) => {
      const last = state.ticker?.last_trade ?? state.ticker?.last;
      if (last) link.querySelector('[data-field="last"]').textContent = last;
    },
  });
}

stream.subscribe(`book.${symbol}`, { depth: DEPTH, onChange: drawBook });
stream.subscribe(`trades.${symbol}`, { onChange: drawTape });

// -- the trader's own -----------------------------------------------------------------------
let ticket = null;

if (signedIn) {
  const openBody = document.getElementById("open-orders");
  const positionsBody = document.getElementById("positions");
  const balancesBody = document.getElementById("balances");
  const balances = new Map();
  ticket = new Ticket(document.getElementById("ticket"), {
    market,
    ordersUrl: root.dataset.ordersUrl,
    available: (asset) => balances.get(asset)?.available ?? null,
  });
  const openOrders = new OpenOrders(openBody, { ticket });
  const history = new History({
    ordersBody: document.getElementById("order-history"),
    fillsBody: document.getElementById("fills"),
    ordersUrl: root.dataset.ordersUrl,
    tradesUrl: root.dataset.tradesUrl,
  });

  stream.subscribe("orders", {
    onChange: (state, changes) => {
      if (changes) history.apply(changes);
      if (changes?.fills.length) chart.markFills(history.fillsOf(symbol));
      const open = [...state.open.values()].sort((a, b) => b.id - a.id);
      ownPrices = { buy: new Set(), sell: new Set() };
      for (const order of open) {
        if (order.symbol === symbol && order.price) ownPrices[order.side].add(order.price);
      }
      openOrders.show(open);
      const book = stream.channel(`book.${symbol}`);
      if (book?.status === "live") drawBook(book);
    },
  });
  document.getElementById("cancel-all").addEventListener("click", () => ticket.cancelAll());

  // Positions marked to this venue's last trade (the reference price before any trade).
  let positionRows = [];
  const mark = (sym) => {
    const ticker = stream.channel(`ticker.${sym}`)?.ticker;
    return ticker?.last_trade ?? ticker?.reference ?? null;
  };
  const drawPositions = () => {
    positionsBody.replaceChildren(
      ...positionRows.map((p) => {
        const price = mark(p.symbol);
        const quantity = parse(p.quantity.replace("-", ""));
        const signed = p.quantity.startsWith("-") ? -1n : 1n;
        let unrealised = "—";
        if (price && quantity && parse(p.average_cost)) {
          // (mark - average cost) x quantity, exact: scaled integers, never floats
          const m = parse(price);
          const a = parse(p.average_cost);
          const scale = Math.max(m.scale, a.scale);
          const diff = {
            units: (m.units * 10n ** BigInt(scale - m.scale) - a.units * 10n ** BigInt(scale - a.scale)) * signed,
            scale,
          };
          const negative = diff.units < 0n;
          const value = multiply({ units: negative ? -diff.units : diff.units, scale }, quantity);
          unrealised = `${negative ? "-" : ""}${format(value, 2)}`;
        }
        return row(
          [cell(p.symbol), cell(p.quantity, "num"), cell(p.average_cost, "num"), cell(price ?? "—", "num"),
           cell(unrealised, `num pnl ${unrealised.startsWith("-") ? "down" : "up"}`), cell(p.realized_pnl, "num")],
          { "data-symbol": p.symbol },
        );
      }),
    );
  };
  stream.subscribe("positions", {
    onChange: (state) => {
      positionRows = [...state.rows.values()];
      drawPositions();
    },
  });
  setInterval(drawPositions, 1000); // the mark moves with the tickers
  history.load().then(() => chart.markFills(history.fillsOf(symbol)));
  stream.subscribe("balances", {
    onChange: (state) => {
      balances.clear();
      for (const b of state.rows.values()) balances.set(b.asset, b);
      balancesBody.replaceChildren(
        ...[...state.rows.values()].map((b) =>
          row([cell(b.asset), cell(b.available, "num"), cell(b.held, "num"), cell(b.pending, "num")],
            { "data-asset": b.asset }),
        ),
      );
      ticket.refresh();
    },
  });
}

// -- the freshest price's age ---------------------------------------------------------------
const ageLabel = document.getElementById("price-age");
setInterval(() => {
  const ages = stream
    .health()
    .filter((h) => /^(book|trades|ticker)\./.test(h.channel) && h.age !== null)
    .map((h) => h.age);
  ageLabel.textContent = ages.length ? `${(Math.min(...ages) / 1000).toFixed(1)} s` : "—";
}, 500);

// -- keyboard ------------------------------------------------------------------------------
const help = document.getElementById("shortcuts");
document.getElementById("help-open").addEventListener("click", () => help.showModal());
const symbols = [...markets.keys()];
document.addEventListener("keydown", (event) => {
  const typing = event.target.closest("input, select, textarea");
  if (typing || event.ctrlKey || event.metaKey || event.altKey || help.open) return;
  if (event.key === "?") {
    help.showModal();
  } else if ((event.key === "b" || event.key === "s") && ticket) {
    ticket.chooseSide(event.key === "b" ? "buy" : "sell");
  } else if (event.key === "X" && event.shiftKey && ticket) {
    ticket.cancelAll();
  } else if (event.key === "[" || event.key === "]") {
    const next = symbols[(symbols.indexOf(symbol) + (event.key === "]" ? 1 : symbols.length - 1)) % symbols.length];
    if (next !== symbol) location.assign(`/trade/${encodeURIComponent(next)}/`);
  } else if (event.key === "t") {
    applyTheme(document.documentElement.dataset.theme === "light" ? "dark" : "light");
  } else {
    return;
  }
  event.preventDefault();
});

stream.start();
window.tredyeMarket = stream; // for the console and the browser tests
window.tredyeChart = chart;
