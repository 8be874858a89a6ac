"""The contact page's side of opt-out: the customer's state (STOP / START), and staff opting them out or in.

An adapter: `outbound/services/optout.py` decides. Changing the state needs `outbound.change_contact`, like
taking a conversation over; no message is sent to the customer either way.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseNotAllowed, HttpResponseRedirect
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from outbound.models import Contact
from outbound.services.optout import contact_opt_in, contact_opt_out


class OptOutFilter(admin.SimpleListFilter):
    title = "replies"
    parameter_name = "opted"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("out", "opted out (STOP)"), ("in", "opted in")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Contact]) -> QuerySet[Contact]:
        if self.value() == "out":
            return queryset.filter(opted_out_at__isnull=False)
        if self.value() == "in":
            return queryset.filter(opted_out_at__isnull=True)
        return queryset


class MarketingFilter(admin.SimpleListFilter):
    title = "marketing messages"
    parameter_name = "marketing"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(Contact.Marketing.choices)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Contact]) -> QuerySet[Contact]:
        if self.value():
            return queryset.filter(marketing_preference=self.value())
        return queryset


def opt_state(contact: Contact) -> str:
    """The contact's opt state in words, for the page and the list."""
    if contact.opted_out_at is None:
        return "Opted in: the bot answers this customer."
    since = timezone.localtime(contact.opted_out_at).strftime("%Y-%m-%d %H:%M")
    who = f"staff ({contact.opted_out_by})" if contact.opted_out_by_id else "the customer (STOP)"
    return f"Opted out since {since} by {who}: no replies until they send START."


class ContactOptOutMixin:
    """Mixed into `ContactAdmin`: the opt state fields, the list badge, the page's button and the actions."""

    admin_site: admin.AdminSite
    message_user: Any
    log_change: Any
    get_object: Any
    has_handoff_permission: Any

    @admin.display(description="replies")
    def opt_badge(self, contact: Contact) -> SafeString:
        if contact.opted_out_at is not None:
            return format_html(
                '<span class="bot-state bot-opted-out" title="{}">opted out</span>', opt_state(contact)
            )
        return mark_safe("")

    @admin.display(description="opt-out")
    def opt_state(self, contact: Contact) -> str:
        return opt_state(contact)

    @admin.display(description="marketing messages")
    def marketing_state(self, contact: Contact) -> str:
        if not contact.marketing_preference:
            return "Nothing reported by Meta."
        at = contact.marketing_preference_at
        when = f" on {timezone.localtime(at):%Y-%m-%d %H:%M}" if at else ""
        return f"The customer {contact.get_marketing_preference_display()} marketing messages{when}."

    def get_urls(self) -> list[URLPattern]:
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/opt/<str:action>/", view(self.opt_view), name="outbound_contact_opt"),
            *super().get_urls(),  # type: ignore[misc]
        ]

    def opt_view(self, request: HttpRequest, object_id: str, action: str) -> HttpResponse:
        """The page's **Opt out** / **Opt back in** button: POST only."""
        if action not in ("out", "in"):
            raise Http404("no such action")
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        contact = self.get_object(request, object_id)
        if contact is None:
            raise Http404("no such contact")
        if not self.has_handoff_permission(request, contact):
            raise PermissionDenied
        self._set_opt(request, [contact], out=action == "out")
        return HttpResponseRedirect(reverse("admin:outbound_contact_change", args=[contact.pk]))

    @admin.action(description="Opt the selected contacts out (no more bot replies)", permissions=["handoff"])
    def opt_out(self, request: HttpRequest, queryset: QuerySet[Contact]) -> None:
        self._set_opt(request, queryset, out=True)

    @admin.action(description="Opt the selected contacts back in", permissions=["handoff"])
    def opt_in(self, request: HttpRequest, queryset: QuerySet[Contact]) -> None:
        self._set_opt(request, queryset, out=False)

    def _set_opt(self, request: HttpRequest, contacts: Iterable[Contact], *, out: bool) -> None:
        done, skipped = [], []
        change = contact_opt_out if out else contact_opt_in
        for contact in sorted(contacts, key=lambda c: c.pk):
            if change(contact=contact, by=request.user):
                done.append(contact)
                self.log_change(request, contact, "Opted out" if out else "Opted back in")
            else:
                skipped.append(contact)
        if done:
            what = (
                "opted out: the bot sends them nothing until they send START"
                if out
                else "opted back in: the bot answers their next message"
            )
            self.message_user(request, f"{_names(done)} {what}. No message was sent.", messages.SUCCESS)
        if skipped:
            state = "already opted out" if out else "not opted out"
            self.message_user(request, f"Skipped {_names(skipped)}: {state}.", messages.WARNING)


def _names(contacts: list[Contact]) -> str:
    if len(contacts) > 3:
        return f"{len(contacts)} contacts"
    return ", ".join(str(c) for c in contacts)
