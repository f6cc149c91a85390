// The order ticket: side, type, price, stop price, quantity, time in force, post-only. It
// checks tick and lot sizes exactly before sending, shows the estimated cost, the most fee
// and what is available, gives each order a client order id, and shows a refusal next to
// the field it concerns, in the server's words.

import { compare, format, isMultiple, isZero, multiply, parse } from "./decimal.js";

// The API's error codes name the field they concern (trading/services/inputs.py).
const FIELD_OF_CODE = {
  price_outside_band: "price",
  no_reference_price: "price",
  quantity_too_small: "quantity",
  quantity_too_large: "quantity",
  insufficient_funds: "quantity",
  invalid_lot_size: "quantity",
};
const FIELDS = ["price", "stop_price", "quantity", "time_in_force"];
// Words put before the server's own, where its detail alone does not say what went wrong.
const LEAD_OF_CODE = {
  insufficient_funds: "Not enough funds: ",
  price_outside_band: "Too far from the market price: ",
};

function fieldOf(code) {
  if (FIELD_OF_CODE[code]) return FIELD_OF_CODE[code];
  const named = code.replace(/^(invalid|missing)_/, "");
  return FIELDS.includes(named) ? named : null;
}

function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

function clientOrderId() {
  const bytes = crypto.getRandomValues(new Uint8Array(10));
  return `web-${[...bytes].map((b) => b.toString(16).padStart(2, "0")).join("")}`;
}

export class Ticket {
  constructor(form, { market, ordersUrl, available }) {
    this.form = form;
    this.market = market;
    this.ordersUrl = ordersUrl;
    this.available = available;
    this.tick = parse(market.tick_size);
    this.lot = parse(market.lot_size);
    this.sending = false;
    form.addEventListener("input", () => this.refresh());
    form.addEventListener("change", () => this.refresh());
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
    this.refresh();
  }

  value(name) {
    const input = this.form.elements.namedItem(name);
    if (input instanceof RadioNodeList) return input.value;
    return input.type === "checkbox" ? input.checked : input.value.trim();
  }

  get side() {
    return this.value("side");
  }

  get type() {
    return this.value("type");
  }

  // The B and S keys: that side, the cursor in the quantity.
  chooseSide(side) {
    for (const input of this.form.querySelectorAll('input[name="side"]')) input.checked = input.value === side;
    this.refresh();
    this.form.elements.namedItem("quantity").focus();
  }

  // A price picked on the ladder: a limit order on the side that would rest there.
  pickPrice(price, side) {
    this.form.elements.namedItem("price").value = price;
    if (this.type === "market" || this.type === "stop") this.form.elements.namedItem("type").value = "limit";
    for (const input of this.form.querySelectorAll('input[name="side"]')) input.checked = input.value === side;
    this.refresh();
    this.form.elements.namedItem("quantity").focus();
  }

  showError(field, message) {
    const target = this.form.querySelector(`#error-${field ?? "form"}`) || this.form.querySelector("#error-form");
    target.textContent = message;
    const input = field && this.form.elements.namedItem(field);
    if (input && input.setAttribute) input.setAttribute("aria-invalid", message ? "true" : "false");
  }

  clearErrors() {
    for (const field of [...FIELDS, null]) this.showError(field, "");
  }

  // What the form says as an order body, or the first problem found, with its field.
  check() {
    const { type, side } = this;
    const needsPrice = type === "limit" || type === "stop_limit";
    const needsStop = type === "stop" || type === "stop_limit";
    const problems = [];
    const body = { symbol: this.market.symbol, side, type, client_order_id: clientOrderId() };
    const quantity = parse(this.value("quantity"));
    if (!quantity || isZero(quantity)) problems.push(["quantity", "Enter a quantity."]);
    else if (!isMultiple(quantity, this.lot)) {
      problems.push(["quantity", `Quantity must be a multiple of the lot size ${this.market.lot_size}.`]);
    } else if (compare(quantity, parse(this.market.min_quantity)) < 0) {
      problems.push(["quantity", `The smallest order is ${this.market.min_quantity}.`]);
    } else if (this.market.max_quantity && compare(quantity, parse(this.market.max_quantity)) > 0) {
      problems.push(["quantity", `The largest order is ${this.market.max_quantity}.`]);
    } else body.quantity = this.value("quantity");
    for (const [field, needed] of [["price", needsPrice], ["stop_price", needsStop]]) {
      if (!needed) continue;
      const price = parse(this.value(field));
      if (!price || isZero(price)) problems.push([field, "Enter a price."]);
      else if (!isMultiple(price, this.tick)) {
        problems.push([field, `Price must be a multiple of the tick size ${this.market.tick_size}.`]);
      } else body[field] = this.value(field);
    }
    if (type !== "market") body.time_in_force = this.value("time_in_force");
    if (this.value("post_only")) body.post_only = true;
    return { body, problems, quantity };
  }

  refresh() {
    const type = this.type;
    this.form.querySelector('[data-field="price"]').hidden = !(type === "limit" || type === "stop_limit");
    this.form.querySelector('[data-field="stop_price"]').hidden = !(type === "stop" || type === "stop_limit");
    const submit = this.form.querySelector("#ticket-submit");
    submit.textContent = `${this.side === "buy" ? "Buy" : "Sell"} ${this.market.symbol}`;
    submit.className = `button ${this.side}`;
    const quantity = parse(this.value("quantity"));
    const price = parse(this.value(type === "stop" ? "stop_price" : "price"));
    const places = Math.max(parse(this.market.tick_size).scale, 2);
    const cost = quantity && price && type !== "market" ? multiply(quantity, price) : null;
    const rate = parse(
      compare(parse(this.market.taker_fee_rate), parse(this.market.maker_fee_rate)) > 0
        ? this.market.taker_fee_rate
        : this.market.maker_fee_rate,
    );
    this.form.querySelector("#estimate-cost").textContent = cost
      ? `${format(cost, places)} ${this.market.quote}`
      : type === "market" ? "at the market" : "—";
    this.form.querySelector("#estimate-fee").textContent = cost
      ? `${format(multiply(cost, rate), places)} ${this.market.quote}`
      : "—";
    const asset = this.side === "buy" ? this.market.quote : this.market.base;
    const available = this.available(asset);
    this.form.querySelector("#available").textContent =
      available === null ? "—" : `${available} ${asset}`;
  }

  async post(url, body) {
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken() },
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    const payload = await response.json().catch(() => ({}));
    return { ok: response.ok, status: response.status, payload };
  }

  async submit() {
    if (this.sending) return;
    this.clearErrors();
    const { body, problems } = this.check();
    if (problems.length) {
      for (const [field, message] of problems) this.showError(field, message);
      this.form.elements.namedItem(problems[0][0])?.focus();
      return;
    }
    this.sending = true;
    try {
      const { ok, payload } = await this.post(this.ordersUrl, body);
      if (ok) {
        this.form.dataset.lastOrder = String(payload.order.id);
        this.showError(null, "");
        return;
      }
      const error = payload.error || { code: "error", detail: "The order was not accepted." };
      this.showError(fieldOf(error.code), `${LEAD_OF_CODE[error.code] ?? ""}${error.detail}`);
    } catch {
      this.showError(null, "The server could not be reached; the order was not sent.");
    } finally {
      this.sending = false;
    }
  }

  async cancel(orderId) {
    const { ok, payload } = await this.post(`${this.ordersUrl}${orderId}/cancel/`, {});
    if (!ok) this.showError(null, payload.error?.detail || "The order could not be canceled.");
  }

  async cancelAll() {
    const { ok, payload } = await this.post(`${this.ordersUrl}cancel-all/`, { symbol: this.market.symbol });
    if (!ok) this.showError(null, payload.error?.detail || "The orders could not be canceled.");
  }
}
