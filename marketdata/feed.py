"""The reference price feed: a seeded GBM simulator and a CSV replayer, both pure.

Prices live as integer ticks; only the random shock of the walk is a float, and every price
that leaves this module is a `Decimal` quantized to the instrument's tick size.
"""

from __future__ import annotations

import csv
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from pathlib import Path

SECONDS_PER_YEAR = 365 * 24 * 3600


class FeedError(ValueError):
    """Bad feed input: an unknown symbol or a malformed replay file."""


@dataclass(frozen=True, slots=True)
class Quote:
    """One reference tick."""

    symbol: str
    bid: Decimal
    ask: Decimal
    last: Decimal
    bid_size: Decimal
    ask_size: Decimal
    open: Decimal

    @property
    def change_pct(self) -> Decimal:
        return ((self.last - self.open) / self.open * 100).quantize(Decimal("0.01"))

    def as_data(self) -> dict[str, str]:
        """The tick's payload as sent on Kafka: every number a decimal string, never in
        exponent form (a normalized 300 is "3E+2")."""
        return {
            "symbol": self.symbol,
            "bid": f"{self.bid:f}",
            "ask": f"{self.ask:f}",
            "last": f"{self.last:f}",
            "bid_size": f"{self.bid_size:f}",
            "ask_size": f"{self.ask_size:f}",
            "open": f"{self.open:f}",
            "change_pct": f"{self.change_pct:f}",
        }


@dataclass(slots=True)
class SimulatedInstrument:
    """The state of one instrument's random walk, in integer ticks."""

    symbol: str
    tick_size: Decimal
    lot_size: Decimal
    annual_volatility: float
    spread_bps: int
    typical_size: Decimal
    price_ticks: int
    open_ticks: int

    def price(self, ticks: int) -> Decimal:
        return (self.tick_size * ticks).quantize(self.tick_size)


def quantum(step: Decimal) -> Decimal:
    """A tick or lot size as a clean exponent: Decimal("0.0100000000") -> Decimal("0.01")."""
    step = step.normalize()
    exponent = step.as_tuple().exponent
    if not isinstance(exponent, int):  # pragma: no cover - the models' steps are positive numbers
        raise ValueError(f"a tick or lot size must be a finite number, not {step}")
    return step if exponent <= 0 else step.quantize(Decimal(1))


def to_ticks(price: Decimal, tick_size: Decimal) -> int:
    return max(1, int((price / tick_size).to_integral_value(ROUND_HALF_EVEN)))


class Simulator:
    """Geometric Brownian motion per instrument; the same seed gives the same ticks.

    `time_scale` is simulated seconds per real second, so a demo market moves visibly: at the
    default 600, AAPL at 25 % annual volatility moves about 0.1 % between ticks.
    """

    def __init__(
        self, instruments: list[SimulatedInstrument], *, seed: int | None, time_scale: float = 600.0
    ) -> None:
        if not instruments:
            raise FeedError("no active instruments to simulate")
        self.instruments = instruments
        self.random = random.Random(seed)  # noqa: S311 - a simulation, not security
        self.time_scale = time_scale

    def step(self, dt_seconds: float) -> Quote:
        """Move one instrument, picked at random, by `dt_seconds` of real time."""
        state = self.random.choice(self.instruments)
        years = dt_seconds * len(self.instruments) * self.time_scale / SECONDS_PER_YEAR
        sigma = state.annual_volatility * math.sqrt(max(years, 0.0))
        shock = math.exp(sigma * self.random.gauss(0.0, 1.0) - sigma * sigma / 2)
        state.price_ticks = max(1, round(state.price_ticks * shock))
        half_spread = max(1, round(state.price_ticks * state.spread_bps / 20000))
        bid_ticks = max(1, state.price_ticks - half_spread)
        ask_ticks = state.price_ticks + half_spread
        return Quote(
            symbol=state.symbol,
            bid=state.price(bid_ticks),
            ask=state.price(ask_ticks),
            last=state.price(state.price_ticks),
            bid_size=self._size(state),
            ask_size=self._size(state),
            open=state.price(state.open_ticks),
        )

    def _size(self, state: SimulatedInstrument) -> Decimal:
        lots = max(
            1, round(float(state.typical_size / state.lot_size) * self.random.uniform(0.2, 1.8))
        )
        return (state.lot_size * lots).normalize()


@dataclass(frozen=True, slots=True)
class RecordedTick:
    ts_ms: int
    quote: Quote


REPLAY_COLUMNS = ("ts", "symbol", "bid", "ask", "last", "bid_size", "ask_size")


def read_replay(path: Path, *, known_symbols: set[str]) -> list[RecordedTick]:
    """Read and validate a whole CSV of recorded ticks before anything is sent.

    Columns: ts (epoch milliseconds or ISO 8601 with a zone), symbol, bid, ask, last,
    bid_size, ask_size. Raises FeedError naming the line of the first bad row.
    """
    try:
        handle = path.open(newline="")
    except OSError as error:
        raise FeedError(f"cannot open {path}: {error.strerror}") from error
    with handle:
        reader = csv.DictReader(handle)
        missing = set(REPLAY_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise FeedError(f"{path}: missing columns {', '.join(sorted(missing))}")
        rows = [_parse_row(row, reader.line_num, path, known_symbols) for row in reader]
    if not rows:
        raise FeedError(f"{path}: no ticks")
    rows.sort(key=lambda row: row[0])  # stable: rows with one time keep their file order
    opens: dict[str, Decimal] = {}
    return [
        RecordedTick(
            ts_ms, Quote(symbol=symbol, open=opens.setdefault(symbol, numbers["last"]), **numbers)
        )
        for ts_ms, symbol, numbers in rows
    ]


def _parse_row(
    row: dict[str, str], line: int, path: Path, known: set[str]
) -> tuple[int, str, dict[str, Decimal]]:
    where = f"{path}:{line}"
    symbol = (row.get("symbol") or "").strip()
    if symbol not in known:
        raise FeedError(f"{where}: unknown or inactive symbol {symbol!r}")
    numbers = {}
    for field in ("bid", "ask", "last", "bid_size", "ask_size"):
        try:
            value = Decimal((row.get(field) or "").strip())
        except InvalidOperation:
            raise FeedError(f"{where}: {field} is not a number: {row.get(field)!r}") from None
        if not value.is_finite() or value <= 0:
            raise FeedError(f"{where}: {field} must be a positive number")
        numbers[field] = value
    if numbers["bid"] > numbers["ask"]:
        raise FeedError(f"{where}: bid {numbers['bid']} above ask {numbers['ask']}")
    return _parse_ts(row.get("ts") or "", where), symbol, numbers


def _parse_ts(raw: str, where: str) -> int:
    raw = raw.strip()
    if raw.isdigit():
        return int(raw)
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise FeedError(f"{where}: ts {raw!r} is neither epoch ms nor ISO 8601") from None
    if moment.tzinfo is None:
        raise FeedError(f"{where}: ts {raw!r} has no time zone")
    return int(moment.timestamp() * 1000)


def replay_schedule(ticks: list[RecordedTick], *, speed: float) -> Iterator[tuple[float, Quote]]:
    """Yield (seconds after start, quote), the recorded gaps divided by `speed`."""
    first = ticks[0].ts_ms
    for tick in ticks:
        yield (tick.ts_ms - first) / 1000 / speed, tick.quote
