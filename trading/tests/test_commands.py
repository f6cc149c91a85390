import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from trading.models import Instrument


@pytest.mark.django_db
def test_halt_and_resume_change_the_status(instrument, capsys):
    listed = instrument()
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
