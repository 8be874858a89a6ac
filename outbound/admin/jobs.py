"""Staff's view of the replies: find a job, read why it failed, and retry, regenerate or cancel it.

The admin is an adapter: the actions and the job page's buttons call the services in
`outbound/services/staff.py`, which decide what is allowed; this module reports what they did and logs it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.template.loader import render_to_string
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString
from django.utils.text import Truncator

from outbound.admin.numbers import ContactBusinessNumberFilter
from outbound.admin.scale import IndexedSearch, IndexedSearchMixin
from outbound.models import InboundMessage, KnowledgeEntry, OutboundJob
from outbound.selectors import contact_conversation
from outbound.services.staff import (
    StaffActionResult,
    outbound_jobs_cancel,
    outbound_jobs_regenerate,
    outbound_jobs_retry,
)
from outbound.svg import timeline as svg_timeline
from outbound.usage import format_cost

Status = OutboundJob.Status


@dataclass(frozen=True)
class StaffAction:
    """One staff operation, offered both as a list action and as a button on the job's page."""

    name: str
    label: str
    done_verb: str
    service: Callable[..., StaffActionResult]
    # Only to decide which buttons a job's page shows; the service still decides and reports refusals.
    offered_for: frozenset[str]
    confirm: str = ""


STAFF_ACTIONS: dict[str, StaffAction] = {
    action.name: action
    for action in (
        StaffAction(
            name="retry",
            label="Retry",
            done_verb="Requeued",
            service=outbound_jobs_retry,
            offered_for=frozenset({Status.FAILED}),
        ),
        StaffAction(
            name="regenerate",
            label="Regenerate the reply",
            done_verb="Dropped the reply of",
            service=outbound_jobs_regenerate,
            offered_for=frozenset({Status.FAILED, Status.READY_TO_SEND}),
            confirm="Drop this reply and ask the model for a new one?",
        ),
        StaffAction(
            name="cancel",
            label="Cancel",
            done_verb="Cancelled",
            service=outbound_jobs_cancel,
            offered_for=frozenset({Status.PENDING, Status.READY_TO_SEND, Status.FAILED}),
            confirm="Cancel this job? It will never be sent.",
        ),
    )
}


# The job's page, section by section.
JOB_PAGE: list[tuple[str | None, tuple[str, ...]]] = [
    (
        None,
        (
            "status_badge",
            "timeline",
            "contact_link",
            "business_number",
            "written_by",
            "reply",
            "knowledge_display",
            "send_as",
            "inbound_message_display",
        ),
    ),
    (
        "Attempts",
        (
            "attempts",
            "last_attempt_at",
            "next_attempt_at",
            "error_log_display",
            "claimed_by",
            "claimed_at",
            "send_started_at",
        ),
    ),
    (
        "Meta",
        (
            "wa_message_id",
            "sent_at",
            "message_status",
            "delivery_status",
            "delivery_updated_at",
            "delivery_error_code",
            "delivery_error",
            "send_response_display",
            "key",
        ),
    ),
    ("Model usage", ("tokens_display", "cost_display")),
    ("Conversation", ("conversation",)),
    (None, ("superseded_by", "created_at", "updated_at")),
]


def _jobs(count: int) -> str:
    return f"{count} job{'' if count == 1 else 's'}"


def _ids(jobs: Iterable[OutboundJob]) -> str:
    return ", ".join(str(job.pk) for job in jobs)


def _pre(text: str) -> SafeString:
    return format_html('<pre class="job-pre">{}</pre>', text)


def format_gap(gap: timedelta) -> str:
    """The time between two steps, short: "+850 ms", "+2.1 s", "+3 min", "+5 h"."""
    seconds = max(gap.total_seconds(), 0.0)
    if seconds < 1:
        return f"+{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"+{seconds:.1f} s"
    if seconds < 3600:
        return f"+{seconds / 60:.0f} min"
    return f"+{seconds / 3600:.1f} h"


def last_error_line(error_log: str) -> str:
    """The newest line of an error log, without its timestamp (the list shows `last_attempt_at` beside it)."""
    lines = error_log.strip().splitlines()
    if not lines:
        return ""
    stamp, _, rest = lines[-1].partition(" ")
    # Lines are "<ISO timestamp>Z <message>"; anything else is shown whole.
    return rest if stamp.endswith("Z") and stamp[:1].isdigit() else lines[-1]


@admin.register(OutboundJob)
class OutboundJobAdmin(IndexedSearchMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "status_badge",
        "contact_display",
        "business_number",
        "reply_start",
        "attempts",
        "last_attempt_at",
        "last_error",
        "delivery_status",
        "send_as",
        "created_at",
    ]
    list_display_links = ["id", "status_badge"]
    list_filter = ["status", "kind", "delivery_status", "send_as", ContactBusinessNumberFilter, "created_at"]
    search_fields = [
        "contact__wa_id",
        "contact__profile_name",
        "wa_message_id",
        "inbound_message__wamid",
        "content",
    ]
    search_help_text = "Number, name, Meta message id (ours or the customer's), or words of the reply."
    # What the search box really does (fast at a million jobs): outbound.admin.scale.
    indexed_search = IndexedSearch(
        number_contact="contact",
        wamid_fields=["wa_message_id"],
        wamid_related=[(InboundMessage, "wamid", "inbound_message")],
        text_fields=["content"],
        name_contact="contact",
    )
    list_select_related = ["contact"]
    ordering = ["-created_at", "-pk"]
    list_per_page = 50
    actions = ["retry_jobs", "regenerate", "cancel"]
    fieldsets = [(title, {"fields": fields}) for title, fields in JOB_PAGE]
    # Every field belongs to the worker and the webhook, which write with conditional UPDATEs; a form save
    # would write the whole row back and could undo a transition made meanwhile. Staff act through buttons.
    readonly_fields = tuple(field for _, fields in JOB_PAGE for field in fields)

    class Media:
        css = {"all": ["outbound/admin.css"]}

    # ------------------------------------------------------------------ permissions
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # jobs come from webhooks only

    def has_delete_permission(self, request: HttpRequest, obj: OutboundJob | None = None) -> bool:
        return False  # the history is the audit trail; cancel instead

    def save_model(self, request: HttpRequest, obj: OutboundJob, form: Any, change: bool) -> None:
        """Never write the row from a form (see `readonly_fields`)."""

    # ------------------------------------------------------------------ list columns
    @admin.display(description="status", ordering="status")
    def status_badge(self, job: OutboundJob) -> SafeString:
        return format_html(
            '<span class="job-status job-status-{}">{}</span>', job.status, job.get_status_display()
        )

    @admin.display(description="contact", ordering="contact__profile_name")
    def contact_display(self, job: OutboundJob) -> str:
        return str(job.contact)

    @admin.display(description="business number", ordering="contact__phone_number_id")
    def business_number(self, job: OutboundJob) -> str:
        return job.contact.phone_number_id

    @admin.display(description="reply")
    def reply_start(self, job: OutboundJob) -> str:
        if not job.content and job.send_as == OutboundJob.SendAs.TEMPLATE:
            return "[template]"
        return Truncator(job.content).chars(60)

    @admin.display(description="last error")
    def last_error(self, job: OutboundJob) -> SafeString | str:
        line = last_error_line(job.error_log)
        if not line:
            return ""
        return format_html('<span title="{}">{}</span>', line, Truncator(line).chars(80))

    # ------------------------------------------------------------------ the job's page
    @admin.display(description="contact")
    def contact_link(self, job: OutboundJob) -> SafeString:
        url = reverse("admin:outbound_contact_change", args=[job.contact_id])
        return format_html('<a href="{}">{}</a>', url, job.contact)

    @admin.display(description="reply")
    def reply(self, job: OutboundJob) -> SafeString | str:
        if job.content:
            return _pre(job.content)
        if job.send_as == OutboundJob.SendAs.TEMPLATE:
            return f"No text: the approved template ({settings.WHATSAPP_TEMPLATE_NAME or 'not configured'}) goes instead."
        return "Not generated yet."

    @admin.display(description="knowledge given to the model")
    def knowledge_display(self, job: OutboundJob) -> SafeString | str:
        """The entries the reply was generated with (id and title as they were), linked while they exist, and
        those the model said its reply relies on marked."""
        records = [r for r in job.knowledge if isinstance(r, dict) and isinstance(r.get("id"), int)]
        if not records:
            return "None." if job.content else "None: no reply generated."
        existing = set(
            KnowledgeEntry.objects.filter(pk__in=[r["id"] for r in records]).values_list("pk", flat=True)
        )
        items = [
            format_html(
                "{}{}",
                format_html(
                    '<a href="{}">[{}] {}</a>',
                    reverse("admin:outbound_knowledgeentry_change", args=[r["id"]]),
                    r["id"],
                    r.get("title", ""),
                )
                if r["id"] in existing
                else format_html("[{}] {} (deleted since)", r["id"], r.get("title", "")),
                " \u2014 cited by the reply" if r.get("cited") else "",
            )
            for r in records
        ]
        return format_html(
            '<ol class="job-knowledge">{}</ol>',
            format_html_join("", "<li>{}</li>", ((item,) for item in items)),
        )

    @admin.display(description="written by")
    def written_by(self, job: OutboundJob) -> str:
        if job.kind == OutboundJob.Kind.STAFF:
            return f"{job.author or 'a deleted user'} (staff reply)"
        return job.get_kind_display()

    @admin.display(description="answers")
    def inbound_message_display(self, job: OutboundJob) -> SafeString | str:
        message = job.inbound_message
        if message is None:
            return "The conversation (a staff reply answers no single message)."
        url = reverse("admin:outbound_inboundmessage_change", args=[message.pk])
        # Formatted before format_html: it escapes every argument into a string, which takes no date format
        # spec, and the admin shows a display method's exception as a silent "-".
        sent = timezone.localtime(message.timestamp).strftime("%Y-%m-%d %H:%M:%S")
        # The media phase's result: fetched (a transcript or an image description), or why it could not be used.
        media = ""
        if message.media_id:
            media = f" ({message.get_media_status_display()}"
            media += f": {message.media_description})" if message.media_description else ")"
        return format_html(
            '<a href="{}">{} message of {}</a>{}{}',
            url,
            message.type,
            sent,
            media,
            _pre(message.text) if message.text else "",
        )

    @admin.display(description="error log (one line per attempt, oldest first)")
    def error_log_display(self, job: OutboundJob) -> SafeString | str:
        return _pre(job.error_log) if job.error_log else "No errors."

    @admin.display(description="Meta's response to the send")
    def send_response_display(self, job: OutboundJob) -> SafeString | str:
        if job.send_response is None:
            return "—"
        return _pre(json.dumps(job.send_response, indent=2, ensure_ascii=False))

    @admin.display(description="timeline")
    def timeline(self, job: OutboundJob) -> SafeString:
        """Received, claimed, generated, sent, delivered, read: when each happened and how long after the one
        before (Meta's status webhooks keep only the latest time: delivered shows no time once read)."""
        received = job.inbound_message.received_at if job.inbound_message is not None else job.created_at
        delivered = job.delivery_status in (OutboundJob.Delivery.DELIVERED, OutboundJob.Delivery.READ)
        read = job.delivery_status == OutboundJob.Delivery.READ
        moments = [
            ("received" if job.inbound_message is not None else "created", received),
            ("claimed", job.first_claimed_at),
            ("generated", job.generated_at),
            ("sent", job.sent_at),
            ("delivered", job.delivery_updated_at if delivered and not read else None),
            ("read", job.delivery_updated_at if read else None),
        ]
        steps, previous = [], None
        for name, moment in moments:
            done = moment is not None or (name == "delivered" and read)
            when = (
                timezone.localtime(moment).strftime("%H:%M:%S")
                if moment is not None
                else ("✓" if done else "")
            )
            gap = format_gap(moment - previous) if moment is not None and previous is not None else ""
            steps.append((name, when, gap))
            previous = moment or previous
        return svg_timeline(uid=f"job-{job.pk}-timeline", title=f"Timeline of job {job.pk}", steps=steps)

    @admin.display(description="tokens")
    def tokens_display(self, job: OutboundJob) -> str:
        if job.input_tokens is None and job.output_tokens is None:
            return "None recorded (no model call, or the provider reported no usage)."
        cached = f", {job.cached_input_tokens or 0:,} of them cached" if job.cached_input_tokens else ""
        return f"{job.input_tokens or 0:,} input{cached}; {job.output_tokens or 0:,} output"

    @admin.display(description="estimated cost")
    def cost_display(self, job: OutboundJob) -> str:
        cost = job.estimated_cost()
        if cost is None:
            return "—"
        return f"{format_cost(cost)} at the configured prices per million tokens"

    @admin.display(description="conversation (both ways, in time order)")
    def conversation(self, job: OutboundJob) -> SafeString:
        around = job.inbound_message.timestamp if job.inbound_message is not None else job.created_at
        entries = contact_conversation(contact_id=job.contact_id, around=around)
        return render_to_string(
            "admin/outbound/conversation.html",
            {"entries": entries, "highlight_job": job.pk, "highlight_inbound": job.inbound_message_id},
        )

    def get_queryset(self, request: HttpRequest) -> QuerySet[OutboundJob]:
        return super().get_queryset(request).select_related("contact", "inbound_message", "author")

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        job = self.get_object(request, object_id)
        buttons = []
        if job is not None and self.has_change_permission(request, job):
            buttons = [action for action in STAFF_ACTIONS.values() if job.status in action.offered_for]
        context = {
            **(extra_context or {}),
            "job_actions": buttons,
            # Nothing on the page is editable: no save buttons.
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
        }
        return super().change_view(request, object_id, form_url, context)

    # ------------------------------------------------------------------ actions and buttons
    def get_urls(self) -> list[URLPattern]:
        act = path(
            "<path:object_id>/act/<str:action>/",
            self.admin_site.admin_view(self.act_view),
            name="outbound_outboundjob_act",
        )
        return [act, *super().get_urls()]

    def act_view(self, request: HttpRequest, object_id: str, action: str) -> HttpResponse:
        """The job page's buttons: POST only, and only for staff who may change jobs."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        job = self.get_object(request, object_id)
        if job is None or action not in STAFF_ACTIONS:
            raise Http404("no such job or action")
        if not self.has_change_permission(request, job):
            raise PermissionDenied
        self._apply(request, STAFF_ACTIONS[action], [job])
        return HttpResponseRedirect(reverse("admin:outbound_outboundjob_change", args=[job.pk]))

    @admin.action(description="Retry the selected failed jobs", permissions=["change"])
    def retry_jobs(self, request: HttpRequest, queryset: QuerySet[OutboundJob]) -> None:
        self._apply(request, STAFF_ACTIONS["retry"], queryset)

    @admin.action(description="Regenerate the reply of the selected jobs", permissions=["change"])
    def regenerate(self, request: HttpRequest, queryset: QuerySet[OutboundJob]) -> None:
        self._apply(request, STAFF_ACTIONS["regenerate"], queryset)

    @admin.action(description="Cancel the selected jobs (never send them)", permissions=["change"])
    def cancel(self, request: HttpRequest, queryset: QuerySet[OutboundJob]) -> None:
        self._apply(request, STAFF_ACTIONS["cancel"], queryset)

    def _apply(self, request: HttpRequest, action: StaffAction, jobs: Iterable[OutboundJob]) -> None:
        """Call the service, write who did what to the admin log, and tell the user what happened."""
        jobs = sorted(jobs, key=lambda job: job.pk)
        before = {job.pk: job.status for job in jobs}
        result = action.service(jobs=jobs)
        for job in result.done:
            self.log_change(request, job, f"{action.label}: {before[job.pk]} → {job.status}")
        if result.done:
            self.message_user(
                request,
                f"{action.done_verb} {_jobs(len(result.done))} ({_ids(result.done)}).",
                messages.SUCCESS,
            )
        if result.skipped:
            reasons = "; ".join(f"job {job.pk} {reason}" for job, reason in result.skipped)
            self.message_user(request, f"Skipped {_jobs(len(result.skipped))}: {reasons}.", messages.WARNING)
        if result.template_warnings:
            template = settings.WHATSAPP_TEMPLATE_NAME
            goes_as = (
                f"the retry will go as the template “{template}”, not as the stored reply"
                if template
                else "only a template may be sent, and WHATSAPP_TEMPLATE_NAME is not set, so it will fail again"
            )
            self.message_user(
                request,
                f"The 24-hour window has closed for {_jobs(len(result.template_warnings))} "
                f"({_ids(result.template_warnings)}): {goes_as}.",
                messages.WARNING,
            )
