// The trader's order history and fills: the latest from the JSON API when the page opens,
// then live from the `orders` channel (every state change, every fill), newest first.

const KEEP = 100;

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text ?? "—";
  if (className) td.className = className;
  return td;
}

const time = (ms) => (ms ? new Date(ms).toLocaleTimeString([], { hour12: false }) : "—");

export class History {
  constructor({ ordersBody, fillsBody, ordersUrl, tradesUrl }) {
    this.ordersBody = ordersBody;
    this.fillsBody = fillsBody;
    this.ordersUrl = ordersUrl;
    this.tradesUrl = tradesUrl;
    this.orders = new Map(); // id -> order
    this.fills = new Map(); // "SYMBOL:seq" -> fill
  }

  async load() {
    try {
      const [orders, trades] = await Promise.all(
        [this.ordersUrl, `${this.tradesUrl}?limit=${KEEP}`].map((url) =>
          fetch(url, { credentials: "same-origin" }).then((r) => (r.ok ? r.json() : {})),
        ),
      );
      // What the stream already brought is newer than the pages: keep it.
      for (const order of (orders.orders ?? []).reverse()) {
        if (!this.orders.has(order.id)) this.orders.set(order.id, order);
      }
      for (const fill of trades.trades ?? []) this.addFill(fill, false);
    } catch (error) {
      console.warn("history: could not load", error);
    }
    this.render();
  }

  addFill(fill, live = true) {
    const key = `${fill.symbol}:${fill.seq}`;
    if (live || !this.fills.has(key)) {
      this.fills.set(key, { ...fill, at: fill.ts ?? fill.executed_at_ms });
    }
  }

  // This market's fills as the chart marks them: {price, quantity, side, ts}.
  fillsOf(symbol) {
    return [...this.fills.values()]
      .filter((fill) => fill.symbol === symbol)
      .map((fill) => ({ price: fill.price, quantity: fill.quantity, side: fill.side, ts: fill.at }));
  }

  apply(changes) {
    for (const order of [...changes.changed, ...changes.closed]) this.orders.set(order.id, order);
    for (const fill of changes.fills) this.addFill(fill);
    this.render();
  }

  render() {
    const orders = [...this.orders.values()].sort((a, b) => b.id - a.id).slice(0, KEEP);
    this.ordersBody.replaceChildren(
      ...orders.map((order) => {
        const tr = document.createElement("tr");
        tr.dataset.orderId = String(order.id);
        tr.dataset.status = order.status;
        tr.append(
          cell(order.symbol),
          cell(order.side, order.side === "buy" ? "up" : "down"),
          cell(order.type.replace("_", " ")),
          cell(order.price ?? "market", "num"),
          cell(order.quantity, "num"),
          cell(order.filled_quantity, "num"),
          cell(order.average_price, "num"),
          cell(order.status === "pending_new" ? "queued" : order.status.replace("_", " ")),
        );
        return tr;
      }),
    );
    const fills = [...this.fills.values()].sort((a, b) => b.at - a.at).slice(0, KEEP);
    this.fillsBody.replaceChildren(
      ...fills.map((fill) => {
        const tr = document.createElement("tr");
        tr.dataset.seq = String(fill.seq);
        tr.append(
          cell(time(fill.at)),
          cell(fill.symbol),
          cell(fill.side, fill.side === "buy" ? "up" : "down"),
          cell(fill.price, "num"),
          cell(fill.quantity, "num"),
          cell(fill.fee, "num"),
        );
        return tr;
      }),
    );
  }
}
