"""Assets, trading accounts and the double-entry ledger.

Every movement of money or securities is one `JournalEntry` whose `Posting` rows sum to zero
per asset; `Balance` is the running sum of an account's postings, one row per asset, kept in
the same transaction as the postings. PostgreSQL itself rejects an unbalanced entry, a
negative customer balance and any edit or delete of a ledger row (see the migrations and
docs/decisions/0003-ledger-platform-accounts.md).
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models.expressions import Combinable
from django.utils import timezone

# NUMERIC(38, 18): 20 integer digits and the finest precision an asset may have (18).
AMOUNT_MAX_DIGITS = 38
AMOUNT_DECIMAL_PLACES = 18


def amount_field(
    *, default: Decimal | int | type[models.NOT_PROVIDED] = models.NOT_PROVIDED
) -> models.DecimalField[Decimal | int | str | Combinable, Decimal]:
    """A ledger amount: NUMERIC(38, 18), never a float."""
    return models.DecimalField(
        max_digits=AMOUNT_MAX_DIGITS, decimal_places=AMOUNT_DECIMAL_PLACES, default=default
    )


class Asset(models.Model):
    """Something an account can hold: a currency, a share, a coin."""

    code = models.CharField(max_length=16, unique=True)
    name = models.CharField(max_length=64)
    # Decimal places an amount of this asset may carry; more is rejected, never rounded.
    precision = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["code"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(precision__lte=18), name="asset_precision_at_most_18"
            ),
        ]

    def __str__(self) -> str:
        return self.code

    def is_used(self) -> bool:
        """Whether any row refers to this asset: a balance, a posting, an instrument (any model
        with a foreign key to it, hidden ones included). From then on its precision is fixed:
        amounts were booked, held and rounded to it. PostgreSQL refuses the change too
        (accounts migration 0007, trading migration 0007)."""
        if self.pk is None:
            return False
        fields = [
            relation.field
            for relation in self._meta.get_fields(include_hidden=True)
            # The reverse side of another model's foreign key (or one-to-one) to this one.
            if isinstance(relation, models.ForeignObjectRel)
            and relation.auto_created
            and not relation.concrete
        ]
        # Indexed references first: postings have no index by asset (decision 0008), and a
        # used asset has a balance anyway.
        # (django-stubs omits Field.db_index, which Field.__init__ sets.)
        for field in sorted(fields, key=lambda field: not field.db_index):  # type: ignore[attr-defined]
            if field.model._default_manager.filter(**{field.name: self.pk}).exists():
                return True
        return False

    def clean(self) -> None:
        """Refuse a change of a used asset's precision (what a form sees as a field error)."""
        super().clean()
        if self.pk is None:
            return
        stored = Asset.objects.filter(pk=self.pk).values_list("precision", flat=True).first()
        if stored is not None and stored != self.precision and self.is_used():
            raise ValidationError(
                {
                    "precision": (
                        f"{self.code} is in use (balances, postings or instruments refer to it): "
                        f"its precision stays {stored}. Create a new asset instead."
                    )
                },
                code="asset_in_use",
            )


class Account(models.Model):
    """A trading account (one per user) or one of the platform's own accounts."""

    class Kind(models.TextChoices):
        CUSTOMER = "customer", "Customer"
        # The world outside the venue: deposits come from it, withdrawals go to it. Its
        # balances are the negative of everything customers brought in, so they may go below
        # zero; every other account's may not.
        EXTERNAL = "external", "External (deposits and withdrawals)"
        FEES = "fees", "Fees collected"
        CLEARING = "clearing", "Clearing"

    class Status(models.TextChoices):
        ACTIVE = "active", "Active"
        # Keeps its money; can place no new orders and withdraw nothing.
        FROZEN = "frozen", "Frozen"

    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.CUSTOMER)
    user = models.OneToOneField(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="trading_account",
    )
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.ACTIVE)
    status_reason = models.CharField(max_length=255, blank=True)
    status_changed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["pk"]
        constraints = [
            # A customer account belongs to a user; a platform account to nobody.
            models.CheckConstraint(
                condition=(
                    models.Q(kind="customer", user__isnull=False)
                    | (~models.Q(kind="customer") & models.Q(user__isnull=True))
                ),
                name="account_user_iff_customer",
            ),
            # One account of each platform kind.
            models.UniqueConstraint(
                fields=["kind"],
                condition=~models.Q(kind="customer"),
                name="account_one_per_platform_kind",
            ),
            # Target of the composite foreign key from Balance (account_id, account_kind).
            models.UniqueConstraint(fields=["id", "kind"], name="account_id_kind_unique"),
            models.CheckConstraint(
                condition=models.Q(status__in=["active", "frozen"]), name="account_status_valid"
            ),
        ]

    def __str__(self) -> str:
        if self.kind == self.Kind.CUSTOMER and self.user is not None:
            return f"#{self.pk} {self.user.get_username()}"
        return f"#{self.pk} {self.kind}"

    @property
    def is_platform(self) -> bool:
        return self.kind != self.Kind.CUSTOMER

    @property
    def is_frozen(self) -> bool:
        return self.status == self.Status.FROZEN

    @property
    def may_go_negative(self) -> bool:
        return self.kind == self.Kind.EXTERNAL


class Bucket(models.TextChoices):
    """Where in a balance an amount sits."""

    AVAILABLE = "available", "Available"
    HELD = "held", "Held for open orders"
    PENDING = "pending", "Pending settlement"


class EntryKind(models.TextChoices):
    DEPOSIT = "deposit", "Deposit"
    WITHDRAWAL = "withdrawal", "Withdrawal"
    HOLD = "hold", "Hold"
    RELEASE = "release", "Release"
    TRADE = "trade", "Trade"
    FEE = "fee", "Fee"
    SETTLEMENT = "settlement", "Settlement"
    ADJUSTMENT = "adjustment", "Adjustment"


class JournalEntry(models.Model):
    """One movement: postings that sum to zero per asset. Append-only."""

    kind = models.CharField(max_length=16, choices=EntryKind.choices)
    # What caused it: an order, a trade, a bank transfer id, an operator's ticket.
    reference = models.CharField(max_length=128)
    memo = models.CharField(max_length=255, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-pk"]
        verbose_name_plural = "journal entries"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(kind__in=EntryKind.values), name="journal_entry_kind_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind} {self.reference}"


class Posting(models.Model):
    """A signed amount of one asset into (or out of) one bucket of one account. Append-only."""

    entry = models.ForeignKey(JournalEntry, on_delete=models.PROTECT, related_name="postings")
    # No index of their own: `posting_account_asset` leads with the account, and an asset's
    # postings are only looked up when an asset is deleted (which PROTECT refuses anyway).
    # Every posting of the order path writes each index, so each one costs (decision 0008).
    account = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="postings", db_index=False
    )
    asset = models.ForeignKey(
        Asset, on_delete=models.PROTECT, related_name="postings", db_index=False
    )
    bucket = models.CharField(max_length=16, choices=Bucket.choices)
    amount = amount_field()

    class Meta:
        ordering = ["pk"]
        indexes = [
            models.Index(fields=["account", "asset", "bucket"], name="posting_account_asset"),
            models.Index(fields=["account", "-entry"], name="posting_account_history"),
        ]
        constraints = [
            models.CheckConstraint(condition=~models.Q(amount=0), name="posting_amount_nonzero"),
            models.CheckConstraint(
                condition=models.Q(bucket__in=Bucket.values), name="posting_bucket_valid"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.account_id} {self.asset_id} {self.bucket} {self.amount}"


class Balance(models.Model):
    """The sum of an account's postings in one asset, bucket by bucket: one row to read."""

    # Indexed by `balance_account_asset`, which leads with it.
    account = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="balances", db_index=False
    )
    # A copy of account.kind, pinned to it by a composite foreign key (migration 0003), so the
    # non-negative checks below can exempt the `external` account without a join.
    account_kind = models.CharField(max_length=16, choices=Account.Kind.choices)
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="balances")
    available = amount_field(default=0)
    held = amount_field(default=0)
    pending = amount_field(default=0)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["account", "asset__code"]
        constraints = [
            models.UniqueConstraint(fields=["account", "asset"], name="balance_account_asset"),
            models.CheckConstraint(
                condition=models.Q(account_kind="external") | models.Q(available__gte=0),
                name="balance_available_non_negative",
            ),
            models.CheckConstraint(
                condition=models.Q(account_kind="external") | models.Q(held__gte=0),
                name="balance_held_non_negative",
            ),
            models.CheckConstraint(
                condition=models.Q(account_kind="external") | models.Q(pending__gte=0),
                name="balance_pending_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.account_id} {self.asset_id}"

    @property
    def total(self) -> Decimal:
        return self.available + self.held + self.pending


class IdempotencyKey(models.Model):
    """A caller's key for one ledger call: the hash of its arguments and what it produced."""

    key = models.CharField(max_length=200, unique=True)
    request_hash = models.CharField(max_length=64)
    entry = models.OneToOneField(
        JournalEntry, on_delete=models.PROTECT, related_name="idempotency_key"
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-pk"]

    def __str__(self) -> str:
        return self.key
