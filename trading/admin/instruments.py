"""Admin: instruments. Status changes (halt, resume, close) and trading rules go through the
services and are written to the audit log; an instrument's base and quote are read-only once it
has orders, its rules always on the change form (the "Change trading rules" page calls
`instrument_rules_change`); its settlement days are an ordinary field."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template import engines
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from trading.exceptions import TradingError
from trading.models import Instrument
from trading.reference import GRID_RULES, RULES, book_busy, instrument_rules_change, rule_field
from trading.services import instrument_status_set


def _status_action(status: str, verb: str):  # noqa: ANN202
    @admin.action(description=f"{verb} the selected instruments", permissions=["change"])
    def action(modeladmin, request, queryset) -> None:  # noqa: ANN001
        done = []
        for symbol in queryset.values_list("symbol", flat=True):
            try:
                instrument = instrument_status_set(symbol=symbol, status=status)
            except TradingError as error:
                modeladmin.message_user(request, f"{symbol}: {error.detail}", messages.ERROR)
                continue
            done.append(instrument.symbol)
            modeladmin.log_change(
                request, instrument, f"Status set to {status} through instrument_status_set."
            )
        if done:
            modeladmin.message_user(request, f"{', '.join(done)}: now {status}", messages.SUCCESS)

    action.__name__ = f"instruments_{status}"
    return action


class InstrumentRulesForm(forms.Form):
    """The trading rules, each as the model's own form field (digits, decimal places)."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        for name in RULES:
            form_field = rule_field(name).formfield()
            if form_field is None:  # only a field that is not editable has none
                raise TypeError(f"the trading rule {name} is not editable")
            self.fields[name] = form_field
        self.fields["max_quantity"].help_text = "Empty: no limit."
        for name in GRID_RULES:
            self.fields[name].help_text = "Changes only on a halted instrument without open orders."


_RULES_PAGE = """{% extends "admin/base_site.html" %}
{% load admin_urls %}
{% block breadcrumbs %}<div class="breadcrumbs">
<a href="{% url 'admin:index' %}">Home</a> ›
<a href="{% url opts|admin_urlname:'changelist' %}">{{ opts.verbose_name_plural|capfirst }}</a> ›
<a href="{% url opts|admin_urlname:'change' original.pk %}">{{ original }}</a> › Trading rules
</div>{% endblock %}
{% block content %}
<p>New rules apply to the orders placed from now on: an order keeps the fee rates it was placed
under, and the matching engine takes the new rules where the change stands among the book's
commands. {{ original }} is <strong>{{ original.status }}</strong>, with {{ open_orders }} open
order(s) and {{ waiting }} command(s) waiting for the matcher.</p>
<form method="post">{% csrf_token %}
{% if form.non_field_errors %}
<p class="errornote">{{ form.non_field_errors|join:" " }}</p>
{% endif %}
<fieldset class="module aligned">
{% for field in form %}<div class="form-row">{{ field.errors }}
<div class="flex-container">{{ field.label_tag }} {{ field }}</div>
{% if field.help_text %}<div class="help">{{ field.help_text }}</div>{% endif %}
</div>{% endfor %}
</fieldset>
<div class="submit-row"><input type="submit" class="default" value="Change rules"></div>
</form>
{% endblock %}
"""


@admin.register(Instrument)
class InstrumentAdmin(admin.ModelAdmin):
    # Settlement days are not a trading rule: an ordinary field, changed on the form (trades
    # made from then on carry the new settlement date).
    list_display = [
        "symbol",
        "name",
        "base",
        "quote",
        *Instrument.RULES,
        "settlement_days",
        "status",
    ]
    list_filter = ["status"]
    search_fields = ["symbol", "name"]
    # Status changes go through the service (halt / resume / close), not the edit form.
    readonly_fields = ["status"]
    actions = [
        _status_action(Instrument.Status.HALTED, "Halt"),
        _status_action(Instrument.Status.OPEN, "Resume"),
        _status_action(Instrument.Status.CLOSED, "Close"),
        "change_rules",
    ]

    def get_readonly_fields(self, request: HttpRequest, obj: Instrument | None = None) -> list:
        readonly = list(super().get_readonly_fields(request, obj))
        if obj is None:
            return readonly  # a new instrument takes its rules and assets here
        readonly += [*RULES, "trading_rules"]
        if obj.is_used():
            readonly += ["base", "quote"]
        return readonly

    @admin.display(description="Change trading rules")
    def trading_rules(self, obj: Instrument) -> str:
        url = reverse("admin:trading_instrument_rules", args=[obj.pk])
        return format_html('<a href="{}">Change trading rules…</a>', url)

    @admin.action(description="Change trading rules of the selected instrument…")
    def change_rules(self, request: HttpRequest, queryset: QuerySet[Instrument]):  # noqa: ANN201
        chosen = list(queryset.values_list("pk", flat=True)[:2])
        if len(chosen) != 1:
            self.message_user(request, "Select exactly one instrument.", messages.ERROR)
            return None
        return HttpResponseRedirect(reverse("admin:trading_instrument_rules", args=chosen))

    def get_urls(self) -> list:
        own = [
            path(
                "<path:object_id>/rules/",
                self.admin_site.admin_view(self.rules_view),
                name="trading_instrument_rules",
            )
        ]
        return own + super().get_urls()

    def rules_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The rules form: it changes nothing itself, `instrument_rules_change` does."""
        instrument = self.get_object(request, unquote(object_id))
        if instrument is None:
            # (ModelAdmin's own "doesn't exist" redirect; private, so django-stubs omits it.)
            return self._get_obj_does_not_exist_redirect(request, self.opts, object_id)  # type: ignore[attr-defined]
        if not self.has_change_permission(request, instrument):
            raise PermissionDenied
        if request.method == "POST":
            form = InstrumentRulesForm(request.POST)
            if form.is_valid():
                try:
                    instrument_rules_change(
                        symbol=instrument.symbol,
                        changed_by=request.user.get_username(),
                        **form.cleaned_data,
                    )
                except TradingError as error:
                    field = error.code.removeprefix("invalid_")
                    form.add_error(field if field in form.fields else None, error.detail)
                else:
                    self.log_change(
                        request,
                        instrument,
                        "Trading rules changed for new orders through instrument_rules_change: "
                        + ", ".join(f"{name}={value}" for name, value in form.cleaned_data.items()),
                    )
                    self.message_user(
                        request,
                        f"{instrument.symbol}: trading rules changed for new orders.",
                        messages.SUCCESS,
                    )
                    return HttpResponseRedirect(
                        reverse("admin:trading_instrument_change", args=[instrument.pk])
                    )
        else:
            form = InstrumentRulesForm(initial={name: getattr(instrument, name) for name in RULES})
        open_orders, waiting = book_busy(instrument)
        context = {
            **self.admin_site.each_context(request),
            "title": f"Trading rules of {instrument.symbol}",
            "opts": self.opts,
            "original": instrument,
            "form": form,
            "open_orders": open_orders,
            "waiting": waiting,
        }
        page = engines["django"].from_string(_RULES_PAGE)
        return TemplateResponse(request, page, context)
