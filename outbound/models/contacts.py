"""Who wrote to us and what they wrote: contacts and their inbound messages (written by the ingest).

The tables keep the names they had when these models lived in the `webhooks` app (migration 0003 moved the
models, not the data).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q

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


class Contact(models.Model):
    """A WhatsApp user who has written to the business number."""

    PauseReason = BotPauseReason

    # Meta omits the phone number for username users (2026 identity change): then only the BSUID is known.
    wa_id = models.CharField(
        "WhatsApp number", max_length=WA_ID_MAX_LENGTH, unique=True, null=True, blank=True
    )
    user_id = models.CharField(
        "business-scoped user id", max_length=USER_ID_MAX_LENGTH, unique=True, null=True, blank=True
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

    class Meta:
        db_table = "webhooks_contact"
        ordering = ["-last_inbound_at"]
        indexes = [
            # The admin's list order.
            models.Index(fields=["-last_inbound_at", "-id"], name="contact_last_inbound"),
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


class InboundMessage(models.Model):
    """One message a customer sent, stored once whatever Meta redelivers."""

    Type = MessageType

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

    class Meta:
        db_table = "webhooks_inboundmessage"
        ordering = ["-timestamp"]
        indexes = [
            models.Index(fields=["contact", "timestamp"], name="inbound_contact_time"),
            # The admin's list order.
            models.Index(fields=["-timestamp", "-id"], name="inbound_time"),
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
