"""Contacts and their inbound messages, for staff to read (the ingest writes them); the bot's state and the
handoff controls come from `outbound.admin.handoff`."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest, HttpResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import Truncator

from outbound.admin.handoff import ContactHandoffMixin
from outbound.admin.numbers import BusinessNumberFilter, ContactBusinessNumberFilter
from outbound.admin.optout import ContactOptOutMixin, MarketingFilter, OptOutFilter
from outbound.admin.permissions import ReadOnlyPermissions
from outbound.admin.scale import IndexedSearch, IndexedSearchMixin
from outbound.models import Contact, InboundMessage, OutboundJob

INLINE_JOBS = 50
JOB_INLINE_FIELDS = (
    "status",
    "kind",
    "reply_start",
    "attempts",
    "last_attempt_at",
    "delivery_status",
    "send_as",
    "created_at",
)
# The conversation, the bot's state and the reply form are drawn above these by the page's template
# (templates/admin/outbound/contact/change_form.html).
CONTACT_FIELDS = (
    "phone_number_id",
    "wa_id",
    "user_id",
    "profile_name",
    "last_inbound_at",
    "bot_state",
    "opt_state",
    "marketing_state",
    "all_jobs",
    "created_at",
)
MESSAGE_FIELDS = (
    "wamid",
    "contact",
    "type",
    "text",
    "needs_reply",
    "timestamp",
    "received_at",
    "job",
    "media_status",
    "transcript",
    "media_description",
    "media_caption",
    "media_mime_type",
    "media_id",
    "media_sha256",
    "raw_display",
)


class ReadOnlyAdmin(ReadOnlyPermissions, admin.ModelAdmin):
    """Rows the ingest owns: staff may look, never add, edit or delete."""

    class Media:
        css = {"all": ["outbound/admin.css"]}


class NewestJobsFormSet(BaseInlineFormSet):
    def get_queryset(self) -> QuerySet[OutboundJob]:
        # A long-time customer can have thousands of jobs; the page shows the newest and links to the rest.
        # Built once: each form asks for it, and a new sliced queryset would be read again for every row.
        if not hasattr(self, "_newest_jobs"):
            self._newest_jobs = super().get_queryset().order_by("-created_at", "-pk")[:INLINE_JOBS]
        return self._newest_jobs


class OutboundJobInline(ReadOnlyPermissions, admin.TabularInline):
    model = OutboundJob
    formset = NewestJobsFormSet
    fk_name = "contact"
    fields = readonly_fields = JOB_INLINE_FIELDS
    show_change_link = True
    extra = 0
    can_delete = False
    verbose_name_plural = f"jobs (newest {INLINE_JOBS})"

    @admin.display(description="reply")
    def reply_start(self, job: OutboundJob) -> str:
        return Truncator(job.content).chars(80)


class BotStateFilter(admin.SimpleListFilter):
    title = "bot"
    parameter_name = "bot"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("paused", "paused"), ("active", "active")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Contact]) -> QuerySet[Contact]:
        if self.value() == "paused":
            return queryset.filter(bot_paused_at__isnull=False)
        if self.value() == "active":
            return queryset.filter(bot_paused_at__isnull=True)
        return queryset


@admin.register(Contact)
class ContactAdmin(ContactOptOutMixin, IndexedSearchMixin, ContactHandoffMixin, ReadOnlyAdmin):
    list_display = [
        "__str__",
        "wa_id",
        "profile_name",
        "phone_number_id",
        "bot_badge",
        "opt_badge",
        "last_inbound_at",
        "created_at",
    ]
    list_filter = [BotStateFilter, OptOutFilter, MarketingFilter, BusinessNumberFilter]
    search_fields = ["wa_id", "user_id", "profile_name"]
    search_help_text = "Number, business-scoped user id or name."
    indexed_search = IndexedSearch(
        own_number_fields=["wa_id"], exact_fields=["user_id"], text_fields=["profile_name"]
    )
    list_select_related = ["bot_paused_by", "opted_out_by"]
    ordering = ["-last_inbound_at", "-pk"]
    fields = readonly_fields = CONTACT_FIELDS
    inlines = [OutboundJobInline]
    actions = ["pause_bot", "resume_bot", "opt_out", "opt_in"]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        contact = self.get_object(request, object_id)
        context = dict(extra_context or {})
        if contact is not None:
            context.update(self.handoff_context(request, contact))
        return super().change_view(request, object_id, form_url, context)

    @admin.display(description="bot")
    def bot_badge(self, contact: Contact) -> SafeString:
        if contact.bot_paused(now=timezone.now()):
            return format_html(
                '<span class="bot-state bot-paused" title="{}">paused</span>',
                contact.get_bot_pause_reason_display(),
            )
        return mark_safe('<span class="bot-state bot-active">active</span>')

    @admin.display(description="bot")
    def bot_state(self, contact: Contact) -> str:
        if not contact.bot_paused(now=timezone.now()):
            return "Active: the bot answers this customer."
        by = f" by {contact.bot_paused_by}" if contact.bot_paused_by else ""
        since = timezone.localtime(contact.bot_paused_at).strftime("%Y-%m-%d %H:%M")
        return f"Paused since {since}{by}: {contact.get_bot_pause_reason_display()}."

    @admin.display(description="jobs")
    def all_jobs(self, contact: Contact) -> SafeString:
        url = reverse("admin:outbound_outboundjob_changelist")
        return format_html('<a href="{}?contact__id__exact={}">all jobs of this contact</a>', url, contact.pk)


@admin.register(InboundMessage)
class InboundMessageAdmin(IndexedSearchMixin, ReadOnlyAdmin):
    list_display = [
        "wamid",
        "contact",
        "business_number",
        "type",
        "text_start",
        "needs_reply",
        "timestamp",
        "received_at",
    ]
    list_filter = ["type", "needs_reply", "media_status", ContactBusinessNumberFilter, "timestamp"]
    search_fields = ["wamid", "contact__wa_id", "contact__profile_name", "text"]
    search_help_text = "Meta message id, number, name, or words of the message."
    indexed_search = IndexedSearch(
        number_contact="contact", wamid_fields=["wamid"], text_fields=["text"], name_contact="contact"
    )
    list_select_related = ["contact"]
    ordering = ["-timestamp", "-pk"]
    fields = readonly_fields = MESSAGE_FIELDS

    @admin.display(description="to business number", ordering="contact__phone_number_id")
    def business_number(self, message: InboundMessage) -> str:
        return message.contact.phone_number_id

    @admin.display(description="text")
    def text_start(self, message: InboundMessage) -> str:
        return Truncator(message.text).chars(60)

    @admin.display(description="reply job")
    def job(self, message: InboundMessage) -> SafeString | str:
        job = OutboundJob.objects.filter(inbound_message=message).only("pk", "status").first()
        if job is None:
            return "none (this message needs no reply)" if not message.needs_reply else "none"
        url = reverse("admin:outbound_outboundjob_change", args=[job.pk])
        return format_html('<a href="{}">job {} ({})</a>', url, job.pk, job.get_status_display())

    @admin.display(description="as Meta sent it")
    def raw_display(self, message: InboundMessage) -> SafeString:
        return format_html(
            '<pre class="job-pre">{}</pre>', json.dumps(message.raw, indent=2, ensure_ascii=False)
        )
