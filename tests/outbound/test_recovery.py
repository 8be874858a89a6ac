"""Stale-claim recovery (outbound.services.recovery)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

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


@pytest.mark.parametrize("attempts", [1, 5])
def test_recovery_never_releases_or_fails_a_claim_whose_send_started_after_it_read_the_row(
    inbound, monkeypatch, attempts
):
    # The claim looks stale (a slow or paused worker), recovery reads it with no send started; the worker, alive
    # after all, then records its send start and calls Graph. Releasing the claim now would let another worker
    # send the same reply again (and failing it would tell staff nothing was sent).
    job = inbound()
    [claimed] = outbound_jobs_claim(limit=1, worker_id="slow-worker")
    assert claimed.claim_token is not None
    claimed.mark_generated(token=claimed.claim_token, content="Hello!", send_as=OutboundJob.SendAs.TEXT)
    OutboundJob.objects.filter(pk=job.pk).update(
        claimed_at=timezone.now() - timedelta(hours=1), attempts=attempts
    )
    worker = fresh(job)

    def send_starts_first(release: Any) -> Any:
        def moved(self: OutboundJob, *args: Any, **kwargs: Any) -> None:
            assert self.send_started_at is None  # as recovery read it
            worker.mark_send_started(token=claimed.claim_token, send_as=OutboundJob.SendAs.TEXT)
            release(self, *args, **kwargs)

        return moved

    monkeypatch.setattr(
        OutboundJob, "mark_stale_released", send_starts_first(OutboundJob.mark_stale_released)
    )
    monkeypatch.setattr(OutboundJob, "mark_failed", send_starts_first(OutboundJob.mark_failed))
    counts = outbound_jobs_recover(stale_seconds=300, max_attempts=5)
    assert (counts.released, counts.unsettled) == (0, 0)
    after = fresh(job)
    assert (after.status, after.claim_token, after.send_started_at) == (
        S.READY_TO_SEND,
        claimed.claim_token,
        worker.send_started_at,
    )
    assert outbound_jobs_claim(limit=1, worker_id="other-worker") == []
    # The worker's own answer still lands on its claim.
    worker.mark_sent(
        token=claimed.claim_token, wa_message_id="wamid.OUT1", message_status="accepted", response={}
    )
    assert fresh(job).status == S.SENT
