"""Meta's status webhooks applied to jobs: delivery progress, and settling sends whose response was lost."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Q

from outbound.inbound import ParsedStatus
from outbound.models import JobChanged, OutboundJob
from outbound.services.preferences import MARKETING_STOPPED_CODE, contact_record_marketing_preference
from outbound.services.templates import TEMPLATE_STATUS_CODES, whatsapp_template_record_send_error
from outbound.vocabulary import DELIVERY_RANK, DeliveryStatus

logger = logging.getLogger(__name__)


@dataclass
class StatusCounts:
    applied: int = 0
    settled: int = 0
    unknown: int = 0


def outbound_jobs_record_statuses(*, statuses: list[ParsedStatus]) -> StatusCounts:
    """Apply Meta's status webhooks to jobs, never moving a delivery status backwards.

    A job is found by the message id Meta gave us, or, when the send's response was lost, by the key we put in
    `biz_opaque_callback_data`; such a status proves the send reached Meta and settles the job as SENT.
    """
    counts = StatusCounts()
    if not statuses:
        return counts
    keys = {status.callback_data: _parse_callback(status.callback_data) for status in statuses}
    job_keys = {parsed[0] for parsed in keys.values() if parsed}
    jobs = list(
        OutboundJob.objects.filter(Q(wa_message_id__in={s.wamid for s in statuses}) | Q(key__in=job_keys))
    )
    by_wamid = {job.wa_message_id: job for job in jobs if job.wa_message_id}
    by_key = {job.key: job for job in jobs}
    # Oldest first so that the last write for a job is its newest news.
    for status in sorted(statuses, key=lambda s: (s.timestamp, DELIVERY_RANK.get(s.status, 4))):
        job = by_wamid.get(status.wamid)
        if job is None:
            job = _settle_from_callback(status, keys.get(status.callback_data), by_key)
            if job is None:
                counts.unknown += 1
                logger.info("status_unknown wa_message_id=%s status=%s", status.wamid, status.status)
                continue
            by_wamid[job.wa_message_id] = job
            counts.settled += 1
        if _apply_delivery(job, status):
            counts.applied += 1
    return counts


def _parse_callback(data: str) -> tuple[uuid.UUID, str] | None:
    key, _, kind = data.partition(":")
    try:
        return uuid.UUID(key), kind.upper()
    except ValueError:
        return None


def _settle_from_callback(
    status: ParsedStatus, parsed: tuple[uuid.UUID, str] | None, by_key: dict[uuid.UUID, OutboundJob]
) -> OutboundJob | None:
    if parsed is None or parsed[0] not in by_key:
        return None
    job = by_key[parsed[0]]
    # Only the send this job is waiting on may settle it; an older text send's status must not.
    if job.wa_message_id or job.send_started_at is None or job.send_as != parsed[1]:
        return None
    if job.status not in (OutboundJob.Status.READY_TO_SEND, OutboundJob.Status.FAILED):
        return None
    try:
        job.mark_settled_sent(wa_message_id=status.wamid)
    except JobChanged:
        return None
    return job


def _apply_delivery(job: OutboundJob, status: ParsedStatus) -> bool:
    """One conditional UPDATE: the new status only replaces a lower one."""
    fields: dict[str, object] = {"delivery_status": status.status, "delivery_updated_at": status.timestamp}
    lower: list[str]
    if status.status == OutboundJob.Delivery.FAILED:
        lower = [DeliveryStatus.NONE, DeliveryStatus.SENT]
        first = status.errors[0] if status.errors else None
        fields["delivery_error_code"] = first.code if first else None
        fields["delivery_error"] = (f"{first.code} {first.title}: {first.details}" if first else "")[:2000]
    else:
        lower = [name for name, rank in DELIVERY_RANK.items() if rank < DELIVERY_RANK[status.status]]
    updated = OutboundJob.objects.filter(
        pk=job.pk, wa_message_id=status.wamid, delivery_status__in=lower
    ).update(**fields)
    code = status.errors[0].code if status.status == OutboundJob.Delivery.FAILED and status.errors else None
    if updated and code == MARKETING_STOPPED_CODE:
        # Meta reports 131050 asynchronously too: the customer stopped marketing messages.
        contact_record_marketing_preference(contact_id=job.contact_id, value="stop", at=status.timestamp)
    if (
        updated
        and code is not None
        and code in TEMPLATE_STATUS_CODES
        and job.send_as == OutboundJob.SendAs.TEMPLATE
    ):
        # A paused (132015) or disabled (132016) template usually shows up here, after the send was accepted.
        whatsapp_template_record_send_error(
            name=settings.WHATSAPP_TEMPLATE_NAME,
            language=settings.WHATSAPP_TEMPLATE_LANGUAGE,
            code=code,
            message=f"{code} {status.errors[0].title}: {status.errors[0].details}",
        )
    if updated:
        job.delivery_status = status.status
        logger.info(
            "delivery_status job_id=%s contact_id=%s status=%s code=%s",
            job.pk,
            job.contact_id,
            status.status,
            fields.get("delivery_error_code"),
        )
    return bool(updated)
