"""Who wrote to us and what they wrote: contacts and their inbound messages."""

from django.db import models


class Contact(models.Model):
    """A WhatsApp user who has written to the business number."""

    # Meta omits the phone number for username users (2026 identity change): then only the BSUID is known.
    wa_id = models.CharField("WhatsApp number", max_length=32, unique=True, null=True, blank=True)
    user_id = models.CharField("business-scoped user id", max_length=160, unique=True, null=True, blank=True)
    profile_name = models.CharField(max_length=256, blank=True)
    # Meta's timestamp of the newest inbound message (not our receipt time): it opens the 24-hour window.
    last_inbound_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-last_inbound_at"]

    def __str__(self) -> str:
        number = f"+{self.wa_id}" if self.wa_id else self.user_id or "?"
        return f"{self.profile_name} ({number})" if self.profile_name else number


class InboundMessage(models.Model):
    """One message a customer sent, stored once whatever Meta redelivers."""

    class Type(models.TextChoices):
        TEXT = "text"
        IMAGE = "image"
        AUDIO = "audio"
        VIDEO = "video"
        DOCUMENT = "document"
        STICKER = "sticker"
        INTERACTIVE = "interactive"
        BUTTON = "button"
        REACTION = "reaction"
        LOCATION = "location"
        CONTACTS = "contacts"
        ORDER = "order"
        SYSTEM = "system"
        REVOKE = "revoke"
        UNSUPPORTED = "unsupported"
        UNKNOWN = "unknown"

    wamid = models.CharField("Meta message id", max_length=256, unique=True)
    contact = models.ForeignKey(Contact, on_delete=models.PROTECT, related_name="inbound_messages")
    type = models.CharField(max_length=max(len(v) for v in Type.values), choices=Type.choices)
    # What a model can read: the text itself, or a bracketed description of a non-text message.
    text = models.TextField(blank=True)
    needs_reply = models.BooleanField(default=False)
    timestamp = models.DateTimeField(help_text="Meta's timestamp of the message")
    raw = models.JSONField(help_text="the message object exactly as Meta sent it")
    received_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-timestamp"]
        indexes = [models.Index(fields=["contact", "timestamp"], name="inbound_contact_time")]

    def __str__(self) -> str:
        return f"{self.type} {self.wamid}"
