"""Claims: due jobs oldest first, at most one job per contact in flight, folding a burst."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from outbound.models import OutboundJob
from outbound.services.claims import outbound_jobs_claim

pytestmark = pytest.mark.django_db
S = OutboundJob.Status


def fresh(job: OutboundJob) -> OutboundJob:
    return OutboundJob.objects.get(pk=job.pk)


def test_claim_takes_due_jobs_oldest_first_up_to_the_limit(inbound):
    jobs = [inbound(wa_id=f"1555100{i:04d}", minutes_ago=10 - i) for i in range(3)]
    claimed = outbound_jobs_claim(limit=2, worker_id="w1")
    assert [job.pk for job in claimed] == [jobs[0].pk, jobs[1].pk]
    assert {fresh(job).status for job in claimed} == {S.GENERATING}
    assert fresh(jobs[2]).claim_token is None


def test_claim_skips_jobs_not_yet_due_and_excluded_ones(inbound):
    later = inbound(wa_id="15551000001")
    OutboundJob.objects.filter(pk=later.pk).update(next_attempt_at=timezone.now() + timedelta(minutes=5))
    excluded = inbound(wa_id="15551000002")
    assert outbound_jobs_claim(limit=5, worker_id="w1", exclude_ids=[excluded.pk]) == []


def test_at_most_one_job_per_contact_in_flight(inbound):
    first = inbound(wa_id="15551000001", body="first")
    [claimed] = outbound_jobs_claim(limit=5, worker_id="w1")
    assert claimed.pk == first.pk
    second = inbound(wa_id="15551000001", body="second")
    other = inbound(wa_id="15551000002", body="someone else")
    again = outbound_jobs_claim(limit=5, worker_id="w2")
    assert [job.pk for job in again] == [other.pk]
    row = fresh(second)
    assert (row.status, row.claim_token) == (S.PENDING, None)


def test_waiting_jobs_of_busy_contacts_do_not_hide_other_due_jobs(inbound):
    # Five customers each have a reply in flight and an older follow-up waiting; a sixth customer's job is the
    # newest due job. A claim looks at a window of the oldest due jobs: the busy ones must not fill it.
    now = timezone.now()
    for i in range(5):
        inbound(wa_id=f"1555200{i:04d}", at=now - timedelta(minutes=20 - i))
    assert len(outbound_jobs_claim(limit=5, worker_id="w1")) == 5
    for i in range(5):
        inbound(wa_id=f"1555200{i:04d}", at=now - timedelta(minutes=10 - i))
    OutboundJob.objects.filter(status=S.PENDING).update(next_attempt_at=now - timedelta(minutes=5))
    free = inbound(wa_id="15552009999", at=now - timedelta(minutes=1))
    assert [job.pk for job in outbound_jobs_claim(limit=1, worker_id="w2")] == [free.pk]


def test_folding_keeps_the_newest_and_supersedes_older_jobs(inbound):
    now = timezone.now()
    jobs = [inbound(body=str(i), at=now - timedelta(seconds=30 - i)) for i in range(3)]
    [claimed] = outbound_jobs_claim(limit=5, worker_id="w1")
    assert claimed.pk == jobs[-1].pk
    for older in jobs[:-1]:
        assert (fresh(older).status, fresh(older).superseded_by_id) == (S.SUPERSEDED, claimed.pk)
