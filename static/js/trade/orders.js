// The trader's open orders: cancel one, cancel all, and amend a limit order's price and
// quantity in place (a replace: the matcher applies it where it stands in the book's
// sequence). The table follows the `orders` channel; an amendment being typed survives it.

const REPLACEABLE = new Set(["limit", "stop_limit"]);

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function button(text, className, label, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.className = `link-button ${className}`;
  b.textContent = text;
  b.setAttribute("aria-label", label);
  b.addEventListener("click", onClick);
  return b;
}

export class OpenOrders {
  constructor(body, { ticket }) {
    this.body = body;
    this.ticket = ticket;
    this.orders = [];
    this.editing = new Map(); // order id -> {price, quantity, error}
  }

  show(orders) {
    this.orders = orders;
    for (const id of this.editing.keys()) {
      if (!orders.some((order) => order.id === id)) this.editing.delete(id);
    }
    this.render();
  }

  render() {
    this.body.replaceChildren(...this.orders.map((order) => this.row(order)));
  }

  row(order) {
    const tr = document.createElement("tr");
    tr.dataset.orderId = String(order.id);
    tr.dataset.status = order.status;
    const edit = this.editing.get(order.id);
    const priceCell = edit ? this.input(order, "price", edit) : cell(order.price ?? "market", "num");
    const quantityCell = edit ? this.input(order, "quantity", edit) : cell(order.quantity, "num");
    const actions = document.createElement("td");
    actions.className = "actions";
    if (edit) {
      actions.append(
        button("Save", "save", `Save order ${order.id}`, () => this.save(order)),
        button("Back", "back", `Stop amending order ${order.id}`, () => {
          this.editing.delete(order.id);
          this.render();
        }),
      );
      if (edit.error) {
        const error = document.createElement("p");
        error.className = "error";
        error.setAttribute("role", "alert");
        error.textContent = edit.error;
        actions.append(error);
      }
    } else {
      if (REPLACEABLE.has(order.type) && order.status !== "pending_new") {
        actions.append(
          button("Amend", "amend", `Amend order ${order.id}`, () => {
            this.editing.set(order.id, { price: order.price, quantity: order.quantity, error: "" });
            this.render();
            this.body.querySelector(`tr[data-order-id="${order.id}"] input`)?.focus();
          }),
        );
      }
      actions.append(
        button("Cancel", "cancel", `Cancel order ${order.id}`, () => this.ticket.cancel(order.id)),
      );
    }
    tr.append(
      cell(order.symbol),
      cell(order.side, order.side === "buy" ? "up" : "down"),
      cell(order.type.replace("_", " ")),
      priceCell,
      quantityCell,
      cell(order.filled_quantity, "num"),
      // Accepted by the venue but not yet in the book: the matcher has it queued.
      cell(order.status === "pending_new" ? "queued" : order.status.replace("_", " ")),
      actions,
    );
    return tr;
  }

  input(order, field, edit) {
    const td = document.createElement("td");
    td.className = "num";
    const input = document.createElement("input");
    input.name = field;
    input.value = edit[field];
    input.inputMode = "decimal";
    input.setAttribute("aria-label", `New ${field} of order ${order.id}`);
    input.addEventListener("input", () => {
      edit[field] = input.value.trim();
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Enter") this.save(order);
    });
    td.append(input);
    return td;
  }

  async save(order) {
    const edit = this.editing.get(order.id);
    if (!edit) return;
    const body = { quantity: edit.quantity };
    if (edit.price !== order.price) body.price = edit.price;
    const { ok, payload } = await this.ticket.post(`${this.ticket.ordersUrl}${order.id}/replace/`, body);
    if (ok) {
      this.editing.delete(order.id);
    } else {
      edit.error = payload.error?.detail || "The order could not be amended.";
    }
    this.render();
  }
}
