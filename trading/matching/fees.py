"""What a trade costs: the quote amount and each side's fee (pure, no database).

Each order pays the fee rate it was placed under (decision 0010): the maker's maker rate, the
taker's taker rate. The quote amount is the step of the buyer's cumulative notional rounded up
to the quote's precision (`units.fill_amount`), so a buyer's charges sum to its notional rounded
once; both fees are on that amount, rounded down.
"""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

from trading.units import fee, fill_amount


class TradeCharges(NamedTuple):
    amount: Decimal  # quote the buyer pays and the seller receives, before fees
    buyer_fee: Decimal
    seller_fee: Decimal


def trade_charges(
    *,
    buyer_notional_before: Decimal,
    notional: Decimal,
    buyer_rate: Decimal,
    seller_rate: Decimal,
    precision: int,
) -> TradeCharges:
    """The quote amount of a fill of `notional` and the buyer's and seller's fees on it."""
    amount = fill_amount(
        notional_before=buyer_notional_before,
        notional_after=buyer_notional_before + notional,
        precision=precision,
    )
    return TradeCharges(
        amount,
        fee(amount=amount, rate=buyer_rate, precision=precision),
        fee(amount=amount, rate=seller_rate, precision=precision),
    )


def fee_rates(maker_is_buyer: bool, maker: object, taker: object) -> tuple[Decimal, Decimal]:
    """(buyer's rate, seller's rate) of a trade: the maker pays its maker rate, the taker its
    taker rate, each the rate its order records."""
    if maker_is_buyer:
        return maker.maker_fee_rate, taker.taker_fee_rate  # type: ignore[attr-defined]
    return taker.taker_fee_rate, maker.maker_fee_rate  # type: ignore[attr-defined]
