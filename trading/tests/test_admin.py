"""Operators halt and resume instruments from the admin, through the service."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from trading.models import Instrument

pytestmark = pytest.mark.django_db


def test_admin_halts_and_resumes_selected_instruments(client, make_instrument):
    market = make_instrument()
    admin = get_user_model().objects.create_superuser("boss", password="x")  # noqa: S106
    client.force_login(admin)
    url = "/admin/trading/instrument/"
    for action, status in (("instruments_halted", "halted"), ("instruments_open", "open")):
        response = client.post(
            url, {"action": action, "_selected_action": [market.pk]}, follow=True
        )
        assert response.status_code == 200
        assert Instrument.objects.get(pk=market.pk).status == status
        assert f"{market.symbol}: now {status}" in response.content.decode()
