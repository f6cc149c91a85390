"""Admin: what the processes are doing. Dead-lettered records (kept by the sink trading
registers with the workers' base, `trading.dead_letters`), the matcher's checkpoints and the
relay's cursors read-only, and one page, "Processes and checkpoints", with every worker's live
report (`tredye.status`: lag, last progress, connection), the platform's degraded parts, the
checkpoints and the oldest command still waiting for the matcher."""

from __future__ import annotations

import time

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path

from accounts.admin import ReadOnlyAdminMixin
from trading import selectors
from trading.models import DeadLetter, MatcherCheckpoint, RelayCursor
from tredye import status


@admin.register(DeadLetter)
class DeadLetterAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "created_at", "worker", "topic", "partition", "offset", "reason"]
    list_filter = ["worker", ("created_at", admin.DateFieldListFilter)]
    search_fields = ["=topic", "reason"]
    show_full_result_count = False


class CheckpointAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["topic", "partition", "offset", "topic_id", "updated_at"]
    ordering = ["topic", "partition"]


@admin.register(RelayCursor)
class RelayCursorAdmin(CheckpointAdmin):
    pass


@admin.register(MatcherCheckpoint)
class MatcherCheckpointAdmin(CheckpointAdmin):
    """Also serves the "Processes and checkpoints" page (`admin:trading_processes`)."""

    def get_urls(self) -> list:
        own = [
            path(
                "processes/",
                self.admin_site.admin_view(self.processes_view),
                name="trading_processes",
            )
        ]
        return own + super().get_urls()

    def processes_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        now = time.time()
        platform = status.platform_status()
        workers = [
            {**report, "reported_s_ago": max(0.0, now - float(report.get("at", now)))}
            for _, report in sorted(platform["workers"].items())
        ]
        context = {
            **self.admin_site.each_context(request),
            "title": "Processes and checkpoints",
            "opts": self.opts,
            "workers": workers,
            "degraded": platform["degraded"],
            "checkpoints": MatcherCheckpoint.objects.order_by("topic", "partition"),
            "cursors": RelayCursor.objects.order_by("topic", "partition"),
            "queue_age_s": selectors.order_queue_age_s(),
            "dead_letters": DeadLetter.objects.order_by("-pk")[:10],
        }
        return TemplateResponse(request, "admin/trading/processes.html", context)
