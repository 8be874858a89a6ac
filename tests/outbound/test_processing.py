"""Processing a claimed job: a worker whose claim was lost or never held writes nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from outbound.models import OutboundJob
from outbound.services.claims import outbound_jobs_claim
from outbound.services.processing import Outcome, outbound_job_process
from outbound.services.recovery import outbound_jobs_recover
from outbound.worker_config import worker_config_from_settings
from tests.outbound.conftest import GRAPH_MESSAGES_URL, graph_ok, is_postgres

pytestmark = pytest.mark.django_db
S = OutboundJob.Status


def fresh(job: OutboundJob) -> OutboundJob:
    return OutboundJob.objects.get(pk=job.pk)


def test_a_worker_whose_claim_was_taken_over_cannot_write(inbound, graph, fake_openai):
    job = inbound()
    config = worker_config_from_settings()
    [dead] = outbound_jobs_claim(limit=1, worker_id="presumed-dead")
    OutboundJob.objects.filter(pk=job.pk).update(claimed_at=timezone.now() - timedelta(seconds=400))
    assert outbound_jobs_recover(stale_seconds=300, max_attempts=5).released == 1
    [alive] = outbound_jobs_claim(limit=1, worker_id="alive")
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok())
    # The presumed-dead worker wakes up and finishes: its reply is void, nothing is sent.
    result = outbound_job_process(job=dead, config=config)
    assert result.outcome == Outcome.LOST
    row = fresh(job)
    assert (row.status, row.claim_token, row.claimed_by, row.content) == (
        S.GENERATING,
        alive.claim_token,
        "alive",
        "",
    )
    assert len(graph.calls) == 0
    # The live claim proceeds normally.
    assert outbound_job_process(job=alive, config=config).outcome == Outcome.SENT
    assert len(graph.calls) == 1


def test_a_lost_claim_during_sending_sends_nothing(inbound, graph, fake_openai):
    job = inbound()
    config = worker_config_from_settings()
    [dead] = outbound_jobs_claim(limit=1, worker_id="presumed-dead")
    dead.mark_generated(token=dead.claim_token, content="reply", send_as=OutboundJob.SendAs.TEXT)
    OutboundJob.objects.filter(pk=job.pk).update(claimed_at=timezone.now() - timedelta(seconds=400))
    outbound_jobs_recover(stale_seconds=300, max_attempts=5)
    [alive] = outbound_jobs_claim(limit=1, worker_id="alive")
    assert outbound_job_process(job=dead, config=config).outcome == Outcome.LOST
    assert len(graph.calls) == 0
    assert fresh(job).claim_token == alive.claim_token


def test_an_unclaimed_job_is_refused(inbound, fake_openai):
    job = inbound()
    with pytest.raises(ValueError, match="not claimed"):
        outbound_job_process(job=job, config=worker_config_from_settings())


def test_processing_a_claimed_job_reads_nothing_the_claim_loaded(
    inbound, graph, fake_openai, django_assert_num_queries
):
    # The claim loads the job with its message and contact. Processing then reads only what may have changed
    # since or what the claim does not load: in one statement, the contact's pause (a person may have just
    # taken over), the folded messages' "Talk to a person" taps and whether the conversation ever held a
    # voice note or an image (none here, so the media phase reads nothing more); then the model's context (one
    # statement for both sides), the knowledge entries and the staff's system prompt; and writes: the reply
    # (saved before any send), on PostgreSQL the shared send slot, "send started", "sent".
    inbound()
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok())
    config = worker_config_from_settings()
    [job] = outbound_jobs_claim(limit=1, worker_id="w")
    with django_assert_num_queries(8 if is_postgres() else 7):
        assert outbound_job_process(job=job, config=config).outcome == Outcome.SENT
