"""The start of every run: release claims of workers presumed dead, reopen 131047 text replies, and give back
to the bot the conversations whose pause has run out."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

from outbound.models import JobChanged, OutboundJob
from outbound.services.handoff import contacts_bot_resume_expired

logger = logging.getLogger(__name__)


@dataclass
class RecoveryCounts:
    released: int = 0
    unsettled: int = 0
    reopened_for_template: int = 0
    # Not jobs: contacts whose pause ran out (OUTBOUND_HANDOFF_HOURS without a staff reply).
    bots_resumed: int = 0

    @property
    def total(self) -> int:
        return self.released + self.unsettled + self.reopened_for_template


def outbound_jobs_recover(
    *, stale_seconds: int, max_attempts: int, now: datetime | None = None
) -> RecoveryCounts:
    """Release claims whose worker is presumed dead, and reopen text replies Meta failed with 131047.

    A job whose worker keeps dying (a poison job) is not released forever: at `max_attempts` it is FAILED.
    """
    now = now or timezone.now()
    counts = RecoveryCounts()
    for job in OutboundJob.objects.stale(older_than=now - timedelta(seconds=stale_seconds)).order_by("pk"):
        try:
            if job.status == OutboundJob.Status.READY_TO_SEND and job.send_started_at is not None:
                job.mark_stale_send_unsettled()
                counts.unsettled += 1
                logger.error("stale_send_unsettled job_id=%s handed to staff", job.pk)
            elif job.attempts >= max_attempts:
                job.mark_failed(
                    token=job.claim_token,
                    error=f"attempt={job.attempts} phase=recovery the worker holding this job stopped "
                    f"responding {job.attempts} times; gave up",
                    require_unsent=True,
                )
                counts.unsettled += 1
            else:
                job.mark_stale_released()
                counts.released += 1
        except JobChanged:
            # Moved since it was read: finished, claimed again, or its send started (a worker that only
            # looked dead). The next recovery sees it as it is now.
            continue
    for job in OutboundJob.objects.awaiting_template_fallback().order_by("pk"):
        try:
            job.mark_reopened_for_template()
            counts.reopened_for_template += 1
        except JobChanged:
            continue
    counts.bots_resumed = contacts_bot_resume_expired(now=now)
    return counts
