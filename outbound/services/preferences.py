"""Marketing preferences on contacts: Meta's `user_preferences` webhook, and error 131050 on a send (§12.4).

Recorded for staff (and any marketing tool reading the table); service replies inside the window are not
affected by them, so the bot keeps answering.

A preference belongs to one conversation, (business number, customer), like a message: the webhook's
`value.metadata.phone_number_id` says which number the customer stopped or resumed marketing from.
"""

from __future__ import annotations

import logging
from datetime import datetime

from django.db.models import Q
from django.utils import timezone

from outbound.inbound import ParsedPreference
from outbound.models import Contact, MarketingPreference
from outbound.services.contacts import ContactIdentity, contacts_find_or_create

logger = logging.getLogger(__name__)

# Meta's error code for "the customer stopped marketing messages" (do not retry).
MARKETING_STOPPED_CODE = 131050
# The only `category` Meta sends today; an empty one is read as it.
MARKETING_CATEGORY = "marketing_messages"


def contacts_record_preferences(*, preferences: list[ParsedPreference]) -> int:
    """Record each marketing preference on the contact of its business number and customer, created (or given
    the id it lacked) by the ingest's own rules when unknown; an older one never overwrites a newer. Returns how
    many were recorded. Runs inside the ingest's transaction."""
    wanted: list[ParsedPreference] = []
    for preference in preferences:
        if preference.category and preference.category != MARKETING_CATEGORY:
            logger.info("preference_skipped category=%s", preference.category)
        else:
            wanted.append(preference)
    if not wanted:
        return 0
    contacts, learned = contacts_find_or_create(identities={_key(p) for p in wanted})
    if learned:
        Contact.objects.bulk_update(learned, ["wa_id", "user_id"])
    recorded = 0
    for preference in sorted(wanted, key=lambda p: p.timestamp):
        if contact_record_marketing_preference(
            contact_id=contacts[_key(preference)].pk, value=preference.value, at=preference.timestamp
        ):
            recorded += 1
    return recorded


def _key(preference: ParsedPreference) -> ContactIdentity:
    return ContactIdentity(preference.phone_number_id, preference.wa_id, preference.user_id)


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
