"""Contacts and their inbound messages, for staff to read (everything here is written by the ingest)."""

from __future__ import annotations

import json

from django.contrib import admin
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from outbound.admin.permissions import ReadOnlyPermissions
from outbound.models import Contact, InboundMessage, OutboundJob
from outbound.selectors import contact_conversation

INLINE_JOBS = 50
JOB_INLINE_FIELDS = (
    "status",
    "reply_start",
    "attempts",
    "last_attempt_at",
    "delivery_status",
    "send_as",
    "created_at",
)
CONTACT_FIELDS = (
    "wa_id",
    "user_id",
    "profile_name",
    "last_inbound_at",
    "all_jobs",
    "conversation",
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
    "raw_display",
)


class ReadOnlyAdmin(ReadOnlyPermissions, admin.ModelAdmin):
    """Rows the ingest owns: staff may look, never add, edit or delete."""

    class Media:
        css = {"all": ["outbound/admin.css"]}


class NewestJobsFormSet(BaseInlineFormSet):
    def get_queryset(self) -> QuerySet[OutboundJob]:
        # A long-time customer can have thousands of jobs; the page shows the newest and links to the rest.
        return super().get_queryset().order_by("-created_at", "-pk")[:INLINE_JOBS]


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


@admin.register(Contact)
class ContactAdmin(ReadOnlyAdmin):
    list_display = ["__str__", "wa_id", "profile_name", "last_inbound_at", "created_at"]
    search_fields = ["wa_id", "user_id", "profile_name"]
    search_help_text = "Number, business-scoped user id or name."
    ordering = ["-last_inbound_at", "-pk"]
    fields = readonly_fields = CONTACT_FIELDS
    inlines = [OutboundJobInline]

    @admin.display(description="conversation (newest messages both ways, in time order)")
    def conversation(self, contact: Contact) -> SafeString:
        entries = contact_conversation(contact_id=contact.pk)
        return render_to_string("admin/outbound/conversation.html", {"entries": entries})

    @admin.display(description="jobs")
    def all_jobs(self, contact: Contact) -> SafeString:
        url = reverse("admin:outbound_outboundjob_changelist")
        return format_html('<a href="{}?contact__id__exact={}">all jobs of this contact</a>', url, contact.pk)


@admin.register(InboundMessage)
class InboundMessageAdmin(ReadOnlyAdmin):
    list_display = ["wamid", "contact", "type", "text_start", "needs_reply", "timestamp", "received_at"]
    list_filter = ["type", "needs_reply", "timestamp"]
    search_fields = ["wamid", "contact__wa_id", "contact__profile_name", "text"]
    search_help_text = "Meta message id, number, name, or words of the message."
    list_select_related = ["contact"]
    ordering = ["-timestamp", "-pk"]
    show_full_result_count = False
    fields = readonly_fields = MESSAGE_FIELDS

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
