"""Marketing preferences on contacts: Meta's `user_preferences` webhook, and error 131050 on a send (§12.4).

Recorded for staff (and any marketing tool reading the table); service replies inside the window are not
affected by them, so the bot keeps answering.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.db.models import Q
from django.utils import timezone

from outbound.inbound import ParsedPreference
from outbound.models import Contact, MarketingPreference

logger = logging.getLogger(__name__)

# Meta's error code for "the customer stopped marketing messages" (do not retry).
MARKETING_STOPPED_CODE = 131050


def contacts_record_preferences(*, preferences: list[ParsedPreference]) -> int:
    """Record each marketing preference on its contact (created when unknown); an older one never overwrites
    a newer. Returns how many were recorded."""
    recorded = 0
    for preference in sorted(preferences, key=lambda p: p.timestamp):
        if preference.category and preference.category != "marketing_messages":
            logger.info("preference_skipped category=%s", preference.category)
            continue
        key = {"wa_id": preference.wa_id} if preference.wa_id else {"user_id": preference.user_id}
        contact = Contact.objects.filter(**key).only("pk").first()
        if contact is None:
            contact, _ = Contact.objects.get_or_create(**key)
        if contact_record_marketing_preference(
            contact_id=contact.pk, value=preference.value, at=preference.timestamp
        ):
            recorded += 1
    return recorded


def contact_record_marketing_preference(*, contact_id: int, value: str, at: datetime | None = None) -> bool:
    """Set the contact's marketing preference as of `at`, unless a newer one is recorded."""
    at = at or timezone.now()
    updated = (
        Contact.objects.filter(pk=contact_id)
        .filter(Q(marketing_preference_at__isnull=True) | Q(marketing_preference_at__lte=at))
        .update(marketing_preference=MarketingPreference(value), marketing_preference_at=at)
    )
    if updated:
        logger.info("marketing_preference contact_id=%s value=%s", contact_id, value)
    return bool(updated)
