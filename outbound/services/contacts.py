"""Finding the conversation a webhook is about: contacts by (business number, phone number or BSUID).

Meta names a customer by phone number (`wa_id`), by business-scoped user id (BSUID, `user_id`), or both (the
2026 identity change, meta-whatsapp-api.md §9). A contact is one conversation with one business number, so
every key here is per number. The rules:

- Found by either id; created when neither is known.
- An id it lacks is learned the first time a webhook carries both ("attach"), unless another contact of the
  same number holds it.
- A customer first known by BSUID alone and also, separately, by phone number alone becomes one contact the
  first time a webhook carries both ("merge"): the older contact keeps its row and takes the other's history
  (messages, jobs, echoes, anything else that points at it) and the ids it lacked; the opt-out, the
  marketing preference and the bot state are each taken whole from the contact where it changed last
  (`merge_groups_from_other`).
- `user_changed_user_id` (Meta's system message when a BSUID changes) re-keys the contact to the new BSUID,
  keeping its history; a contact already created under the new BSUID is merged into it.

Runs inside the ingest's transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.db.models import Q

from outbound.models import Contact

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ContactIdentity:
    """How a webhook names a customer of one business number: a phone number, a BSUID, or both."""

    phone_number_id: str
    wa_id: str | None
    user_id: str | None

    def sort_key(self) -> tuple[str, str, str]:
        return (self.phone_number_id, self.wa_id or "", self.user_id or "")


def contacts_find_or_create(
    *,
    identities: Iterable[ContactIdentity],
    initial: Mapping[ContactIdentity, dict[str, Any]] | None = None,
) -> tuple[dict[ContactIdentity, Contact], list[Contact]]:
    """The contact of each identity, created (with `initial` fields) when unknown, attached and merged as the
    module says. Returns the contacts and those that learned an id, for the caller to save (`wa_id`,
    `user_id`) with its own update."""
    wanted = sorted(set(identities), key=ContactIdentity.sort_key)
    initial = initial or {}
    # Sorted, so that two POSTs racing over the same contacts lock their rows in the same order.
    Contact.objects.bulk_create(
        [
            Contact(phone_number_id=i.phone_number_id, wa_id=i.wa_id, user_id=i.user_id, **initial.get(i, {}))
            for i in wanted
        ],
        ignore_conflicts=True,
    )
    found = _contacts_named(wanted)
    by_wa_id = {(c.phone_number_id, c.wa_id): c for c in found if c.wa_id}
    by_user_id = {(c.phone_number_id, c.user_id): c for c in found if c.user_id}
    contacts: dict[ContactIdentity, Contact] = {}
    learned: dict[int, Contact] = {}
    for identity in wanted:
        number = identity.phone_number_id
        by_number = by_wa_id.get((number, identity.wa_id)) if identity.wa_id else None
        by_user = by_user_id.get((number, identity.user_id)) if identity.user_id else None
        if by_number and by_user and by_number.pk != by_user.pk and _mergeable(by_number, by_user):
            survivor, gone = sorted((by_number, by_user), key=lambda c: c.pk)
            contact_merge(survivor=survivor, other=gone)
            for index in (by_wa_id, by_user_id):
                index.update({key: survivor for key, value in index.items() if value.pk == gone.pk})
            contacts.update({key: survivor for key, value in contacts.items() if value.pk == gone.pk})
            learned.pop(gone.pk, None)
            by_number = by_user = survivor
        contact = by_number or by_user
        if contact is None:  # cannot happen after the insert above; never lose the POST over it
            raise LookupError(f"contact {identity} missing after insert")
        # Learn the number or the BSUID once, unless another contact of this number already holds it.
        if not contact.wa_id and identity.wa_id and (number, identity.wa_id) not in by_wa_id:
            contact.wa_id = identity.wa_id
            by_wa_id[(number, identity.wa_id)] = contact
            learned[contact.pk] = contact
        if not contact.user_id and identity.user_id and (number, identity.user_id) not in by_user_id:
            contact.user_id = identity.user_id
            by_user_id[(number, identity.user_id)] = contact
            learned[contact.pk] = contact
        contacts[identity] = contact
    return contacts, list(learned.values())


def _contacts_named(identities: list[ContactIdentity]) -> list[Contact]:
    query = Q()
    for number in sorted({i.phone_number_id for i in identities}):
        wa_ids = {i.wa_id for i in identities if i.phone_number_id == number and i.wa_id}
        user_ids = {i.user_id for i in identities if i.phone_number_id == number and i.user_id}
        query |= Q(phone_number_id=number) & (Q(wa_id__in=wa_ids) | Q(user_id__in=user_ids))
    return list(Contact.objects.filter(query).order_by("pk"))


def _mergeable(by_number: Contact, by_user: Contact) -> bool:
    """Two contacts are one customer when neither contradicts the other: the one found by phone number has no
    BSUID of its own and the one found by BSUID no number of its own. Otherwise (a number now used by another
    BSUID) they stay apart and the phone number decides, as before BSUIDs."""
    return by_number.user_id is None and by_user.wa_id is None


# State that belongs together and is merged as a unit: each group is taken whole from one of the two contacts,
# never field by field (an opt-out time from one and the opt change time from the other would be a state
# neither contact was in).
OPT_FIELDS = ("opted_out_at", "opted_out_by", "opt_changed_at")
MARKETING_FIELDS = ("marketing_preference", "marketing_preference_at")
BOT_FIELDS = ("bot_paused_at", "bot_paused_by", "bot_pause_reason", "bot_human_at", "handoff_requested_at")


def contact_merge(*, survivor: Contact, other: Contact) -> None:
    """Move everything of `other` onto `survivor` and delete `other`.

    The survivor takes the ids it lacks (any empty identity field is filled from `other`) and the newer inbound
    time with its profile name. The opt-out, the marketing preference and the bot state are each taken whole
    from one contact (`merge_groups_from_other`)."""
    if survivor.phone_number_id != other.phone_number_id:
        raise ValueError("contacts of two business numbers are two conversations and are never merged")
    moved = 0
    for relation in Contact._meta.related_objects:
        if relation.one_to_many or relation.one_to_one:
            name = relation.field.name
            manager = relation.related_model._default_manager
            moved += manager.filter(**{name: other}).update(**{name: survivor})
    changed: list[str] = []
    grouped = {*OPT_FIELDS, *MARKETING_FIELDS, *BOT_FIELDS}
    for fields in merge_groups_from_other(survivor=survivor, other=other):
        for name in fields:
            field = Contact._meta.get_field(name)
            attname = field.attname  # type: ignore[union-attr]
            if getattr(survivor, attname) != getattr(other, attname):
                setattr(survivor, attname, getattr(other, attname))
                changed.append(attname)
    for field in Contact._meta.concrete_fields:
        if field.primary_key or field.name in ("created_at", "updated_at") or field.name in grouped:
            continue
        mine, theirs = getattr(survivor, field.attname), getattr(other, field.attname)
        if field.name == "last_inbound_at" and mine and theirs:
            if theirs > mine:
                setattr(survivor, field.attname, theirs)
                changed.append(field.attname)
                if other.profile_name:
                    survivor.profile_name = other.profile_name
                    changed.append("profile_name")
        elif _empty(field, mine) and not _empty(field, theirs):
            setattr(survivor, field.attname, theirs)
            changed.append(field.attname)
    # The other row goes first: it holds the id the survivor takes over (a UNIQUE key per number).
    Contact.objects.filter(pk=other.pk).delete()
    if changed:
        survivor.save(update_fields=sorted({*changed, "updated_at"}))
    logger.info(
        "contacts_merged contact_id=%s merged_contact_id=%s rows_moved=%s", survivor.pk, other.pk, moved
    )


def merge_groups_from_other(*, survivor: Contact, other: Contact) -> list[tuple[str, ...]]:
    """The field groups the merged contact takes whole from `other` (the rest stay the survivor's).

    - Opt-out (`OPT_FIELDS`): the newer `opt_changed_at` wins, so a START after an older STOP stays opted in
      and the reverse stays opted out. A contact without `opt_changed_at` counts from its `opted_out_at`.
    - Marketing (`MARKETING_FIELDS`): the newer `marketing_preference_at` wins.
    - Bot state (`BOT_FIELDS`): a paused conversation stays paused when either contact is paused (a person
      took it over; the bot must not answer over them). Both paused: the pause with the newer activity (the
      latest of `bot_paused_at`, `bot_human_at`, `handoff_requested_at`) wins, so its automatic resume counts
      from the latest human activity. Neither paused: nothing to take.

    On a tie (or no times at all) the survivor keeps its group unless it is empty and the other's is not.
    """
    taken: list[tuple[str, ...]] = []
    opt_mine = survivor.opt_changed_at or survivor.opted_out_at
    opt_theirs = other.opt_changed_at or other.opted_out_at
    if _takes_other(survivor, other, OPT_FIELDS, opt_mine, opt_theirs):
        taken.append(OPT_FIELDS)
    if _takes_other(
        survivor, other, MARKETING_FIELDS, survivor.marketing_preference_at, other.marketing_preference_at
    ):
        taken.append(MARKETING_FIELDS)
    if other.bot_paused_at is not None and (
        survivor.bot_paused_at is None or _latest_bot_activity(other) > _latest_bot_activity(survivor)
    ):
        taken.append(BOT_FIELDS)
    return taken


def _takes_other(
    survivor: Contact, other: Contact, fields: tuple[str, ...], mine: datetime | None, theirs: datetime | None
) -> bool:
    if theirs is not None and (mine is None or theirs > mine):
        return True
    if theirs != mine:
        return False
    empty = [
        _empty(Contact._meta.get_field(name), getattr(c, name)) for c in (survivor, other) for name in fields
    ]
    mine_empty, theirs_empty = all(empty[: len(fields)]), all(empty[len(fields) :])
    return mine_empty and not theirs_empty


def _latest_bot_activity(contact: Contact) -> datetime:
    times = [t for t in (contact.bot_paused_at, contact.bot_human_at, contact.handoff_requested_at) if t]
    return max(times) if times else datetime.min.replace(tzinfo=UTC)


def _empty(field: Any, value: Any) -> bool:
    return value is None or value == ""


def contacts_change_user_id(*, changes: Iterable[tuple[Contact, str]]) -> int:
    """Re-key each contact to its new BSUID (`user_changed_user_id`), keeping its history; return how many.

    A contact that already exists under the new BSUID (the customer wrote again before the system message
    arrived) is merged into the re-keyed one.
    """
    done = 0
    for contact, new_user_id in changes:
        if contact.user_id == new_user_id:
            continue
        holder = (
            Contact.objects.filter(phone_number_id=contact.phone_number_id, user_id=new_user_id)
            .exclude(pk=contact.pk)
            .first()
        )
        old = contact.user_id
        if holder is not None:
            if holder.wa_id and contact.wa_id and holder.wa_id != contact.wa_id:
                logger.warning(
                    "user_id_change_refused contact_id=%s holder_contact_id=%s: two phone numbers",
                    contact.pk,
                    holder.pk,
                )
                continue
            # The holder's BSUID is the one this contact takes: free it before the merge fills it in.
            Contact.objects.filter(pk=holder.pk).update(user_id=None)
            holder.user_id = None
            contact.user_id = None
            contact_merge(survivor=contact, other=holder)
        contact.user_id = new_user_id
        contact.save(update_fields=["user_id", "updated_at"])
        done += 1
        logger.info("contact_user_id_changed contact_id=%s had_user_id=%s", contact.pk, bool(old))
    return done
