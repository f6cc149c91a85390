"""The trader's JSON endpoints: their errors carry a code and change nothing."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.test import Client

from testing.helpers import client_for, post, snapshot
from trading.models import Outbox
from trading.services import order_place

D = Decimal
pytestmark = pytest.mark.django_db


def test_place_returns_the_pending_order(alice, market):
    status, body = post(
        client_for(alice),
        "/trading/api/orders/",
        {
            "symbol": market.symbol,
            "client_order_id": "a1",
            "side": "buy",
            "quantity": "2",
            "price": "10.00",
        },
    )
    assert status == 201
    assert body["order"]["status"] == "pending_new"
    assert Outbox.objects.filter(topic="orders", type="order.place").count() == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        ([1, 2], 400, "invalid_json"),
        (
            {
                "symbol": "NOPE",
                "client_order_id": "x",
                "side": "buy",
                "quantity": "1",
                "price": "1.00",
            },
            404,
            "unknown_instrument",
        ),
        (
            {"client_order_id": "x", "side": "buy", "quantity": 1.5, "price": "1.00"},
            400,
            "invalid_quantity",
        ),
        (
            {"client_order_id": "x", "side": "up", "quantity": "1", "price": "1.00"},
            400,
            "invalid_side",
        ),
        (
            {"client_order_id": "x", "side": "buy", "quantity": "1", "price": "1.001"},
            400,
            "invalid_tick_size",
        ),
        (
            {"client_order_id": "x", "side": "buy", "quantity": "1.5", "price": "1.00"},
            400,
            "invalid_lot_size",
        ),
        (
            {"client_order_id": "x", "side": "buy", "quantity": "1000", "price": "10.00"},
            400,
            "insufficient_funds",
        ),
        (
            {"client_order_id": "x", "side": "sell", "quantity": "11", "price": "10.00"},
            400,
            "insufficient_funds",
        ),
        (
            {"client_order_id": "x y", "side": "buy", "quantity": "1", "price": "1.00"},
            400,
            "invalid_client_order_id",
        ),
        ({"client_order_id": "x", "side": "buy", "quantity": "1"}, 400, "missing_price"),
        (
            {"client_order_id": "x", "side": "buy", "quantity": "1", "price": "1.00", "evil": 1},
            400,
            "unknown_field",
        ),
    ],
)
def test_bad_place_gives_a_code_and_changes_nothing(alice, market, body, status, code):
    if isinstance(body, dict) and "symbol" not in body:
        body = body | {"symbol": market.symbol}
    before = snapshot()
    got_status, got = post(client_for(alice), "/trading/api/orders/", body)
    assert (got_status, got["error"]["code"]) == (status, code)
    assert snapshot() == before


def test_halted_instrument_rejects_orders_but_cancels_work(alice, market):
    order = order_place(
        account=alice,
        symbol=market.symbol,
        client_order_id="a",
        side="buy",
        quantity="1",
        price="10.00",
    )
    market.status = "halted"
    market.save()
    status, body = post(
        client_for(alice),
        "/trading/api/orders/",
        {
            "symbol": market.symbol,
            "client_order_id": "b",
            "side": "buy",
            "quantity": "1",
            "price": "10.00",
        },
    )
    assert (status, body["error"]["code"]) == (400, "instrument_halted")
    status, body = post(client_for(alice), f"/trading/api/orders/{order.pk}/cancel/", {})
    assert status == 202


def test_repeated_client_order_id_returns_the_same_order(alice, market):
    body = {
        "symbol": market.symbol,
        "client_order_id": "same",
        "side": "buy",
        "quantity": "1",
        "price": "10.00",
    }
    _, first = post(client_for(alice), "/trading/api/orders/", body)
    before = snapshot()
    _, second = post(client_for(alice), "/trading/api/orders/", body)
    assert first["order"]["id"] == second["order"]["id"]
    assert snapshot() == before


def test_nobody_sees_or_cancels_another_users_order(alice, make_account, market):
    order = order_place(
        account=alice,
        symbol=market.symbol,
        client_order_id="a",
        side="buy",
        quantity="1",
        price="10.00",
    )
    mallory = client_for(make_account(funds={market.quote: "10"}))
    before = snapshot()
    status, body = post(mallory, f"/trading/api/orders/{order.pk}/cancel/", {})
    assert (status, body["error"]["code"]) == (404, "unknown_order")
    assert mallory.get(f"/trading/api/orders/{order.pk}/").status_code == 404
    assert mallory.get("/trading/api/orders/").json() == {"orders": []}
    assert snapshot() == before


def test_login_and_csrf_are_required(alice, market):
    assert Client().get("/trading/api/orders/").status_code == 401
    response = client_for(alice, csrf=True).post(
        "/trading/api/orders/", "{}", content_type="application/json"
    )
    assert response.status_code == 403


def test_replace_is_refused_for_a_pending_order_a_stranger_and_bad_fields(
    alice, make_account, market
):
    order = order_place(
        account=alice,
        symbol=market.symbol,
        client_order_id="amend-me",
        side="buy",
        quantity="2",
        price="10.00",
    )
    url = f"/trading/api/orders/{order.pk}/replace/"
    mallory = client_for(make_account(funds={market.quote: "10"}))
    before = snapshot()
    owner = client_for(alice)
    # not in the book yet (no matcher here): the matcher must accept it first
    status, body = post(owner, url, {"quantity": "3", "price": "10.01"})
    assert (status, body["error"]["code"]) == (409, "order_pending")
    # fields the endpoint does not take, and numbers that are not decimal strings
    status, body = post(owner, url, {"quantity": "3", "side": "sell"})
    assert (status, body["error"]["code"]) == (400, "unknown_field")
    status, body = post(owner, url, {"quantity": 3})
    assert (status, body["error"]["code"]) == (400, "invalid_quantity")
    # another account's order is unknown to a stranger
    status, body = post(mallory, url, {"quantity": "3"})
    assert (status, body["error"]["code"]) == (404, "unknown_order")
    assert snapshot() == before
