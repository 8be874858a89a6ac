"""The contact page's side of the human handoff: the bot's state, **Reply as staff**, pause and resume.

An adapter like the rest of the admin: `outbound/services/handoff.py` decides; this module checks the
permission, calls it, writes the admin history (LogEntry) and says what happened. The contact's fields stay
read-only (the ingest owns them); taking over a conversation needs `outbound.change_contact`, checked here
rather than through the model admin's change permission, which stays off.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils import timezone

from outbound.models import BotPauseReason, Contact
from outbound.replies import WHATSAPP_TEXT_LIMIT
from outbound.selectors import contact_conversation
from outbound.services.handoff import (
    StaffReplyRefused,
    contact_bot_pause,
    contact_bot_resume,
    contact_staff_reply,
)
from outbound.window import is_window_open

# The permission that lets staff take a conversation over (reply, pause, resume).
TAKE_OVER_PERMISSION = "outbound.change_contact"


class StaffReplyForm(forms.Form):
    """What a staff member writes to the customer (outside the window: nothing, the template goes)."""

    text = forms.CharField(
        label="Reply as staff",
        required=False,
        max_length=WHATSAPP_TEXT_LIMIT,
        strip=True,
        widget=forms.Textarea(attrs={"rows": 4, "cols": 80, "maxlength": WHATSAPP_TEXT_LIMIT}),
    )
    send_template = forms.BooleanField(required=False, widget=forms.HiddenInput)


class ContactHandoffMixin:
    """Mixed into `ContactAdmin` before `admin.ModelAdmin`: the reply form, the bot buttons and actions."""

    admin_site: admin.AdminSite
    message_user: Any
    log_change: Any
    log_addition: Any
    get_object: Any

    # ------------------------------------------------------------------ permission
    def has_handoff_permission(self, request: HttpRequest, obj: Contact | None = None) -> bool:
        """Reply, pause and resume: staff who may change contacts (view-only staff only read)."""
        return bool(request.user.is_active and request.user.has_perm(TAKE_OVER_PERMISSION))

    # ------------------------------------------------------------------ the page
    def handoff_context(self, request: HttpRequest, contact: Contact) -> dict[str, Any]:
        """What the contact page's template needs: the conversation, the bot's state, the reply form."""
        now = timezone.now()
        in_window = is_window_open(
            last_inbound_at=contact.last_inbound_at,
            now=now,
            margin_seconds=settings.WHATSAPP_WINDOW_MARGIN_SECONDS,
        )
        paused = contact.bot_paused(now=now)
        return {
            "conversation_entries": contact_conversation(contact_id=contact.pk),
            "can_take_over": self.has_handoff_permission(request, contact),
            "bot_paused": paused,
            "bot_resumes_at": contact.bot_resumes_at() if paused else None,
            "handoff_hours": settings.OUTBOUND_HANDOFF_HOURS,
            "in_window": in_window,
            "template_name": settings.WHATSAPP_TEMPLATE_NAME,
            "reply_form": StaffReplyForm(),
        }

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/reply/", view(self.reply_view), name="outbound_contact_reply"),
            path("<path:object_id>/bot/<str:action>/", view(self.bot_view), name="outbound_contact_bot"),
            *super().get_urls(),  # type: ignore[misc]
        ]

    # ------------------------------------------------------------------ Reply as staff
    def reply_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """POST only: queue the staff reply (or the template) as a job and pause the bot."""
        contact = self._contact_for_post(request, object_id)
        if isinstance(contact, HttpResponse):
            return contact
        form = StaffReplyForm(request.POST)
        if not form.is_valid():
            errors = "; ".join(f"{e}" for errs in form.errors.values() for e in errs)
            self.message_user(request, f"Nothing was sent: {errors}", messages.ERROR)
            return self._back(contact)
        template = form.cleaned_data["send_template"]
        try:
            job = contact_staff_reply(
                contact=contact, author=request.user, text=form.cleaned_data["text"], template=template
            )
        except StaffReplyRefused as exc:
            self.message_user(request, f"Nothing was sent: {exc}.", messages.ERROR)
            return self._back(contact)
        what = f"the template “{settings.WHATSAPP_TEMPLATE_NAME}”" if template else "a staff reply"
        self.log_addition(request, job, f"Staff reply to {contact} ({what})")
        self.log_change(request, contact, f"Replied as staff with {what} (job {job.pk}); the bot is paused")
        self.message_user(
            request,
            f"Queued {what} (job {job.pk}); it goes out within seconds. The bot is paused for this customer.",
            messages.SUCCESS,
        )
        return self._back(contact)

    # ------------------------------------------------------------------ pause / resume
    def bot_view(self, request: HttpRequest, object_id: str, action: str) -> HttpResponse:
        """The page's **Pause the bot** / **Resume the bot** buttons: POST only."""
        if action not in ("pause", "resume"):
            raise Http404("no such action")
        contact = self._contact_for_post(request, object_id)
        if isinstance(contact, HttpResponse):
            return contact
        if action == "pause":
            self._pause(request, [contact])
        else:
            self._resume(request, [contact])
        return self._back(contact)

    @admin.action(description="Pause the bot for the selected contacts", permissions=["handoff"])
    def pause_bot(self, request: HttpRequest, queryset: QuerySet[Contact]) -> None:
        self._pause(request, queryset)

    @admin.action(description="Resume the bot for the selected contacts", permissions=["handoff"])
    def resume_bot(self, request: HttpRequest, queryset: QuerySet[Contact]) -> None:
        self._resume(request, queryset)

    def _pause(self, request: HttpRequest, contacts: Iterable[Contact]) -> None:
        done, skipped, handed_off = [], [], 0
        for contact in sorted(contacts, key=lambda c: c.pk):
            result = contact_bot_pause(contact=contact, reason=BotPauseReason.STAFF_ACTION, by=request.user)
            if not result.changed:
                skipped.append(contact)
                continue
            done.append(contact)
            handed_off += result.handed_off
            self.log_change(request, contact, "Paused the bot")
        if done:
            held = (
                f"; {handed_off} generated repl{'y' if handed_off == 1 else 'ies'} will not be sent"
                if handed_off
                else ""
            )
            self.message_user(request, f"Paused the bot for {_names(done)}{held}.", messages.SUCCESS)
        if skipped:
            self.message_user(
                request, f"Skipped {_names(skipped)}: the bot is already paused.", messages.WARNING
            )

    def _resume(self, request: HttpRequest, contacts: Iterable[Contact]) -> None:
        done, skipped = [], []
        for contact in sorted(contacts, key=lambda c: c.pk):
            if contact_bot_resume(contact=contact, by=request.user):
                done.append(contact)
                self.log_change(request, contact, "Resumed the bot")
            else:
                skipped.append(contact)
        if done:
            self.message_user(
                request,
                f"Resumed the bot for {_names(done)}: it answers their unanswered messages now.",
                messages.SUCCESS,
            )
        if skipped:
            self.message_user(request, f"Skipped {_names(skipped)}: the bot is not paused.", messages.WARNING)

    # ------------------------------------------------------------------ helpers
    def _contact_for_post(self, request: HttpRequest, object_id: str) -> Contact | HttpResponse:
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        contact = self.get_object(request, object_id)
        if contact is None:
            raise Http404("no such contact")
        if not self.has_handoff_permission(request, contact):
            raise PermissionDenied
        return contact

    def _back(self, contact: Contact) -> HttpResponse:
        return HttpResponseRedirect(reverse("admin:outbound_contact_change", args=[contact.pk]))


def _names(contacts: list[Contact]) -> str:
    if len(contacts) > 3:
        return f"{len(contacts)} contacts"
    return ", ".join(str(c) for c in contacts)
