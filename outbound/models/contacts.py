"""Who wrote to us and what they wrote: contacts and their inbound messages (written by the ingest).

The tables keep the names they had when these models lived in the `webhooks` app (migration 0003 moved the
models, not the data).
"""

from __future__ import annotations

from django.db import models

from outbound.vocabulary import (
    ID_MAX_LENGTH,
    PROFILE_NAME_MAX_LENGTH,
    USER_ID_MAX_LENGTH,
    WA_ID_MAX_LENGTH,
    MessageType,
)


class Contact(models.Model):
    """A WhatsApp user who has written to the business number."""

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

    class Meta:
        db_table = "webhooks_contact"
        ordering = ["-last_inbound_at"]

    def __str__(self) -> str:
        number = f"+{self.wa_id}" if self.wa_id else self.user_id or "?"
        return f"{self.profile_name} ({number})" if self.profile_name else number


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
        indexes = [models.Index(fields=["contact", "timestamp"], name="inbound_contact_time")]

    def __str__(self) -> str:
        return f"{self.type} {self.wamid}"
