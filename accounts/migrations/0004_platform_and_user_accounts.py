"""Open the platform accounts, and a trading account for every user that exists already."""

from django.conf import settings
from django.db import migrations

PLATFORM_KINDS = ["external", "fees", "clearing"]


def open_accounts(apps, schema_editor):
    Account = apps.get_model("accounts", "Account")
    User = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    for kind in PLATFORM_KINDS:
        Account.objects.get_or_create(kind=kind, user=None)
    for user in User.objects.filter(trading_account__isnull=True):
        Account.objects.create(kind="customer", user=user)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_ledger_enforcement"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RunPython(open_accounts, migrations.RunPython.noop),
    ]
