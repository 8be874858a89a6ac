"""The business's knowledge and the reply settings, edited by staff with the ordinary add/change forms.

Staff need the usual model permissions (view/add/change/delete knowledge entry, change reply settings).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from outbound.models import KnowledgeEntry, ReplySettings
from outbound.services.knowledge import knowledge_entries_set_active
from outbound.worker_config import system_prompt_from_settings


@admin.register(KnowledgeEntry)
class KnowledgeEntryAdmin(admin.ModelAdmin):
    list_display = ["title", "body_start", "is_active", "updated_at"]
    list_filter = ["is_active", "updated_at"]
    search_fields = ["title", "body"]
    search_help_text = "Words of the title or of the text."
    ordering = ["title"]
    list_per_page = 100
    fields = ["title", "body", "is_active", "created_at", "updated_at"]
    readonly_fields = ["created_at", "updated_at"]
    actions = ["activate", "deactivate"]

    @admin.display(description="text")
    def body_start(self, entry: KnowledgeEntry) -> str:
        return Truncator(" ".join(entry.body.split())).chars(90)

    @admin.action(description="Give the selected entries to the model (activate)", permissions=["change"])
    def activate(self, request: HttpRequest, queryset: QuerySet[KnowledgeEntry]) -> None:
        self._set_active(request, queryset, active=True)

    @admin.action(
        description="Stop giving the selected entries to the model (deactivate)", permissions=["change"]
    )
    def deactivate(self, request: HttpRequest, queryset: QuerySet[KnowledgeEntry]) -> None:
        self._set_active(request, queryset, active=False)

    def _set_active(self, request: HttpRequest, queryset: QuerySet[KnowledgeEntry], *, active: bool) -> None:
        selected = list(queryset)
        changed = knowledge_entries_set_active(entries=queryset, active=active)
        state = "active" if active else "inactive"
        for entry in selected:
            if entry.is_active != active:
                self.log_change(request, entry, f"Made {state}")
        self.message_user(
            request,
            f"{changed} entr{'y' if changed == 1 else 'ies'} made {state}; "
            f"{len(selected) - changed} already {state}.",
            messages.SUCCESS,
        )


@admin.register(ReplySettings)
class ReplySettingsAdmin(admin.ModelAdmin):
    """One row: the list page goes straight to it (or to the form that creates it)."""

    fields = ["system_prompt", "default_prompt", "updated_at"]
    readonly_fields = ["default_prompt", "updated_at"]

    class Media:
        css = {"all": ["outbound/admin.css"]}

    def has_add_permission(self, request: HttpRequest) -> bool:
        return super().has_add_permission(request) and not ReplySettings.objects.exists()

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        row = ReplySettings.objects.first()
        if row is not None:
            return HttpResponseRedirect(reverse("admin:outbound_replysettings_change", args=[row.pk]))
        if self.has_add_permission(request):
            return HttpResponseRedirect(reverse("admin:outbound_replysettings_add"))
        return super().changelist_view(request, extra_context)

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, str | list[str]]:
        # Staff start from the prompt in use rather than from an empty box.
        return {"system_prompt": system_prompt_from_settings()}

    @admin.display(description="default (used while the prompt above is empty)")
    def default_prompt(self, row: ReplySettings | None) -> SafeString:
        return format_html('<pre class="job-pre">{}</pre>', system_prompt_from_settings())
