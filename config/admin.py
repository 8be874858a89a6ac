"""The admin site: Django's own, with an index page that shows how the replies are doing, which
conversations wait for a person, and whether the fallback template is approved."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.template.response import TemplateResponse

from outbound.dashboard import admin_dashboard
from outbound.selectors import contacts_waiting_for_person, outbound_jobs_overview
from outbound.services.templates import fallback_template_health


class WhatsAppAdminSite(admin.AdminSite):
    site_header = "WhatsApp replies"
    site_title = "WhatsApp replies admin"
    index_title = "Overview"
    index_template = "admin/whatsapp_index.html"

    def index(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> TemplateResponse:
        context = dict(extra_context or {})
        if request.user.has_perm("outbound.view_outboundjob") or request.user.has_perm(
            "outbound.change_outboundjob"
        ):
            context["jobs_overview"] = outbound_jobs_overview()
            # Replies outside the 24-hour window need the fallback template: say so when Meta stopped it.
            context["template_health"] = fallback_template_health()
            context["dashboard"] = admin_dashboard()
        if request.user.has_perm("outbound.view_contact") or request.user.has_perm("outbound.change_contact"):
            context["waiting_for_person"] = contacts_waiting_for_person()
        return super().index(request, context)
