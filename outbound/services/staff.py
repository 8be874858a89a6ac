"""What staff do from the admin: retry, regenerate or cancel jobs; each refusal is reported, never raised."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from django.conf import settings
from django.utils import timezone

from outbound.models import JobChanged, OutboundJob
from outbound.wakeup import outbound_jobs_notify
from outbound.window import is_window_open


@dataclass
class StaffActionResult:
    done: list[OutboundJob] = field(default_factory=list)
    skipped: list[tuple[OutboundJob, str]] = field(default_factory=list)
    template_warnings: list[OutboundJob] = field(default_factory=list)


def outbound_jobs_retry(
    *, jobs: Iterable[OutboundJob], margin_seconds: int | None = None
) -> StaffActionResult:
    """FAILED → READY_TO_SEND (reply kept) or PENDING; anything else is refused and reported."""
    result = StaffActionResult()
    now = timezone.now()
    margin = settings.WHATSAPP_WINDOW_MARGIN_SECONDS if margin_seconds is None else margin_seconds
    for job in jobs:
        if job.status != OutboundJob.Status.FAILED:
            result.skipped.append((job, f"is {job.get_status_display()}, not failed"))
            continue
        try:
            job.mark_retried_by_staff()
        except JobChanged:
            result.skipped.append((job, "changed while retrying"))
            continue
        result.done.append(job)
        if not is_window_open(last_inbound_at=job.contact.last_inbound_at, now=now, margin_seconds=margin):
            result.template_warnings.append(job)
    if result.done:
        outbound_jobs_notify()  # an idle run sends them now, not at its next poll
    return result


def outbound_jobs_regenerate(*, jobs: Iterable[OutboundJob]) -> StaffActionResult:
    """Drop the stored reply and ask the model again (FAILED or waiting READY_TO_SEND bot replies)."""
    jobs = list(jobs)
    people = [job for job in jobs if job.kind != OutboundJob.Kind.BOT]
    result = _staff_apply(
        [job for job in jobs if job.kind == OutboundJob.Kind.BOT],
        allowed=(OutboundJob.Status.FAILED, OutboundJob.Status.READY_TO_SEND),
        apply=OutboundJob.mark_regenerate,
    )
    result.skipped += [(job, f"is a {job.get_kind_display()}, not the model's") for job in people]
    if result.done:
        outbound_jobs_notify()
    return result


def outbound_jobs_cancel(*, jobs: Iterable[OutboundJob]) -> StaffActionResult:
    """Make sure a job is never sent (only jobs no worker holds right now)."""
    return _staff_apply(
        jobs,
        allowed=(OutboundJob.Status.PENDING, OutboundJob.Status.READY_TO_SEND, OutboundJob.Status.FAILED),
        apply=OutboundJob.mark_cancelled,
    )


def _staff_apply(
    jobs: Iterable[OutboundJob], *, allowed: tuple[str, ...], apply: object
) -> StaffActionResult:
    result = StaffActionResult()
    for job in jobs:
        if job.status not in allowed:
            result.skipped.append((job, f"is {job.get_status_display()}"))
            continue
        if job.claim_token is not None:
            result.skipped.append((job, "is being processed by a worker right now"))
            continue
        try:
            apply(job)  # type: ignore[operator]
        except JobChanged:
            result.skipped.append((job, "changed while you acted"))
            continue
        result.done.append(job)
    return result
