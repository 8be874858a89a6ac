"""Template health: what Meta says about the business's templates, and whether the fallback may be sent.

Three sources write `WhatsAppTemplate`: the template webhooks (`message_template_status_update`,
`template_category_update`), the `check_whatsapp_template` command (Graph API listing), and send errors 132015
(paused) / 132016 (disabled). The worker asks `template_refusal` before sending the configured fallback template:
a template Meta reported as not approved fails the job with that reason, without a Graph call per attempt.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings

from outbound.exceptions import GraphError, GraphTransportError
from outbound.inbound import ParsedTemplateEvent
from outbound.models import WhatsAppTemplate
from outbound.whatsapp import WhatsAppClient

logger = logging.getLogger(__name__)

# Send errors that tell the template's status (§8.2).
TEMPLATE_STATUS_CODES: dict[int, str] = {132015: "PAUSED", 132016: "DISABLED"}


# `message_template_status_update` sends events, not all of them statuses. Those that say the template can be sent
# again, and those that change nothing about sending (the template is still usable, or still not).
# https://developers.facebook.com/docs/graph-api/webhooks/reference/whatsapp-business-account/#message_template_status_update
EVENT_STATUS: dict[str, str] = {"REINSTATED": "APPROVED"}
# FLAGGED: quality is low but it still sends (PAUSED follows if it does not improve); LOCKED/UNLOCKED: editing
# only; IN_APPEAL: a REJECTED template under appeal, still not sendable; LIMIT_EXCEEDED: no more new templates.
NOTICE_EVENTS = frozenset({"FLAGGED", "LOCKED", "UNLOCKED", "IN_APPEAL", "LIMIT_EXCEEDED"})
# UNARCHIVED returns the template to a status the event does not say: unknown until checked (never blocking).
UNKNOWN_AFTER = frozenset({"UNARCHIVED"})


def template_status_after(event: str) -> str | None:
    """The status to record for a template event; None when the event leaves the recorded status as it is."""
    event = event.upper()
    if event in NOTICE_EVENTS:
        return None
    if event in UNKNOWN_AFTER:
        return ""
    return EVENT_STATUS.get(event, event)


def whatsapp_templates_record(*, events: list[ParsedTemplateEvent]) -> int:
    """Upsert each template event (status or category) by name and language; returns how many were recorded.

    With WHATSAPP_BUSINESS_ACCOUNT_ID set, events of other business accounts are ignored.
    """
    account = settings.WHATSAPP_BUSINESS_ACCOUNT_ID
    recorded = 0
    for event in events:
        if account and event.account_id and event.account_id != account:
            logger.info("template_event_ignored account_id=%s name=%s", event.account_id, event.name)
            continue
        fields: dict[str, str] = {"source": WhatsAppTemplate.Source.WEBHOOK}
        if event.template_id:
            fields["template_id"] = event.template_id
        if event.status:
            status = template_status_after(event.status)
            if status is not None:
                fields.update(status=status, reason=event.reason)
        if event.category:
            fields["category"] = event.category.upper()
        whatsapp_template_upsert(name=event.name, language=event.language, **fields)
        logger.info(
            "template_event name=%s language=%s status=%s category=%s",
            event.name,
            event.language,
            event.status,
            event.category,
        )
        recorded += 1
    return recorded


def whatsapp_template_upsert(*, name: str, language: str, **fields: str) -> WhatsAppTemplate:
    """Create or update the row of (name, language) with `fields`."""
    template, created = WhatsAppTemplate.objects.get_or_create(name=name, language=language, defaults=fields)
    if not created and fields:
        for key, value in fields.items():
            setattr(template, key, value)
        template.save(update_fields=[*fields, "updated_at"])
    return template


def whatsapp_template_record_send_error(*, name: str, language: str, code: int, message: str) -> None:
    """A send failed with 132015/132016: record the template as paused/disabled."""
    status = TEMPLATE_STATUS_CODES.get(code)
    if status:
        whatsapp_template_upsert(
            name=name,
            language=language,
            status=status,
            reason=message[:1000],
            source=WhatsAppTemplate.Source.SEND_ERROR,
        )


@dataclass(frozen=True)
class TemplateHealth:
    """The configured fallback template and what Meta last said about it (None: nothing recorded yet)."""

    name: str
    language: str
    recorded: WhatsAppTemplate | None

    @property
    def approved(self) -> bool | None:
        return None if self.recorded is None else self.recorded.approved


def fallback_template_health() -> TemplateHealth | None:
    """The configured template's health; None when no template is configured."""
    name = settings.WHATSAPP_TEMPLATE_NAME
    if not name:
        return None
    language = settings.WHATSAPP_TEMPLATE_LANGUAGE
    return TemplateHealth(
        name=name,
        language=language,
        recorded=WhatsAppTemplate.objects.filter(name=name, language=language).first(),
    )


def template_refusal(*, name: str, language: str) -> str | None:
    """Why the template must not be sent (Meta reported it not approved), or None (approved or unknown)."""
    template = WhatsAppTemplate.objects.filter(name=name, language=language).first()
    if template is None or template.approved or not template.status:
        return None
    reason = f" ({template.reason})" if template.reason else ""
    return (
        f"the template “{name}” ({language}) is {template.status}{reason} according to "
        f"{template.get_source_display()} at {template.updated_at:%Y-%m-%d %H:%M:%S}; Meta refuses to send it "
        "until it is approved again: fix it in WhatsApp Manager (or set WHATSAPP_TEMPLATE_NAME to an approved "
        "template), run `manage.py check_whatsapp_template`, then retry the job"
    )


class TemplateCheckError(Exception):
    """The template could not be checked, or is not usable; the message says why, for the operator."""


def whatsapp_template_check(
    *, client: WhatsAppClient, account_id: str, name: str, language: str
) -> WhatsAppTemplate:
    """Ask the Graph API for the template in that language and record what it says.

    Raises TemplateCheckError when Meta cannot be asked or has no such template in that language (nothing is
    recorded then); a template found is recorded whatever its status, and returned.
    """
    try:
        found = client.message_templates(account_id=account_id, name=name)
    except GraphError as exc:
        raise TemplateCheckError(
            f"the Graph API refused to list the templates ({exc.describe()}): check WHATSAPP_BUSINESS_ACCOUNT_ID "
            "and that WHATSAPP_ACCESS_TOKEN has the whatsapp_business_management permission"
        ) from exc
    except GraphTransportError as exc:
        raise TemplateCheckError(f"could not reach the Graph API (WHATSAPP_GRAPH_URL): {exc}") from exc
    match = next((t for t in found if t.get("language") == language), None)
    if match is None:
        languages = ", ".join(sorted(str(t.get("language")) for t in found)) or "none"
        raise TemplateCheckError(
            f"the business account has no template “{name}” in {language} (languages found: {languages}): "
            "check WHATSAPP_TEMPLATE_NAME and WHATSAPP_TEMPLATE_LANGUAGE"
        )
    template = whatsapp_template_upsert(
        name=name,
        language=language,
        status=str(match.get("status") or "").upper()[:64],
        category=str(match.get("category") or "").upper()[:64],
        reason=str(match.get("rejected_reason") or "").replace("NONE", "")[:1000],
        template_id=str(match.get("id") or "")[:64],
        source=WhatsAppTemplate.Source.CHECK,
    )
    logger.info("template_checked name=%s language=%s status=%s", name, language, template.status)
    return template
