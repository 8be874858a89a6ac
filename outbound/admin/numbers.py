"""The business number in the admin lists: a column and a filter for contacts, jobs and inbound messages."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest

from outbound.models import Contact
from outbound.numbers import served_phone_number_ids


class BusinessNumberFilter(admin.SimpleListFilter):
    """Filter by the business number a conversation belongs to: the configured ones, in their order, then any
    number older rows still carry (one removed from WHATSAPP_PHONE_NUMBER_ID)."""

    title = "business number"
    parameter_name = "number"
    # The path from the listed model to the contact's number.
    field_path = "phone_number_id"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        served = served_phone_number_ids()
        # Contacts are far fewer than jobs or messages: the distinct numbers are read from them.
        stored = Contact.objects.order_by().values_list("phone_number_id", flat=True).distinct()
        extra = sorted(set(stored) - set(served))
        return [(n, n) for n in served] + [(n, f"{n} (not configured)") for n in extra if n]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any]:
        value = self.value()
        return queryset.filter(**{self.field_path: value}) if value else queryset


class ContactBusinessNumberFilter(BusinessNumberFilter):
    field_path = "contact__phone_number_id"
