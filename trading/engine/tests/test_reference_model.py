"""The engine agrees with a slow, obviously-correct reference matcher."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from trading.engine import OrderBook

from .commands import SEQUENCES, STP_MODES, Runner
from .helpers import without_deltas
from .reference import ReferenceBook


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(SEQUENCES, STP_MODES)
def test_engine_matches_the_reference_model(commands, stp) -> None:
    engine = Runner(OrderBook("REF", stp=stp))
    reference = Runner(ReferenceBook(stp=stp))
    for command in commands:
        produced = engine.apply(command)
        expected = reference.apply(command)
        assert without_deltas(produced) == expected, command
        assert engine.book.depth() == reference.book.depth(), command
        for order_id in reference.book.live:
            assert engine.book.open_qty(order_id) == reference.book.live[order_id].qty
        assert len(engine.book) == len(reference.book.live)
        assert engine.book.last_price == reference.book.last_price
        engine.book._verify()
