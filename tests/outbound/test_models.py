"""OutboundJob's state machine: every allowed move, illegal moves, fencing and the bounded error log."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from outbound.models import (
    ALLOWED_TRANSITIONS,
    IllegalTransition,
    JobChanged,
    OutboundJob,
    error_log_append,
)
from outbound.models.states import ERROR_LOG_MAX_LINE_CHARS, ERROR_LOG_MAX_LINES
from tests.factories import make_job

S = OutboundJob.Status


def claimed(status: str = S.PENDING, **fields) -> tuple[OutboundJob, uuid.UUID]:
    job = make_job(status=status, **fields)
    token = uuid.uuid4()
    job.mark_claimed(token=token, worker_id="w1", now=timezone.now())
    return job, token


def fresh(job: OutboundJob) -> OutboundJob:
    return OutboundJob.objects.get(pk=job.pk)


pytestmark = pytest.mark.django_db


def test_claim_pending_goes_generating_and_counts_the_attempt():
    job, token = claimed()
    row = fresh(job)
    assert (row.status, row.claim_token, row.claimed_by, row.attempts) == (S.GENERATING, token, "w1", 1)
    assert row.last_attempt_at is not None
    assert row.claimed_at is not None


def test_claim_ready_to_send_stays_ready_and_keeps_content():
    job, _ = claimed(S.READY_TO_SEND, content="hello")
    row = fresh(job)
    assert (row.status, row.content, row.attempts) == (S.READY_TO_SEND, "hello", 1)


def test_claim_of_a_held_job_is_refused():
    job, _ = claimed()
    other = OutboundJob.objects.get(pk=job.pk)
    other.status = S.PENDING  # an out-of-date copy that still thinks it is PENDING
    with pytest.raises(JobChanged):
        other.mark_claimed(token=uuid.uuid4(), worker_id="w2", now=timezone.now())


@pytest.mark.parametrize("status", [S.SENT, S.FAILED, S.SUPERSEDED, S.CANCELLED, S.GENERATING])
def test_claim_from_a_non_claimable_status_is_illegal_and_names_it(status):
    job = make_job(status=status)
    with pytest.raises(IllegalTransition, match=str(status)):
        job.mark_claimed(token=uuid.uuid4(), worker_id="w1", now=timezone.now())
    assert fresh(job).status == status
    assert fresh(job).claim_token is None


def test_generated_saves_content_with_ready_to_send():
    job, token = claimed()
    job.mark_generated(token=token, content="the reply", send_as=OutboundJob.SendAs.TEXT)
    row = fresh(job)
    assert (row.status, row.content, row.claim_token) == (S.READY_TO_SEND, "the reply", token)


def test_send_started_then_sent_clears_the_claim():
    job, token = claimed(S.READY_TO_SEND, content="x")
    job.mark_send_started(token=token, send_as=OutboundJob.SendAs.TEXT)
    assert fresh(job).send_started_at is not None
    job.mark_sent(token=token, wa_message_id="wamid.OUT", message_status="accepted", response={"a": 1})
    row = fresh(job)
    assert (row.status, row.wa_message_id, row.message_status) == (S.SENT, "wamid.OUT", "accepted")
    assert row.claim_token is None
    assert row.send_started_at is None
    assert row.sent_at is not None
    assert row.send_response == {"a": 1}


def test_retry_from_generating_goes_pending_with_the_error():
    job, token = claimed()
    later = timezone.now() + timedelta(minutes=1)
    job.mark_retry(token=token, error="phase=generate boom", next_attempt_at=later)
    row = fresh(job)
    assert (row.status, row.claim_token, row.next_attempt_at, row.attempts) == (S.PENDING, None, later, 1)
    assert "phase=generate boom" in row.error_log


def test_retry_from_ready_to_send_keeps_content_and_refund_gives_the_attempt_back():
    job, token = claimed(S.READY_TO_SEND, content="kept")
    job.mark_retry(token=token, error="e", next_attempt_at=timezone.now(), refund_attempt=True)
    row = fresh(job)
    assert (row.status, row.content, row.attempts) == (S.READY_TO_SEND, "kept", 0)


@pytest.mark.parametrize("status", [S.PENDING, S.READY_TO_SEND])
def test_failed_from_a_held_job(status):
    job, token = claimed(status, content="c")
    job.mark_failed(token=token, error="phase=send bad")
    row = fresh(job)
    assert (row.status, row.claim_token) == (S.FAILED, None)
    assert row.error_log.endswith("phase=send bad")


def test_switch_to_template_and_send_uncertain_keep_the_claim():
    job, token = claimed(S.READY_TO_SEND, content="c")
    job.mark_send_started(token=token, send_as=OutboundJob.SendAs.TEXT)
    job.mark_switch_to_template(token=token, error="131047")
    row = fresh(job)
    assert (row.send_as, row.claim_token, row.send_started_at) == (OutboundJob.SendAs.TEMPLATE, token, None)
    job.mark_send_started(token=token, send_as=OutboundJob.SendAs.TEMPLATE)
    job.mark_send_uncertain(token=token, error="read timeout")
    row = fresh(job)
    assert (row.status, row.claim_token) == (S.READY_TO_SEND, token)
    assert row.send_started_at is not None


def test_superseded_points_at_the_newer_job():
    older, newer = make_job(), make_job()
    older.mark_superseded(by=newer)
    row = fresh(older)
    assert (row.status, row.superseded_by_id) == (S.SUPERSEDED, newer.pk)


def test_stale_release_and_unsettled():
    job, _ = claimed()
    job = fresh(job)
    job.mark_stale_released()
    assert (fresh(job).status, fresh(job).claim_token) == (S.PENDING, None)
    sending, token = claimed(S.READY_TO_SEND, content="c")
    sending.mark_send_started(token=token, send_as=OutboundJob.SendAs.TEXT)
    sending = fresh(sending)
    sending.mark_stale_send_unsettled()
    row = fresh(sending)
    assert row.status == S.FAILED
    assert "not resent automatically" in row.error_log


def test_settled_by_webhook_and_reopened_for_template():
    job, token = claimed(S.READY_TO_SEND, content="c")
    job.mark_send_started(token=token, send_as=OutboundJob.SendAs.TEXT)
    job.mark_settled_sent(wa_message_id="wamid.LATE")
    row = fresh(job)
    assert (row.status, row.wa_message_id, row.claim_token) == (S.SENT, "wamid.LATE", None)
    row.mark_reopened_for_template()
    row = fresh(row)
    assert (row.status, row.send_as, row.attempts, row.wa_message_id) == (
        S.READY_TO_SEND,
        OutboundJob.SendAs.TEMPLATE,
        0,
        "",
    )


def test_staff_moves():
    failed_with_reply = make_job(status=S.FAILED, content="c")
    failed_with_reply.mark_retried_by_staff()
    assert fresh(failed_with_reply).status == S.READY_TO_SEND
    failed_empty = make_job(status=S.FAILED)
    failed_empty.mark_retried_by_staff()
    assert fresh(failed_empty).status == S.PENDING
    ready = make_job(status=S.READY_TO_SEND, content="c")
    ready.mark_regenerate()
    assert (fresh(ready).status, fresh(ready).content) == (S.PENDING, "")
    pending = make_job()
    pending.mark_cancelled()
    assert fresh(pending).status == S.CANCELLED


@pytest.mark.parametrize(
    ("status", "move"),
    [
        (S.SENT, lambda job: job.mark_cancelled()),
        (S.SUPERSEDED, lambda job: job.mark_retried_by_staff()),
        (S.CANCELLED, lambda job: job.mark_regenerate()),
        (S.PENDING, lambda job: job.mark_settled_sent(wa_message_id="w")),
        (S.SENT, lambda job: job.mark_superseded(by=job)),
        (S.PENDING, lambda job: job.mark_failed(token=None, error="x")),
    ],
)
def test_illegal_transition_names_the_current_status(status, move):
    job = make_job(status=status)
    with pytest.raises(IllegalTransition, match=f"from {status}"):
        move(job)
    assert fresh(job).status == status


@pytest.mark.parametrize(
    ("status", "move"),
    [
        # Moves that the status table alone would allow, but that are not this event's: a claim on a SENT
        # job would send it again; generated/sent/reopen only make sense from one status each.
        (S.SENT, lambda job: job.mark_claimed(token=uuid.uuid4(), worker_id="w", now=timezone.now())),
        (S.FAILED, lambda job: job.mark_claimed(token=uuid.uuid4(), worker_id="w", now=timezone.now())),
        (S.READY_TO_SEND, lambda job: job.mark_reopened_for_template()),
        (S.FAILED, lambda job: job.mark_reopened_for_template()),
        (S.PENDING, lambda job: job.mark_generated(token=uuid.uuid4(), content="x", send_as="TEXT")),
        (S.SENT, lambda job: job.mark_retried_by_staff()),
    ],
)
def test_event_specific_sources_are_enforced(status, move):
    job = make_job(status=status, content="c")
    with pytest.raises(IllegalTransition, match=str(status)):
        move(job)


def test_every_status_has_an_entry_in_the_table():
    assert set(ALLOWED_TRANSITIONS) == set(S.values)
    assert ALLOWED_TRANSITIONS[S.SUPERSEDED] == frozenset()
    assert ALLOWED_TRANSITIONS[S.CANCELLED] == frozenset()


def test_fencing_a_write_with_a_lost_claim_changes_nothing():
    job, token = claimed()
    # Stale recovery released it and another worker took it.
    fresh(job).mark_stale_released()
    other = fresh(job)
    other_token = uuid.uuid4()
    other.mark_claimed(token=other_token, worker_id="w2", now=timezone.now())
    with pytest.raises(JobChanged):
        job.mark_generated(token=token, content="late", send_as=OutboundJob.SendAs.TEXT)
    with pytest.raises(JobChanged):
        job.mark_failed(token=token, error="late")
    row = fresh(job)
    assert (row.status, row.claim_token, row.content, row.claimed_by) == (S.GENERATING, other_token, "", "w2")


def test_error_log_is_bounded_and_counts_dropped_lines():
    log = ""
    now = timezone.now()
    for i in range(ERROR_LOG_MAX_LINES + 30):
        log = error_log_append(log, f"line {i}", now=now)
    lines = log.splitlines()
    assert len(lines) == ERROR_LOG_MAX_LINES
    assert lines[0] == "(31 earlier lines dropped)"
    assert lines[-1].endswith(f"line {ERROR_LOG_MAX_LINES + 29}")
    long = error_log_append("", "x" * 5000 + "\nsecond", now=now)
    assert "\n" not in long
    assert len(long) < ERROR_LOG_MAX_LINE_CHARS + 30
