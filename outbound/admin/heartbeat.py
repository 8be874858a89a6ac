"""When each worker host last finished a run: /healthz reads the same rows."""

from __future__ import annotations

from django.contrib import admin

from outbound.admin.permissions import ReadOnlyPermissions
from outbound.models import WorkerHeartbeat


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(ReadOnlyPermissions, admin.ModelAdmin):
    """When each worker host last finished a run: /healthz reads the same rows."""

    list_display = ["worker_id", "last_finished_at", "last_summary"]
    readonly_fields = ["worker_id", "last_finished_at", "last_summary"]
    # A retired host's row may go; the worker writes a new one on its next run.
    deletable = True
