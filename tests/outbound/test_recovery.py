"""Stale-claim recovery (outbound.services.recovery)."""

from __future__ import annotations

import pytest

from outbound.models import OutboundJob
from outbound.services.claims import outbound_jobs_claim
from outbound.services.recovery import outbound_jobs_recover

pytestmark = pytest.mark.django_db
S = OutboundJob.Status


def fresh(job: OutboundJob) -> OutboundJob:
    return OutboundJob.objects.get(pk=job.pk)


def test_recovery_leaves_fresh_claims_alone(inbound):
    job = inbound()
    outbound_jobs_claim(limit=1, worker_id="w1")
    counts = outbound_jobs_recover(stale_seconds=300, max_attempts=5)
    assert counts.total == 0
    assert fresh(job).status == S.GENERATING
