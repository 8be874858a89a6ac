"""Who wrote to us and what they wrote: contacts and their inbound messages (written by the ingest).

The tables keep the names they had when these models lived in the `webhooks` app (migration 0003 moved the
models, not the data).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import models
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.models import Q

from outbound.numbers import PHONE_NUMBER_ID_MAX_LENGTH
from outbound.vocabulary import (
    ID_MAX_LENGTH,
    PROFILE_NAME_MAX_LENGTH,
    USER_ID_MAX_LENGTH,
    WA_ID_MAX_LENGTH,
    MessageType,
)


class BotPauseReason(models.TextChoices):
    """Why a person took a conversation over from the bot (`Contact.PauseReason`)."""

    STAFF_REPLY = "STAFF_REPLY", "a staff member replied"
    """Staff answered from the admin."""
    STAFF_ACTION = "STAFF_ACTION", "a staff member paused it"
    """Staff pressed "pause the bot"."""
    CUSTOMER_ASKED = "CUSTOMER_ASKED", "the customer asked for a person"
    """The customer tapped the "Talk to a person" button."""
    MODEL_ASKED = "MODEL_ASKED", "the model handed over"
    """The model answered with the `handoff` action."""
    MODEL_FAILED = "MODEL_FAILED", "the model gave no usable answer"
    """Refusals or incomplete answers until the attempts ran out: a person answers instead."""
    BUSINESS_APP = "BUSINESS_APP", "the business replied from the WhatsApp Business app"
    """An `smb_message_echoes` webhook: the owner answered from the phone app on the same number."""


class MarketingPreference(models.TextChoices):
    """What the customer told Meta about marketing messages (`user_preferences` webhook, §12.4)."""

    STOP = "stop", "stopped"
    """The customer stopped marketing messages (sends of them fail with 131050)."""
    RESUME = "resume", "resumed"
    """The customer asked for marketing messages again."""


def bot_paused_q(*, now: datetime, hours: int | None = None, prefix: str = "") -> Q:
    """The rows whose bot is paused right now: paused, and not yet past OUTBOUND_HANDOFF_HOURS of quiet.

    A pause ends by itself `hours` after the last human activity (the pause, a staff reply, an echo); 0 means
    never. Evaluated in the query, so an expired pause stops holding jobs back even before the sweep clears it.
    `prefix` is the path to the contact ("contact__" from a job).
    """
    hours = settings.OUTBOUND_HANDOFF_HOURS if hours is None else hours
    paused = Q(**{f"{prefix}bot_paused_at__isnull": False})
    if hours <= 0:
        return paused
    return paused & Q(**{f"{prefix}bot_human_at__gt": now - timedelta(hours=hours)})


def bot_paused_sql(
    *, now: datetime, alias: str, connection: BaseDatabaseWrapper, hours: int | None = None
) -> tuple[str, list[Any]]:
    """`bot_paused_q` as a SQL predicate on the contact row named `alias`, with its parameters: the same
    conditions and the same `now`, for a hand-written statement (a job's transition). A test checks that both
    select the same contacts.
    """
    hours = settings.OUTBOUND_HANDOFF_HOURS if hours is None else hours
    paused_at, human_at = Contact.bot_paused_at.field, Contact.bot_human_at.field

    def column(field: models.Field[Any, Any]) -> str:
        return f"{alias}.{connection.ops.quote_name(field.column or field.name)}"

    paused = f"{column(paused_at)} IS NOT NULL"
    if hours <= 0:
        return paused, []
    since = human_at.get_db_prep_value(now - timedelta(hours=hours), connection)
    return f"{paused} AND {column(human_at)} > %s", [since]


class Contact(models.Model):
    """A WhatsApp user who has written to one of the business numbers: one conversation.

    The conversation is (business number, customer): the same person writing to two of the business's numbers
    is two contacts, each with its own 24-hour window, history, bot state and pair-rate limit, and each answered
    from the number it wrote to.
    """

    PauseReason = BotPauseReason
    Marketing = MarketingPreference

    # The business number the customer wrote to (`value.metadata.phone_number_id`); replies leave from it.
    phone_number_id = models.CharField("business number", max_length=PHONE_NUMBER_ID_MAX_LENGTH)
    # Meta omits the phone number for username users (2026 identity change): then only the BSUID is known.
    # Each is unique per business number (the constraints below); NULL, not "", so missing ids never clash.
    wa_id = models.CharField(  # noqa: DJ001
        "WhatsApp number", max_length=WA_ID_MAX_LENGTH, null=True, blank=True
    )
    user_id = models.CharField(  # noqa: DJ001
        "business-scoped user id", max_length=USER_ID_MAX_LENGTH, null=True, blank=True
    )
    profile_name = models.CharField(max_length=PROFILE_NAME_MAX_LENGTH, blank=True)
    # Meta's timestamp of the newest inbound message (not our receipt time): it opens the 24-hour window.
    last_inbound_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # The bot's state for this contact (outbound.services.handoff writes it): active when bot_paused_at is null.
    bot_paused_at = models.DateTimeField("bot paused since", null=True, blank=True, db_index=True)
    bot_paused_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name="bot paused by",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    bot_pause_reason = models.CharField(
        "why the bot is paused",
        max_length=max(len(v) for v in BotPauseReason.values),
        choices=BotPauseReason.choices,
        blank=True,
    )
    # The last human activity (the pause itself, a staff reply, a reply from the Business app): the automatic
    # resume counts OUTBOUND_HANDOFF_HOURS from here.
    bot_human_at = models.DateTimeField("last human activity", null=True, blank=True)
    # When the customer (or the model) asked for a person and nobody has answered yet.
    handoff_requested_at = models.DateTimeField("waiting for a person since", null=True, blank=True)

    # Opt-out (outbound.services.optout writes it): the customer sent STOP (or staff opted them out); the bot
    # sends them nothing until START. Null: opted in.
    opted_out_at = models.DateTimeField("opted out since", null=True, blank=True, db_index=True)
    opted_out_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        verbose_name="opted out by",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="the staff member who opted the customer out; empty when the customer sent the keyword",
    )
    # When the opt state last changed (Meta's timestamp of the keyword message, or the staff action's time):
    # an older STOP or START redelivered later cannot undo a newer change.
    opt_changed_at = models.DateTimeField("opt state changed at", null=True, blank=True)
    # Meta's `user_preferences` webhook and error 131050: whether the customer stopped marketing messages.
    marketing_preference = models.CharField(
        "marketing messages",
        max_length=max(len(v) for v in MarketingPreference.values),
        choices=MarketingPreference.choices,
        blank=True,
    )
    marketing_preference_at = models.DateTimeField("marketing preference since", null=True, blank=True)

    class Meta:
        db_table = "webhooks_contact"
        ordering = ["-last_inbound_at"]
        constraints = [
            # The conversation keys: the ingest's ON CONFLICT targets (outbound.services.ingest_sql).
            models.UniqueConstraint(fields=["phone_number_id", "wa_id"], name="contact_number_wa_id"),
            models.UniqueConstraint(fields=["phone_number_id", "user_id"], name="contact_number_user_id"),
        ]
        indexes = [
            # The admin's list order.
            models.Index(fields=["-last_inbound_at", "-id"], name="contact_last_inbound"),
            # A customer by number or BSUID on every business number (admin search, the preference lookup):
            # the unique keys lead with the business number.
            models.Index(fields=["wa_id"], name="contact_wa_id"),
            models.Index(fields=["user_id"], name="contact_user_id"),
            # The conversations waiting for a person (the admin index, /metrics).
            models.Index(
                fields=["handoff_requested_at"],
                name="contact_waiting",
                condition=Q(handoff_requested_at__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        number = f"+{self.wa_id}" if self.wa_id else self.user_id or "?"
        return f"{self.profile_name} ({number})" if self.profile_name else number

    def bot_paused(self, *, now: datetime, hours: int | None = None) -> bool:
        """Whether the bot must stay quiet for this contact right now (the Python side of `bot_paused_q`)."""
        if self.bot_paused_at is None:
            return False
        hours = settings.OUTBOUND_HANDOFF_HOURS if hours is None else hours
        if hours <= 0:
            return True
        since = self.bot_human_at or self.bot_paused_at
        return since > now - timedelta(hours=hours)

    def bot_resumes_at(self, *, hours: int | None = None) -> datetime | None:
        """When the pause ends by itself (None: active, or OUTBOUND_HANDOFF_HOURS=0)."""
        hours = settings.OUTBOUND_HANDOFF_HOURS if hours is None else hours
        if self.bot_paused_at is None or hours <= 0:
            return None
        return (self.bot_human_at or self.bot_paused_at) + timedelta(hours=hours)


class MediaStatus(models.TextChoices):
    """Where an inbound voice note or image stands in the worker's media phase (`InboundMessage.MediaStatus`)."""

    NONE = "", "not fetched"
    """Not a media message the worker fetches, or not fetched yet."""
    READY = "READY", "fetched"
    """Downloaded and checked: a voice note's transcript is stored, an image's description (never its bytes)."""
    GONE = "GONE", "gone at Meta"
    """Meta no longer has it (the media id lives 7 days, the download URL minutes): the customer is asked to
    resend."""
    TOO_LARGE = "TOO_LARGE", "too large"
    """Over OUTBOUND_MEDIA_MAX_BYTES: the customer is asked to write instead."""
    CORRUPT = "CORRUPT", "damaged"
    """The bytes did not match Meta's sha256: the customer is asked to resend."""
    UNREADABLE = "UNREADABLE", "could not be transcribed"
    """The transcription refused the audio (a format it does not take): the customer is asked to write."""


class InboundMessage(models.Model):
    """One message a customer sent, stored once whatever Meta redelivers."""

    Type = MessageType
    MediaStatus = MediaStatus

    wamid = models.CharField("Meta message id", max_length=ID_MAX_LENGTH, unique=True)
    contact = models.ForeignKey(Contact, on_delete=models.PROTECT, related_name="inbound_messages")
    type = models.CharField(
        max_length=max(len(v) for v in MessageType), choices=[(t.value, t.name.title()) for t in MessageType]
    )
    # What a model can read: the text itself, or a bracketed description of a non-text message.
    text = models.TextField(blank=True)
    needs_reply = models.BooleanField(default=False)
    timestamp = models.DateTimeField(help_text="Meta's timestamp of the message")
    raw = models.JSONField(help_text="the message object exactly as Meta sent it")
    received_at = models.DateTimeField(auto_now_add=True)

    # Media (image, audio, video, document, sticker), as the webhook gave it. The bytes are never stored: the
    # worker fetches them from Meta when it answers (`outbound.services.media`).
    media_id = models.CharField("Meta media id", max_length=ID_MAX_LENGTH, blank=True)
    media_mime_type = models.CharField(max_length=255, blank=True)
    media_sha256 = models.CharField(max_length=128, blank=True)
    media_caption = models.TextField(blank=True)
    media_status = models.CharField(
        max_length=max(len(v) for v in MediaStatus.values),
        choices=MediaStatus.choices,
        default="",
        blank=True,
    )
    media_description = models.CharField(
        max_length=500, blank=True, help_text="what the worker found: type, size, caption (never the bytes)"
    )
    # A voice note's words: `text` then holds them too, labelled as a transcript, for the model and staff.
    transcript = models.TextField(
        blank=True, help_text="the voice note transcribed (OPENAI_TRANSCRIPTION_MODEL)"
    )

    class Meta:
        db_table = "webhooks_inboundmessage"
        ordering = ["-timestamp"]
        indexes = [
            models.Index(fields=["contact", "timestamp"], name="inbound_contact_time"),
            # The admin's list order.
            models.Index(fields=["-timestamp", "-id"], name="inbound_time"),
            # The admin's media status filter, in the list's order (a rare status walked the whole list).
            models.Index(fields=["media_status", "-timestamp", "-id"], name="inbound_media_time"),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.wamid}"


class EchoMessage(models.Model):
    """A message the business sent from the WhatsApp Business app on the same number (`smb_message_echoes`).

    Not ours to send or retry: stored to show in the conversation, and as the signal that a person is answering.
    """

    wamid = models.CharField("Meta message id", max_length=ID_MAX_LENGTH, unique=True)
    contact = models.ForeignKey(Contact, on_delete=models.PROTECT, related_name="echo_messages")
    type = models.CharField(max_length=32)
    text = models.TextField(blank=True)
    timestamp = models.DateTimeField(help_text="Meta's timestamp of the message")
    raw = models.JSONField(help_text="the echo object exactly as Meta sent it")
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-timestamp"]
        indexes = [models.Index(fields=["contact", "timestamp"], name="echo_contact_time")]

    def __str__(self) -> str:
        return f"echo {self.type} {self.wamid}"
