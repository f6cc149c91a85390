"""Generated bad input against every JSON endpoint: never a 5xx; every refusal is a 4xx in the
API's error shape with a code, and changes nothing (orders, outbox, ledger, balances).

Bodies are drawn from any JSON (deep, wide, NUL characters, any Unicode, huge numbers), from
order-shaped objects whose fields take valid and invalid values, and from raw bytes. The socket
ops are fuzzed in marketdata/tests/test_ws_fuzz.py.
"""

from __future__ import annotations

import json

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from accounts.models import Balance, JournalEntry
from trading.models import Order, Outbox

pytestmark = pytest.mark.django_db

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

text = st.text(alphabet=st.characters(codec="utf-8"), max_size=40) | st.sampled_from(
    ["", "\x00", "a\x00b", "²", "١٢٣", "1e999999", "NaN", "-0", "Infinity", "1" * 400]
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
any_json = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
    max_leaves=20,
)


def field(valid: list[str]) -> st.SearchStrategy:
    return st.sampled_from(valid) | scalars | any_json


def order_shaped(symbol: str) -> st.SearchStrategy:
    fields = {
        "symbol": field([symbol, symbol.lower(), "NOPE"]),
        "client_order_id": field(["c1", "c2", "x" * 64, "x" * 65]),
        "side": field(["buy", "sell", "BUY"]),
        "type": field(["limit", "market", "stop", "stop_limit"]),
        "quantity": field(["1", "0.5", "0", "-1", "1e3", "100000000000000000000"]),
        "price": field(["10.00", "10.001", "0", "1e-30", "99999999"]),
        "stop_price": field(["9.00", "abc"]),
        "time_in_force": field(["gtc", "ioc", "fok", "day", "gtd"]),
        "post_only": field(["true"]) | st.booleans(),
    }
    return st.fixed_dictionaries({}, optional=fields) | st.dictionaries(text, any_json, max_size=3)


def bodies(symbol: str) -> st.SearchStrategy:
    as_json = (order_shaped(symbol) | any_json).map(lambda v: json.dumps(v).encode())
    raw = st.binary(max_size=200) | st.sampled_from(
        [b"[" * 3000 + b"]" * 3000, b"{" * 10, b"\xff\xfe", b'{"a": 1e999999}', b"x" * 9000]
    )
    return as_json | raw


def state() -> tuple:
    return (
        Order.objects.count(),
        Outbox.objects.count(),
        JournalEntry.objects.count(),
        sorted(Balance.objects.values_list("account_id", "asset_id", "available", "held")),
    )


def check(response, before: tuple, *, head: bool = False) -> None:
    assert response.status_code < 500, response.content[:300]
    if head:
        assert state() == before
    elif response.status_code >= 400:
        error = response.json()["error"]
        assert isinstance(error["code"], str)
        assert error["code"]
        assert isinstance(error["detail"], str)
        assert state() == before, f"a {response.status_code} {error['code']} changed state"


@pytest.fixture
def fuzz_client(make_account, make_instrument, settings):
    settings.ORDER_RATE_LIMIT_PER_S = 0  # the limit has its own test; here it would hide paths
    market = make_instrument()
    account = make_account(funds={market.quote: "100000", market.base: "1000"})
    client = Client()
    client.force_login(account.user)
    return client, market


def test_place_never_fails_on_generated_bodies(fuzz_client):
    client, market = fuzz_client

    @FUZZ
    @given(body=bodies(market.symbol))
    def place(body: bytes) -> None:
        before = state()
        check(client.post("/trading/api/orders/", body, content_type="application/json"), before)

    place()


def test_cancel_endpoints_never_fail_on_generated_input(fuzz_client):
    client, market = fuzz_client
    order_ids = st.sampled_from(["1", "0", "²", "99999999999999999999", "%00", "a", "-1"]) | (
        st.integers(min_value=0, max_value=10**25).map(str)
    )

    @FUZZ
    @given(
        order_id=order_ids,
        body=bodies(market.symbol)
        | st.fixed_dictionaries({}, optional={"quantity": field(["1", "0"])}).map(
            lambda v: json.dumps(v).encode()
        ),
        all_body=st.fixed_dictionaries({}, optional={"symbol": field([market.symbol])}).map(
            lambda v: json.dumps(v).encode()
        ),
    )
    def cancel(order_id: str, body: bytes, all_body: bytes) -> None:
        before = state()
        url = f"/trading/api/orders/{order_id}/cancel/"
        check(client.post(url, body, content_type="application/json"), before)
        before = state()
        url = "/trading/api/orders/cancel-all/"
        check(client.post(url, all_body, content_type="application/json"), before)

    cancel()


def test_read_endpoints_never_fail_on_generated_input(fuzz_client):
    client, _ = fuzz_client
    paths = [
        "/trading/api/orders/",
        "/trading/api/orders/{}/",
        "/trading/api/trades/",
        "/trading/api/positions/",
        "/marketdata/api/tickers/",
        "/marketdata/api/candles/",
        "/marketdata/api/book/",
        "/marketdata/api/trades/",
    ]

    @FUZZ
    @given(
        path=st.sampled_from(paths),
        segment=st.text(
            alphabet=st.characters(codec="utf-8", exclude_characters="/?#"), min_size=1
        ),
        query=st.dictionaries(text, text, max_size=3),
        method=st.sampled_from(["GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"]),
    )
    def read(path: str, segment: str, query: dict, method: str) -> None:
        before = state()
        if method == "GET":
            response = client.get(path.format(segment), query)
        else:
            response = client.generic(method, path.format(segment), data=b"")
        check(response, before, head=method == "HEAD")

    read()
