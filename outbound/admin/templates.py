"""What Meta last said about the message templates (webhooks, `check_whatsapp_template`, send errors)."""

from __future__ import annotations

from django.contrib import admin

from outbound.admin.permissions import ReadOnlyPermissions
from outbound.models import WhatsAppTemplate


@admin.register(WhatsAppTemplate)
class WhatsAppTemplateAdmin(ReadOnlyPermissions, admin.ModelAdmin):
    """Read-only: Meta owns these facts; fix a template in WhatsApp Manager, then run check_whatsapp_template."""

    list_display = ["name", "language", "status", "category", "source", "updated_at"]
    list_filter = ["status", "category", "source"]
    search_fields = ["name"]
    readonly_fields = [
        "name",
        "language",
        "status",
        "category",
        "reason",
        "template_id",
        "source",
        "updated_at",
    ]
    # A template deleted in WhatsApp Manager may go; the next webhook or check writes it again.
    deletable = True
