"""Opt-out and opt-in: a customer's STOP stops the bot's replies, START turns them back on; staff can do either.

Where it happens (bursts of messages coalesce into one job, so the ingest decides, the worker acts):
- The ingest, in the transaction that stores the messages, finds messages that are only an opt keyword
  (`opt_keyword`), changes the contact's state with one conditional UPDATE each (an older keyword redelivered
  after a newer change changes nothing), and turns the keyword's own job into an `OPT_OUT` / `OPT_IN`
  confirmation job. A keyword that changes nothing (STOP while opted out) keeps its bot job.
- The worker sends a confirmation job's configured text without asking the model, inside the 24-hour window
  only (it is a reply). A bot job of an opted-out contact ends NO_REPLY without a model call or a typing
  indicator, the reason in its error log; a bot reply generated before the STOP is refused in the UPDATE that
  starts its send.
"""

from __future__ import annotations

import functools
import logging
import string
import unicodedata
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from outbound.inbound import ParsedMessage
from outbound.models import Contact, OutboundJob
from outbound.vocabulary import MessageType

logger = logging.getLogger(__name__)

OPT_OUT = OutboundJob.Kind.OPT_OUT
OPT_IN = OutboundJob.Kind.OPT_IN


def _normalise(text: str) -> str:
    """Casefolded, accents kept, punctuation, symbols (emoji) and spaces around the word dropped."""
    text = unicodedata.normalize("NFC", text).strip()
    while text and (unicodedata.category(text[0])[0] in "PSZ" or text[0] in string.whitespace):
        text = text[1:]
    while text and (unicodedata.category(text[-1])[0] in "PSZ" or text[-1] in string.whitespace):
        text = text[:-1]
    return " ".join(text.split()).casefold()


def opt_keyword(
    text: str, *, opt_out: Iterable[str] | None = None, opt_in: Iterable[str] | None = None
) -> str | None:
    """`OPT_OUT` or `OPT_IN` when the message is only one of the keywords ("Stop!", " stop. "), else None.

    The keywords default to OUTBOUND_OPT_OUT_KEYWORDS / OUTBOUND_OPT_IN_KEYWORDS. A keyword inside a sentence
    ("please don't stop") is not one: only the whole message counts.
    """
    text = text.strip()
    if len(text) > 80:  # a sentence, not a keyword: skip the normalising (every inbound text passes here)
        return None
    word = _normalise(text)
    if not word:
        return None
    outs = settings.OUTBOUND_OPT_OUT_KEYWORDS if opt_out is None else opt_out
    ins = settings.OUTBOUND_OPT_IN_KEYWORDS if opt_in is None else opt_in
    if word in _keyword_set(tuple(outs)):
        return OPT_OUT
    if word in _keyword_set(tuple(ins)):
        return OPT_IN
    return None


@functools.lru_cache(maxsize=16)
def _keyword_set(keywords: tuple[str, ...]) -> frozenset[str]:
    # Cached on the keywords themselves (not on the settings), so a changed setting is read at once.
    return frozenset(_normalise(k) for k in keywords)


def keyword_messages(messages: Iterable[ParsedMessage]) -> list[tuple[ParsedMessage, str]]:
    """The text messages that are only an opt keyword, with which one, oldest first."""
    found = [
        (m, kind)
        for m in messages
        if m.type == MessageType.TEXT and (kind := opt_keyword(m.text)) is not None
    ]
    return sorted(found, key=lambda pair: (pair[0].timestamp, pair[0].wamid))


def contacts_opt_apply(*, keywords: list[tuple[ParsedMessage, str, Contact]]) -> int:
    """Apply stored keyword messages (inside the ingest's transaction), each with its contact, oldest first:
    change the contacts' opt state and make each keyword that changed it a confirmation job. Returns how many
    states changed."""
    changed = 0
    now = timezone.now()
    for message, kind, contact in keywords:
        newer = Q(opt_changed_at__isnull=True) | Q(opt_changed_at__lt=message.timestamp)
        rows = Contact.objects.filter(newer, pk=contact.pk)
        if kind == OPT_OUT:
            updated = rows.filter(opted_out_at__isnull=True).update(
                opted_out_at=message.timestamp,
                opted_out_by=None,
                opt_changed_at=message.timestamp,
                updated_at=now,
            )
        else:
            updated = rows.filter(opted_out_at__isnull=False).update(
                opted_out_at=None, opted_out_by=None, opt_changed_at=message.timestamp, updated_at=now
            )
        if not updated:
            logger.info("opt_keyword_unchanged contact_id=%s kind=%s", contact.pk, kind)
            continue
        changed += 1
        # The keyword's own job (created in this transaction, so no worker holds it) carries the confirmation.
        OutboundJob.objects.filter(
            inbound_message__wamid=message.wamid,
            kind=OutboundJob.Kind.BOT,
            status=OutboundJob.Status.PENDING,
            claim_token__isnull=True,
        ).update(kind=kind, updated_at=now)
        logger.info("opt_changed contact_id=%s kind=%s by=customer", contact.pk, kind)
    return changed


def contact_opt_out(*, contact: Contact, by: Any, now: datetime | None = None) -> bool:
    """Staff opt a customer out (no message is sent); False when already opted out."""
    now = now or timezone.now()
    changed = Contact.objects.filter(pk=contact.pk, opted_out_at__isnull=True).update(
        opted_out_at=now, opted_out_by=by, opt_changed_at=now, updated_at=now
    )
    if changed:
        contact.refresh_from_db()
        logger.info("opt_changed contact_id=%s kind=%s by=%s", contact.pk, OPT_OUT, getattr(by, "pk", None))
    return bool(changed)


def contact_opt_in(*, contact: Contact, by: Any, now: datetime | None = None) -> bool:
    """Staff opt a customer back in (no message is sent; their next message is answered); False when not out."""
    now = now or timezone.now()
    changed = Contact.objects.filter(pk=contact.pk, opted_out_at__isnull=False).update(
        opted_out_at=None, opted_out_by=None, opt_changed_at=now, updated_at=now
    )
    if changed:
        contact.refresh_from_db()
        logger.info("opt_changed contact_id=%s kind=%s by=%s", contact.pk, OPT_IN, getattr(by, "pk", None))
    return bool(changed)


def opt_out_reason(contact: Contact) -> str:
    """Why a bot job of this opted-out contact is not answered, in words for the admin."""
    since = f"{contact.opted_out_at:%Y-%m-%d %H:%M:%S}" if contact.opted_out_at else "?"
    who = "staff opted them out" if contact.opted_out_by_id else "the customer opted out"
    return f"{who} at {since}; they get no replies until they send START (or staff opt them in)"
