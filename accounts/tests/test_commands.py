"""The operators' commands: deposit, withdraw, balances, ledger_check."""

from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from accounts import services
from testing.helpers import balance_of, ledger_state

pytestmark = pytest.mark.django_db


def run(*args: str) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_deposit_and_withdraw_commands(make_account, usd):
    account = make_account("alice")

    output = run(
        "deposit",
        "--user",
        "alice",
        "--asset",
        "usd",
        "--amount",
        "1500.00",
        "--reference",
        "wire 1",
        "--idempotency-key",
        "wire-1",
    )
    run(
        "deposit",
        "--user",
        "alice",
        "--asset",
        "USD",
        "--amount",
        "1500.00",
        "--reference",
        "wire 1",
        "--idempotency-key",
        "wire-1",
    )
    run(
        "withdraw",
        "--account",
        str(account.pk),
        "--asset",
        "USD",
        "--amount",
        "0.50",
        "--reference",
        "payout 1",
    )

    assert "Deposited 1,500.00 USD to account" in output
    assert "(alice)" in output
    assert "available 1,500.00 USD" in output
    assert balance_of(account, usd) == (Decimal("1499.50"), 0, 0)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--amount", "1.001"], "invalid_amount: USD allows 2 decimal places"),
        (["--amount", "-1"], "invalid_amount: amount must be positive"),
        (["--amount", "0"], "invalid_amount: amount must not be zero"),
        (["--amount", "ten"], "'ten' is not a decimal amount"),
        (["--amount", "1", "--asset", "DOGE"], "unknown_asset: unknown asset 'DOGE'"),
        (["--amount", "1", "--user", "nobody"], "user 'nobody' does not exist"),
        (["--amount", "1000"], "insufficient_funds"),
    ],
)
def test_withdraw_command_refuses_bad_input_and_changes_nothing(
    make_account, usd, arguments, message
):
    make_account("bob", funds={usd: "10"})
    before = ledger_state()
    base = {"--user": "bob", "--asset": "USD", "--reference": "r"}
    given = dict(zip(arguments[::2], arguments[1::2], strict=True))
    flat = [item for pair in (base | given).items() for item in pair]

    with pytest.raises(CommandError, match=message):
        run("withdraw", *flat)

    assert ledger_state() == before


def test_withdraw_command_refuses_a_frozen_account(make_account, usd):
    account = make_account("carol", funds={usd: "10"})
    services.account_freeze(account=account)

    with pytest.raises(CommandError, match="account_frozen"):
        run("withdraw", "--user", "carol", "--asset", "USD", "--amount", "1", "--reference", "r")


def test_balances_command_prints_a_table(make_account, usd, btc):
    make_account("dave", funds={usd: "1234.5", btc: "0.25"})

    output = run("balances", "--user", "dave")
    with_platform = run("balances", "--platform", "--asset", "USD")

    lines = output.splitlines()
    assert lines[0].split() == [
        "account",
        "owner",
        "status",
        "asset",
        "available",
        "held",
        "pending",
        "total",
    ]
    assert lines[2].split()[1:] == [
        "dave",
        "active",
        "BTC",
        "0.25000000",
        "0.00000000",
        "0.00000000",
        "0.25000000",
    ]
    assert lines[3].split()[3:] == ["USD", "1,234.50", "0.00", "0.00", "1,234.50"]
    assert "(external)" in with_platform
    assert "-1,234.50" in with_platform


def test_ledger_check_passes_on_a_sound_ledger(make_account, usd):
    make_account(funds={usd: "5"})

    assert "ledger OK: 1 journal entries, 2 postings, 2 balances checked" in run("ledger_check")


def test_ledger_check_fails_with_a_report_of_each_break(make_account, usd):
    account = make_account("erin", funds={usd: "5"})
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE accounts_balance SET available = 7 WHERE account_id = %s", [account.pk]
        )
    out = StringIO()

    with pytest.raises(CommandError, match="2 ledger invariant break"):
        call_command("ledger_check", stdout=out)

    report = out.getvalue()
    assert "ledger BROKEN" in report
    assert "asset_sums_to_zero:\n  - USD: balances over all accounts sum to 2.00" in report
    assert "balance_equals_postings:\n  - account #" in report
    assert "(erin) USD: balance available/held/pending is 7.00/0.00/0.00" in report
