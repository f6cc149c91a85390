"""The trading API against a hostile client: every refusal is a 4xx in JSON with a code and
changes nothing; a repeated client order id is either the same order or a conflict; a burst
of order entry past the account's limit is refused."""

from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest
from django.test import Client

from testing.helpers import client_for, post, snapshot
from trading.models import Order

D = Decimal
pytestmark = pytest.mark.django_db


def order_body(market, **fields) -> dict:
    return {
        "symbol": market.symbol,
        "side": "buy",
        "quantity": "1",
        "price": "10.00",
        **fields,
    }


# --- bodies that crashed the request ------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 4000 + b"]" * 4000,  # RecursionError in json.loads
        b'{"symbol": ' + b"[" * 2000 + b"]" * 2000 + b"}",
        b'{"symbol": {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": {"j": {"k": {"l": '
        b'{"m": {"n": {"o": {"p": {"q": 1}}}}}}}}}}}}}}}}}}',
    ],
)
def test_deeply_nested_json_is_a_400(alice, raw):
    before = snapshot()
    for url in ("/trading/api/orders/", "/trading/api/orders/cancel-all/"):
        status, body = post(client_for(alice), url, raw)
        assert (status, body["error"]["code"]) == (400, "invalid_json")
    assert snapshot() == before


@pytest.mark.parametrize(
    "fields",
    [
        {"symbol": "AB\x00C"},
        {"client_order_id": "a\x00"},
        {"price": "10\x00"},
        {"side": "buy\x00"},
        {"symbol\x00": "x"},
    ],
)
def test_a_nul_character_anywhere_is_a_400(alice, market, fields):
    before = snapshot()
    status, body = post(client_for(alice), "/trading/api/orders/", order_body(market, **fields))
    assert (status, body["error"]["code"]) == (400, "invalid_character")
    status, body = post(client_for(alice), "/trading/api/orders/cancel-all/", {"symbol": "A\x00"})
    assert (status, body["error"]["code"]) == (400, "invalid_character")
    assert snapshot() == before


@pytest.mark.parametrize("order_id", ["²", "١٢", "1²", "99999999999999999999", "-1", "1.0"])
def test_an_order_id_that_is_not_ascii_digits_is_unknown(alice, order_id):
    before = snapshot()
    client = client_for(alice)
    response = client.get(f"/trading/api/orders/{order_id}/")
    assert (response.status_code, response.json()["error"]["code"]) == (404, "unknown_order")
    status, body = post(client, f"/trading/api/orders/{order_id}/cancel/", {})
    assert (status, body["error"]["code"]) == (404, "unknown_order")
    assert snapshot() == before


# --- client order ids ------------------------------------------------------------------------


def test_a_repeated_client_order_id_with_other_parameters_is_a_conflict(alice, market):
    client = client_for(alice)
    status, first = post(client, "/trading/api/orders/", order_body(market, client_order_id="k1"))
    assert status == 201
    before = snapshot()
    for changed in ({"quantity": "2"}, {"price": "10.01"}, {"side": "sell"}, {"type": "market"}):
        body = order_body(market, client_order_id="k1") | changed
        if changed.get("type") == "market":
            body.pop("price")
        status, answer = post(client, "/trading/api/orders/", body)
        assert (status, answer["error"]["code"]) == (409, "client_order_id_conflict"), changed
        assert str(first["order"]["id"]) in answer["error"]["detail"]
    # The same parameters again (written differently) are the same order.
    status, again = post(
        client, "/trading/api/orders/", order_body(market, client_order_id="k1", price="10.0")
    )
    assert (status, again["order"]["id"]) == (201, first["order"]["id"])
    assert snapshot() == before


def test_a_conflict_is_found_on_the_fast_path_too(alice, market):
    """The one-round-trip write (rules cached by an earlier order) finds the id taken."""
    client = client_for(alice)
    post(client, "/trading/api/orders/", order_body(market, client_order_id="warm"))
    post(client, "/trading/api/orders/", order_body(market, client_order_id="k2"))
    before = snapshot()
    status, answer = post(
        client, "/trading/api/orders/", order_body(market, client_order_id="k2", quantity="3")
    )
    assert (status, answer["error"]["code"]) == (409, "client_order_id_conflict")
    assert snapshot() == before


def test_client_order_id_is_optional_and_generated(alice, market):
    client = client_for(alice)
    ids = set()
    for _ in range(2):
        status, body = post(client, "/trading/api/orders/", order_body(market))
        assert status == 201
        ids.add(body["order"]["client_order_id"])
    assert len(ids) == 2
    assert all(len(cid) == 32 for cid in ids)
    assert Order.objects.filter(account=alice).count() == 2


@pytest.mark.parametrize("bad", ["", "a b", "x" * 65, "abc\n", 7, ["a"]])
def test_a_malformed_client_order_id_is_refused(alice, market, bad):
    before = snapshot()
    status, body = post(
        client_for(alice), "/trading/api/orders/", order_body(market, client_order_id=bad)
    )
    assert (status, body["error"]["code"]) == (400, "invalid_client_order_id")
    assert snapshot() == before


# --- errors Django answered in HTML or with an empty body ---------------------------------


def test_a_missing_csrf_token_is_a_json_403(alice, market):
    before = snapshot()
    response = client_for(alice, csrf=True).post(
        "/trading/api/orders/", json.dumps(order_body(market)), content_type="application/json"
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "csrf_failed"
    assert snapshot() == before


def test_a_request_while_logged_out_is_a_json_401_even_without_a_csrf_token(market):
    client = Client(enforce_csrf_checks=True)
    for method, url in [
        ("post", "/trading/api/orders/"),
        ("post", "/trading/api/orders/1/cancel/"),
        ("post", "/trading/api/orders/cancel-all/"),
        ("get", "/trading/api/orders/"),
        ("get", "/trading/api/trades/"),
        ("get", "/trading/api/positions/"),
    ]:
        if method == "post":
            response = client.post(url, "{}", content_type="application/json")
        else:
            response = client.get(url)
        assert response.status_code == 401, url
        assert response["Content-Type"] == "application/json"
        assert response.json()["error"]["code"] == "not_authenticated"


def test_a_wrong_method_is_a_json_405_with_allow(alice):
    client = client_for(alice)
    for method, url, allow in [
        ("put", "/trading/api/orders/", "GET, POST, HEAD"),
        ("delete", "/trading/api/orders/1/", "GET, HEAD"),
        ("get", "/trading/api/orders/1/cancel/", "POST"),
        ("post", "/trading/api/trades/", "GET, HEAD"),
        ("post", "/marketdata/api/tickers/", "GET, HEAD"),
    ]:
        response = getattr(client, method)(url)
        assert response.status_code == 405, url
        assert response["Allow"] == allow
        assert response.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("debug", [False, True])
def test_an_unknown_api_path_is_a_json_404(alice, settings, debug):
    settings.DEBUG = debug  # Django's debug 404 page would skip handler404
    client = client_for(alice)
    for url in ("/trading/api/nothing-here/", "/marketdata/api/nothing/", "/trading/api/x/y/z"):
        response = client.get(url)
        assert response.status_code == 404, url
        assert response.json()["error"]["code"] == "not_found"
    # a POST without the trailing slash is not redirected (a redirect drops the body): named
    before = snapshot()
    status, body = post(client, "/trading/api/orders", {"symbol": "X"})
    assert (status, body["error"]["code"]) == (404, "not_found")
    assert "did you mean /trading/api/orders/?" in body["error"]["detail"]
    assert snapshot() == before


# --- order-entry rate limit ------------------------------------------------------------------


def test_a_burst_past_the_account_limit_is_refused_and_changes_nothing(alice, market, settings):
    settings.ORDER_RATE_LIMIT_PER_S = 5
    client = client_for(alice)
    while time.time() % 1 > 0.3:  # start the burst early in a second: one window
        time.sleep(0.02)
    answers = [
        post(client, "/trading/api/orders/", order_body(market, client_order_id=f"b{n}"))
        for n in range(8)
    ]
    assert [status for status, _ in answers] == [201] * 5 + [429] * 3
    assert {body["error"]["code"] for _, body in answers[5:]} == {"rate_limited"}
    placed = set(Order.objects.filter(account=alice).values_list("client_order_id", flat=True))
    assert placed == {f"b{n}" for n in range(5)}
    # Reading is not order entry; another account has its own budget.
    assert client.get("/trading/api/orders/").status_code == 200
    time.sleep(1.05)
    status, _ = post(client, "/trading/api/orders/", order_body(market, client_order_id="later"))
    assert status == 201
