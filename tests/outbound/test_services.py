"""Service-level behaviour: claiming (one job per contact), fencing of a lost claim, recovery, statuses."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from outbound.models import OutboundJob
from outbound.redaction import redact
from outbound.selectors import conversation_for
from outbound.services.claims import outbound_jobs_claim
from outbound.services.processing import Outcome, outbound_job_process
from outbound.services.recovery import outbound_jobs_recover
from outbound.window import is_window_open
from outbound.worker_config import worker_config_from_settings
from tests.conftest import status_payload
from tests.outbound.conftest import GRAPH_MESSAGES_URL, graph_ok

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


def test_recovery_leaves_fresh_claims_alone(inbound):
    job = inbound()
    outbound_jobs_claim(limit=1, worker_id="w1")
    counts = outbound_jobs_recover(stale_seconds=300, max_attempts=5)
    assert counts.total == 0
    assert fresh(job).status == S.GENERATING


def test_delivery_status_never_moves_backwards(inbound, graph, fake_openai, webhook):
    job = inbound()
    [claimed] = outbound_jobs_claim(limit=1, worker_id="w")
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok("wamid.D"))
    outbound_job_process(job=claimed, config=worker_config_from_settings())
    ts = int(timezone.now().timestamp())
    for status, at in (("read", ts + 2), ("delivered", ts + 1), ("sent", ts)):
        webhook(status_payload(wamid="wamid.D", status=status, timestamp=at))
    assert fresh(job).delivery_status == "read"


def test_a_status_for_another_send_of_the_job_does_not_settle_it(inbound, graph, fake_openai, webhook):
    job = inbound()
    [claimed] = outbound_jobs_claim(limit=1, worker_id="w")
    claimed.mark_generated(token=claimed.claim_token, content="r", send_as=OutboundJob.SendAs.TEXT)
    claimed.mark_send_started(token=claimed.claim_token, send_as=OutboundJob.SendAs.TEMPLATE)
    webhook(
        status_payload(
            wamid="wamid.X", status="sent", timestamp=1_800_000_000, callback_data=f"{job.key}:text"
        )
    )
    assert fresh(job).status == S.READY_TO_SEND
    webhook(
        status_payload(wamid="wamid.Y", status="sent", timestamp=1_800_000_000, callback_data="not-a-key")
    )
    assert fresh(job).status == S.READY_TO_SEND


def test_conversation_ends_on_the_customer_and_skips_templates(inbound):
    now = timezone.now()
    first = inbound(body="one", at=now - timedelta(minutes=5))
    OutboundJob.objects.filter(pk=first.pk).update(
        status=S.SENT, content="template text?", send_as=OutboundJob.SendAs.TEMPLATE, sent_at=now
    )
    second = inbound(body="two", at=now - timedelta(minutes=4))
    turns = conversation_for(job=second, limit=20)
    assert [(t.role, t.text) for t in turns] == [("user", "one"), ("user", "two")]


def test_conversation_keeps_a_reply_sent_after_the_answered_message_arrived(inbound):
    # The customer wrote twice; our reply to the first went out after the second arrived.
    now = timezone.now()
    first = inbound(body="one", at=now - timedelta(minutes=5))
    second = inbound(body="two", at=now - timedelta(minutes=4))
    OutboundJob.objects.filter(pk=first.pk).update(status=S.SENT, content="answer to one", sent_at=now)
    turns = conversation_for(job=second, limit=20)
    assert [(t.role, t.text) for t in turns] == [
        ("user", "one"),
        ("assistant", "answer to one"),
        ("user", "two"),
    ]


def test_window_margin():
    now = timezone.now()
    assert is_window_open(last_inbound_at=now - timedelta(hours=23), now=now, margin_seconds=300)
    assert not is_window_open(
        last_inbound_at=now - timedelta(hours=23, minutes=56), now=now, margin_seconds=300
    )
    assert not is_window_open(last_inbound_at=None, now=now)


def test_redact():
    assert redact("token EAAabc123 and sk-live-abcdefgh", ["EAAabc123"]) == "token [redacted] and [redacted]"
