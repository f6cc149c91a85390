"""Instruments, orders, trades and positions, and the matcher's own bookkeeping.

Prices and quantities are `Decimal` / `NUMERIC`; the matcher converts them to the engine's
integer ticks and lots at the boundary (trading/units.py). Every invariant that a single row
can carry is a database constraint.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.contrib.postgres.indexes import BrinIndex
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from accounts.models import Account, Asset, JournalEntry, amount_field
from trading.rules import RULE_FIELDS
from tredye import kafka


class Instrument(models.Model):
    """A tradable pair: `base` priced in `quote`, with its trading rules and fees."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        # New orders are rejected; cancels still work.
        HALTED = "halted", "Halted"
        CLOSED = "closed", "Closed"

    symbol = models.CharField(max_length=32, unique=True)
    name = models.CharField(max_length=128)
    base = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    quote = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    tick_size = models.DecimalField(max_digits=20, decimal_places=10)
    lot_size = models.DecimalField(max_digits=20, decimal_places=10)
    # Order size limits in base units; 0 / null mean "one lot" / "no limit".
    min_quantity = models.DecimalField(max_digits=30, decimal_places=10, default=0)
    max_quantity = models.DecimalField(max_digits=30, decimal_places=10, null=True, blank=True)
    # Limit prices further than this percentage from the reference price are rejected; market
    # orders are protected (and buys held) at the edge of the band.
    price_band_pct = models.DecimalField(max_digits=6, decimal_places=2, default=Decimal("10"))
    # Fee rates on the quote amount of each fill, e.g. 0.0010 for 10 bps.
    maker_fee_rate = models.DecimalField(max_digits=8, decimal_places=6, default=Decimal("0"))
    taker_fee_rate = models.DecimalField(max_digits=8, decimal_places=6, default=Decimal("0"))
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    # Bumped by PostgreSQL whenever a rule changes (trading migration 0008), whatever path
    # changed it: the placement write checks this one number, not the rules again.
    rules_version = models.PositiveBigIntegerField(default=1, editable=False)
    # The price the band is centred on, as the reference feed last set it (marketdata calls
    # `trading.services.reference_prices_set`); without one, the book's last trade is used.
    reference_price = models.DecimalField(
        max_digits=30, decimal_places=10, null=True, blank=True, editable=False
    )
    reference_price_at = models.DateTimeField(null=True, blank=True, editable=False)
    # Trades settle this many business days after their trade date (T+N): 1 for stocks, 0 for
    # crypto. A trade's settlement date is fixed when it is made (`trading.business_days`).
    settlement_days = models.PositiveSmallIntegerField(
        default=1, help_text="T+N: business days from trade date to settlement (0: same day)."
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["symbol"]
        constraints = [
            models.CheckConstraint(condition=Q(tick_size__gt=0), name="tick_size_positive"),
            models.CheckConstraint(condition=Q(lot_size__gt=0), name="lot_size_positive"),
            models.CheckConstraint(condition=~Q(base=F("quote")), name="base_differs_from_quote"),
            # Channel and group names allow only these characters.
            models.CheckConstraint(
                condition=Q(symbol__regex=r"^[A-Z0-9][A-Z0-9._-]*$"),
                name="symbol_charset",
            ),
            models.CheckConstraint(
                condition=Q(min_quantity__gte=0), name="instrument_min_quantity_not_negative"
            ),
            models.CheckConstraint(
                condition=Q(max_quantity__isnull=True) | Q(max_quantity__gt=0),
                name="instrument_max_quantity_positive",
            ),
            models.CheckConstraint(
                condition=Q(price_band_pct__gt=0) & Q(price_band_pct__lt=100),
                name="instrument_price_band_in_range",
            ),
            models.CheckConstraint(
                condition=Q(maker_fee_rate__gte=0)
                & Q(maker_fee_rate__lt=1)
                & Q(taker_fee_rate__gte=0)
                & Q(taker_fee_rate__lt=1),
                name="instrument_fee_rates_in_range",
            ),
        ]

    def __str__(self) -> str:
        return self.symbol

    # The trading rules: changed only by `trading.reference.instrument_rules_change`, which
    # applies them to new orders only (docs/decisions/0010-reference-data.md).
    RULES = RULE_FIELDS

    def is_used(self) -> bool:
        """Whether any order was ever placed on it: from then on its base and quote are fixed
        (PostgreSQL refuses the change too, trading migration 0007)."""
        return self.pk is not None and Order.objects.filter(instrument_id=self.pk).exists()

    def clean(self) -> None:
        """Refuse what a form must not change on an existing instrument: its base and quote
        once used, its trading rules ever (they change through the rules service)."""
        super().clean()
        if self.pk is None:
            return
        stored = Instrument.objects.filter(pk=self.pk).first()
        if stored is None:
            return
        errors: dict[str, str] = {}
        for name in ("base_id", "quote_id"):
            if getattr(stored, name) != getattr(self, name) and self.is_used():
                errors[name.removesuffix("_id")] = (
                    f"{self.symbol} has orders: its {name.removesuffix('_id')} asset cannot "
                    "change. Create a new instrument instead."
                )
        for name in self.RULES:
            if getattr(stored, name) != getattr(self, name):
                errors[name] = (
                    "Trading rules change through “Change trading rules” (the rules service), "
                    "which applies them to new orders only."
                )
        if errors:
            raise ValidationError(errors, code="reference_data_fixed")


class BookState(models.Model):
    """What the matcher must remember of a book besides its open orders. Matcher-only."""

    instrument = models.OneToOneField(
        Instrument, on_delete=models.PROTECT, primary_key=True, related_name="book_state"
    )
    # The engine's trade counter and the last trade price (which stops trigger on).
    trade_seq = models.BigIntegerField(default=0)
    last_price = models.DecimalField(max_digits=30, decimal_places=10, null=True, blank=True)
    # Priority counter: an order that joins the back of a queue takes the next number.
    book_seq = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(default=timezone.now)
    # The answer to the latest `book.digest` command (reconciliation): the digest of the
    # matcher's in-memory book and, in the same transaction, of the open order rows, so the
    # two describe one instant. `digest_request` is the outbox id of the command answered.
    digest_request = models.BigIntegerField(default=0)
    memory_digest = models.CharField(max_length=64, blank=True, default="")
    rows_digest = models.CharField(max_length=64, blank=True, default="")
    digest_orders = models.IntegerField(default=0)
    digest_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"book state of {self.instrument_id}"


class Order(models.Model):
    class Side(models.TextChoices):
        BUY = "buy", "Buy"
        SELL = "sell", "Sell"

    class Type(models.TextChoices):
        LIMIT = "limit", "Limit"
        MARKET = "market", "Market"
        STOP = "stop", "Stop (market)"
        STOP_LIMIT = "stop_limit", "Stop limit"

    class TimeInForce(models.TextChoices):
        GTC = "gtc", "Good till canceled"
        IOC = "ioc", "Immediate or cancel"
        FOK = "fok", "Fill or kill"
        DAY = "day", "Day"

    class Status(models.TextChoices):
        PENDING_NEW = "pending_new", "Pending new"
        NEW = "new", "New"
        PARTIALLY_FILLED = "partially_filled", "Partially filled"
        FILLED = "filled", "Filled"
        CANCELED = "canceled", "Canceled"
        REJECTED = "rejected", "Rejected"
        EXPIRED = "expired", "Expired"

    OPEN_STATUSES = (Status.PENDING_NEW, Status.NEW, Status.PARTIALLY_FILLED)
    FINAL_STATUSES = (Status.FILLED, Status.CANCELED, Status.REJECTED, Status.EXPIRED)

    # The foreign keys have no index of their own: `order_account_recent` and the client id's
    # unique index lead with the account, `order_open_by_book` with the instrument. An order's
    # status changes are not HOT updates, so every index is written again (decision 0008).
    account = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="orders", db_index=False
    )
    instrument = models.ForeignKey(
        Instrument, on_delete=models.PROTECT, related_name="orders", db_index=False
    )
    client_order_id = models.CharField(max_length=64)
    side = models.CharField(max_length=4, choices=Side.choices)
    type = models.CharField(max_length=10, choices=Type.choices)
    time_in_force = models.CharField(max_length=3, choices=TimeInForce.choices)
    post_only = models.BooleanField(default=False)
    # Total quantity (a partial cancel or a replace changes it); open = quantity - filled.
    quantity = models.DecimalField(max_digits=30, decimal_places=10)
    price = models.DecimalField(max_digits=30, decimal_places=10, null=True, blank=True)
    stop_price = models.DecimalField(max_digits=30, decimal_places=10, null=True, blank=True)
    # A market (or stop market) order runs as a limit IOC at this price: the band's edge.
    protection_price = models.DecimalField(max_digits=30, decimal_places=10, null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING_NEW)
    reason = models.CharField(max_length=64, blank=True)
    filled_quantity = models.DecimalField(max_digits=30, decimal_places=10, default=0)
    # Sum of price x quantity of the fills, exact; and the quote amounts booked (rounded).
    filled_notional = amount_field(default=0)
    filled_quote = amount_field(default=0)
    average_price = models.DecimalField(max_digits=30, decimal_places=10, null=True, blank=True)
    fees = amount_field(default=0)
    # The instrument's fee rates when the order was placed (`placement.new_order`): its fills
    # pay these and its hold covers the larger, whatever the instrument's rates become later
    # (docs/decisions/0010-reference-data.md). No default: every order states them.
    maker_fee_rate = models.DecimalField(max_digits=8, decimal_places=6)
    taker_fee_rate = models.DecimalField(max_digits=8, decimal_places=6)
    # What this order still holds of the account's funds (quote for a buy, base for a sell).
    # The matcher owns `held`; a replace that needs more holds the extra first in
    # `held_for_replace` (written by order_replace), which the matcher moves into `held` (or
    # releases) when it applies that replace.
    held = amount_field(default=0)
    held_for_replace = amount_field(default=0)
    # Priority in its book: a rebuilt book loads open orders in this order.
    book_seq = models.BigIntegerField(null=True, blank=True)
    # Cancel/replace commands are numbered per order; the matcher applies each once.
    command_seq = models.PositiveIntegerField(default=0)
    applied_seq = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)
    accepted_at = models.DateTimeField(null=True, blank=True)
    triggered_at = models.DateTimeField(null=True, blank=True)
    last_fill_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-pk"]
        indexes = [
            models.Index(
                fields=["instrument", "book_seq"],
                condition=Q(status__in=["new", "partially_filled"]),
                name="order_open_by_book",
            ),
            models.Index(fields=["account", "-id"], name="order_account_recent"),
            # The back office finds an order by its client order id, whatever the account.
            models.Index(fields=["client_order_id"], name="order_client_order_id"),
            # Date filters of the back office: a BRIN index costs the order path next to nothing.
            BrinIndex(fields=["created_at"], name="order_created_brin"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "client_order_id"], name="order_client_id_unique_per_account"
            ),
            models.CheckConstraint(condition=Q(quantity__gt=0), name="order_quantity_positive"),
            models.CheckConstraint(
                condition=Q(filled_quantity__gte=0) & Q(filled_quantity__lte=F("quantity")),
                name="order_filled_within_quantity",
            ),
            models.CheckConstraint(
                condition=Q(price__isnull=True) | Q(price__gt=0), name="order_price_positive"
            ),
            models.CheckConstraint(
                condition=Q(stop_price__isnull=True) | Q(stop_price__gt=0),
                name="order_stop_price_positive",
            ),
            models.CheckConstraint(condition=Q(held__gte=0), name="order_held_not_negative"),
            models.CheckConstraint(
                condition=Q(held_for_replace__gte=0), name="order_held_for_replace_not_negative"
            ),
            models.CheckConstraint(condition=Q(fees__gte=0), name="order_fees_not_negative"),
            models.CheckConstraint(
                condition=Q(maker_fee_rate__gte=0)
                & Q(maker_fee_rate__lt=1)
                & Q(taker_fee_rate__gte=0)
                & Q(taker_fee_rate__lt=1),
                name="order_fee_rates_in_range",
            ),
            # A closed order holds nothing.
            models.CheckConstraint(
                condition=Q(status__in=["pending_new", "new", "partially_filled"]) | Q(held=0),
                name="order_closed_holds_nothing",
            ),
            models.CheckConstraint(condition=Q(side__in=["buy", "sell"]), name="order_side_valid"),
            models.CheckConstraint(
                condition=Q(type__in=["limit", "market", "stop", "stop_limit"]),
                name="order_type_valid",
            ),
            models.CheckConstraint(
                condition=Q(time_in_force__in=["gtc", "ioc", "fok", "day"]),
                name="order_tif_valid",
            ),
            models.CheckConstraint(
                condition=Q(
                    status__in=[
                        "pending_new",
                        "new",
                        "partially_filled",
                        "filled",
                        "canceled",
                        "rejected",
                        "expired",
                    ]
                ),
                name="order_status_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.side} {self.quantity} {self.instrument_id} {self.status}"

    @property
    def open_quantity(self) -> Decimal:
        if self.status in self.FINAL_STATUSES:
            return Decimal(0)
        return self.quantity - self.filled_quantity

    @property
    def is_open(self) -> bool:
        return self.status in self.OPEN_STATUSES


class Trade(models.Model):
    """One fill between a resting (maker) and an incoming (taker) order, at the maker's price."""

    # Indexed by `trade_seq_per_instrument`; buyer and seller by their `*_recent` indexes.
    instrument = models.ForeignKey(
        Instrument, on_delete=models.PROTECT, related_name="trades", db_index=False
    )
    # Per-instrument trade number: 1, 2, 3, ... (the `seq` of its message on `trades`).
    seq = models.BigIntegerField()
    maker_order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="+")
    taker_order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="+")
    buyer = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="+", db_index=False)
    seller = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="+", db_index=False)
    price = models.DecimalField(max_digits=30, decimal_places=10)
    quantity = models.DecimalField(max_digits=30, decimal_places=10)
    # The quote amount booked: the buyer pays it, the seller receives it (fees apart).
    quote_amount = amount_field()
    aggressor_side = models.CharField(max_length=4, choices=Order.Side.choices)
    buyer_fee = amount_field(default=0)
    seller_fee = amount_field(default=0)
    executed_at = models.DateTimeField(default=timezone.now)
    # Trade date plus the instrument's settlement days in business days (trading.business_days).
    settlement_date = models.DateField()
    # The settlement that moved each side's proceeds from pending to available: set once, in
    # the settlement's own transaction (a trade side is settled exactly once).
    buyer_settlement = models.ForeignKey(
        "Settlement",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    seller_settlement = models.ForeignKey(
        "Settlement",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )

    class Meta:
        ordering = ["-pk"]
        indexes = [
            models.Index(fields=["buyer", "-id"], name="trade_buyer_recent"),
            models.Index(fields=["seller", "-id"], name="trade_seller_recent"),
            # The sides not settled yet, by the date they fall due: small once settled.
            models.Index(
                fields=["settlement_date"],
                condition=Q(buyer_settlement__isnull=True),
                name="trade_buyer_unsettled",
            ),
            models.Index(
                fields=["settlement_date"],
                condition=Q(seller_settlement__isnull=True),
                name="trade_seller_unsettled",
            ),
            models.Index(fields=["buyer_settlement"], name="trade_buyer_settlement"),
            models.Index(fields=["seller_settlement"], name="trade_seller_settlement"),
            BrinIndex(fields=["executed_at"], name="trade_executed_brin"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["instrument", "seq"], name="trade_seq_per_instrument"),
            models.CheckConstraint(condition=Q(price__gt=0), name="trade_price_positive"),
            models.CheckConstraint(condition=Q(quantity__gt=0), name="trade_quantity_positive"),
            models.CheckConstraint(condition=~Q(buyer=F("seller")), name="trade_not_with_itself"),
        ]

    def __str__(self) -> str:
        return f"{self.instrument_id}#{self.seq} {self.quantity}@{self.price}"


class Position(models.Model):
    """An account's net holding from trading one instrument, its average cost and P&L."""

    # Indexed by `position_account_instrument`, which leads with it.
    account = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="positions", db_index=False
    )
    instrument = models.ForeignKey(Instrument, on_delete=models.PROTECT, related_name="positions")
    quantity = models.DecimalField(max_digits=30, decimal_places=10, default=0)
    average_cost = amount_field(default=0)
    realized_pnl = amount_field(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["account", "instrument"]
        constraints = [
            models.UniqueConstraint(
                fields=["account", "instrument"], name="position_account_instrument"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.account_id} {self.instrument_id} {self.quantity}"


class PartitionOffset(models.Model):
    """An offset in one partition of one (physical) topic, kept in PostgreSQL."""

    topic = models.CharField(max_length=200)
    partition = models.IntegerField()
    offset = models.BigIntegerField()
    # The broker's id of the topic the offset belongs to: a topic deleted and created again, or
    # a broker that came back empty, has a new id, and an offset of the old one means nothing
    # there. Empty when unknown (written before ids were kept, or a broker without topic ids).
    topic_id = models.CharField(max_length=64, blank=True, default="")
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


class MatcherCheckpoint(PartitionOffset):
    """The last offset of the `orders` topic whose effects are committed."""

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["topic", "partition"], name="checkpoint_partition"),
        ]


class Outbox(models.Model):
    """A message to produce to Kafka once its transaction has committed."""

    topic = models.CharField(max_length=32)  # logical name, e.g. "trades"
    key = models.CharField(max_length=64)
    type = models.CharField(max_length=32)
    seq = models.BigIntegerField()
    ts = models.BigIntegerField()  # epoch ms
    data = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)
    # When the broker acknowledged it (the last time it was sent).
    sent_at = models.DateTimeField(null=True, blank=True)
    # For a command (`orders`): when the matcher applied it, in its batch transaction. A command
    # is done only then; one sent but unapplied is sent again (the broker may lose history).
    applied_at = models.DateTimeField(null=True, blank=True)
    # Its place in the batch that applied it (1, 2, ...): (applied_at, applied_rank) is the
    # order in which the matcher applied the commands, which `manage.py replay` follows.
    applied_rank = models.IntegerField(null=True, blank=True)

    class Meta:
        ordering = ["pk"]
        indexes = [
            models.Index(
                fields=["topic", "id"], condition=Q(sent_at__isnull=True), name="outbox_unsent"
            ),
            # The commands the matcher has not applied yet: few at any time (see the relay).
            models.Index(
                fields=["created_at"],
                condition=Q(topic=kafka.ORDERS, applied_at__isnull=True),
                name="outbox_unapplied",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.topic} {self.key} {self.type}"


class RelayCursor(PartitionOffset):
    """The highest offset the relay knows it wrote to one partition (where a tail scan starts)."""

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["topic", "partition"], name="relay_cursor_partition"),
        ]


class StreamSequence(models.Model):
    """The last envelope `seq` the matcher used per topic and key (book, account events)."""

    topic = models.CharField(max_length=32)
    key = models.CharField(max_length=64)
    seq = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["topic", "key"], name="stream_sequence_key"),
        ]

    def __str__(self) -> str:
        return f"{self.topic} {self.key} {self.seq}"


class Holiday(models.Model):
    """A weekday on which nothing settles (weekends never do). Admins keep the list."""

    date = models.DateField(unique=True)
    name = models.CharField(max_length=128)

    class Meta:
        ordering = ["date"]

    def __str__(self) -> str:
        return f"{self.date} {self.name}"


class Settlement(models.Model):
    """One account's net of one asset moved from pending to available for the trades due on a
    date, by one balanced journal entry (shared by the account's settlements of that run)."""

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="settlements")
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    date = models.DateField()
    amount = amount_field()
    trade_count = models.PositiveIntegerField()
    entry = models.ForeignKey(JournalEntry, on_delete=models.PROTECT, related_name="settlements")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-date", "-pk"]
        indexes = [models.Index(fields=["account", "-date"], name="settlement_account_date")]
        constraints = [
            models.UniqueConstraint(fields=["entry", "asset"], name="settlement_entry_asset"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="settlement_amount_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.date} #{self.account_id} {self.amount} {self.asset_id}"


class DailyStatement(models.Model):
    """An account's statement of one trading day, stored when the day ends: opening and
    closing balances, trades, fees and realised P&L (`data`, built by trading.statements)."""

    account = models.ForeignKey(Account, on_delete=models.PROTECT, related_name="statements")
    date = models.DateField()
    data = models.JSONField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-date"]
        constraints = [
            models.UniqueConstraint(fields=["account", "date"], name="statement_account_date"),
        ]

    def __str__(self) -> str:
        return f"statement #{self.account_id} {self.date}"


class DeadLetter(models.Model):
    """A Kafka record a worker could not handle, as it also went to the dead-letter topic."""

    worker = models.CharField(max_length=64)
    topic = models.CharField(max_length=200)
    partition = models.IntegerField(null=True, blank=True)
    offset = models.BigIntegerField(null=True, blank=True)
    key = models.TextField(blank=True)
    value = models.TextField(blank=True)
    reason = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-pk"]
        indexes = [BrinIndex(fields=["created_at"], name="dead_letter_created_brin")]

    def __str__(self) -> str:
        return f"{self.worker} {self.topic}[{self.partition}]@{self.offset}"


class ReconciliationRun(models.Model):
    """One pass of reconciliation: what it checked and how it ended."""

    class Status(models.TextChoices):
        RUNNING = "running", "Running"
        CLEAN = "clean", "Clean"
        BREAKS = "breaks", "Breaks found"
        FAILED = "failed", "Failed"

    started_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.RUNNING)
    # Who asked: "beat", "command", or an operator's name.
    trigger = models.CharField(max_length=150)
    # What was checked and counted, and what could not be (e.g. history the broker lost).
    checked = models.JSONField(default=dict)
    report = models.TextField(blank=True)

    class Meta:
        ordering = ["-pk"]

    def __str__(self) -> str:
        return f"reconciliation #{self.pk} {self.status}"


class ReconciliationBreak(models.Model):
    """A broken invariant, found by a run and shown until an operator resolves it with a note.
    The same break found again by later runs is the same row (`last_seen_at` moves)."""

    # A plain text: the kinds live in trading.reconcile (one home), not in a migration.
    kind = models.CharField(max_length=48)
    # What it is about, e.g. "account #12 USD" or "AAPL trade 17": with `kind`, its identity.
    subject = models.CharField(max_length=200)
    detail = models.TextField()
    # The objects involved, by kind and id, e.g. {"account": 12, "asset": "USD"}.
    involved = models.JSONField(default=dict)
    run = models.ForeignKey(ReconciliationRun, on_delete=models.PROTECT, related_name="breaks")
    found_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)
    resolved_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    resolution_note = models.TextField(blank=True)

    class Meta:
        ordering = ["-pk"]
        indexes = [
            models.Index(
                fields=["-found_at"], condition=Q(resolved_at__isnull=True), name="break_open"
            )
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "subject"],
                condition=Q(resolved_at__isnull=True),
                name="break_open_once",
            ),
            models.CheckConstraint(
                condition=Q(resolved_at__isnull=True) | ~Q(resolution_note=""),
                name="break_resolved_with_note",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind}: {self.subject}"
