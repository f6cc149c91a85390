"""Small pieces of HTML the back office's pages share: links to other admin pages and tables."""

from __future__ import annotations

from collections.abc import Iterable

from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from accounts.models import Account


def admin_link(name: str, pk: object, text: object) -> SafeString:
    """A link to the admin page of one row: `name` is "app_model"."""
    return format_html('<a href="{}">{}</a>', reverse(f"admin:{name}_change", args=[pk]), text)


def account_link(account: Account) -> SafeString:
    return admin_link("accounts_account", account.pk, account)


def search_link(name: str, query: str, text: str) -> SafeString:
    """A link to a change list searched for `query`."""
    url = reverse(f"admin:{name}_changelist")
    return format_html('<a href="{}?q={}">{}</a>', url, query, text)


def table(headers: Iterable[str], rows: Iterable[tuple]) -> SafeString:
    """An HTML table; every cell escaped unless it is already safe."""
    head = format_html_join("", "<th>{}</th>", ((h,) for h in headers))
    body = format_html_join(
        "", "<tr>{}</tr>", ((format_html_join("", "<td>{}</td>", ((c,) for c in r)),) for r in rows)
    )
    return format_html("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", head, body)
