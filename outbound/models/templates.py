"""What Meta last said about the business's message templates (webhooks, `check_whatsapp_template`, send errors).

Not tied to a business number: templates belong to the WhatsApp Business Account. The worker reads the row of
the configured fallback template (WHATSAPP_TEMPLATE_NAME / WHATSAPP_TEMPLATE_LANGUAGE) before sending it, and
the admin index warns when it is not approved.
"""

from __future__ import annotations

from django.db import models


class WhatsAppTemplate(models.Model):
    """One template in one language, as Meta last reported it."""

    class Source(models.TextChoices):
        """Where the recorded status came from."""

        WEBHOOK = "WEBHOOK", "Meta's webhook"
        """`message_template_status_update` or `template_category_update`."""
        CHECK = "CHECK", "check_whatsapp_template"
        """The management command asked the Graph API."""
        SEND_ERROR = "SEND_ERROR", "a send error"
        """A send failed with 132015 (paused) or 132016 (disabled)."""

    # Meta's statuses (template webhooks and the message_templates listing); others are stored as sent.
    APPROVED = "APPROVED"

    name = models.CharField(max_length=512)
    language = models.CharField(max_length=32, blank=True, help_text="empty when Meta's event did not say")
    status = models.CharField(max_length=64, blank=True, help_text="APPROVED, PAUSED, DISABLED, REJECTED, …")
    category = models.CharField(max_length=64, blank=True, help_text="UTILITY, MARKETING, AUTHENTICATION")
    reason = models.TextField(blank=True, help_text="Meta's reason or description, when it gave one")
    template_id = models.CharField("Meta template id", max_length=64, blank=True)
    source = models.CharField(
        max_length=max(len(v) for v in Source.values), choices=Source.choices, default=Source.WEBHOOK
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "WhatsApp template"
        ordering = ["name", "language"]
        constraints = [
            models.UniqueConstraint(fields=["name", "language"], name="whatsapp_template_name_language")
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.language or '?'}): {self.status or 'unknown'}"

    @property
    def approved(self) -> bool:
        return self.status == self.APPROVED
