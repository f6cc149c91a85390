from decimal import Decimal

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from trading.models import Instrument


@pytest.mark.django_db
def test_halt_and_resume_change_the_status(make_instrument, capsys):
    listed = make_instrument()
    call_command("halt", listed.symbol)
    listed.refresh_from_db()
    assert listed.status == Instrument.Status.HALTED
    call_command("resume", listed.symbol)
    listed.refresh_from_db()
    assert listed.status == Instrument.Status.OPEN
    assert f"{listed.symbol} is now open" in capsys.readouterr().out


@pytest.mark.django_db
def test_an_unknown_symbol_is_a_clear_error():
    with pytest.raises(CommandError, match="unknown instrument 'NOPE'"):
        call_command("halt", "NOPE")


@pytest.mark.django_db
def test_instrument_rules_shows_and_changes_rules_through_the_service(make_instrument, capsys):

    from trading.matching.commands import RULES_CHANGE
    from trading.models import Outbox

    listed = make_instrument()
    call_command("instrument_rules", listed.symbol)
    assert "tick_size        0.01" in capsys.readouterr().out
    call_command(
        "instrument_rules", listed.symbol.lower(), "--taker-fee-rate", "0.003",
        "--max-quantity", "none",
    )  # fmt: skip
    out = capsys.readouterr().out
    assert "taker_fee_rate   0.003  (changed)" in out
    listed.refresh_from_db()
    assert listed.taker_fee_rate == Decimal("0.003")
    assert Outbox.objects.filter(key=listed.symbol, type=RULES_CHANGE).count() == 1


@pytest.mark.django_db
def test_instrument_rules_refuses_a_tick_change_on_an_open_instrument(make_instrument):
    listed = make_instrument()
    with pytest.raises(CommandError, match="instrument_not_halted.*nothing changed"):
        call_command("instrument_rules", listed.symbol, "--tick-size", "0.05")
    with pytest.raises(CommandError, match="invalid_maker_fee_rate"):
        call_command("instrument_rules", listed.symbol, "--maker-fee-rate", "abc")
    listed.refresh_from_db()
    assert listed.tick_size.normalize() == Decimal("0.01")


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        (["--partitions", "0,x"], "--partitions takes numbers separated by commas, not '0,x'"),
        (["--partitions", "-1"], "--partitions takes partition numbers"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
    ],
)
def test_run_matcher_refuses_bad_arguments_before_it_starts(arguments, error):
    with pytest.raises(CommandError, match=error):
        call_command("run_matcher", *arguments)
