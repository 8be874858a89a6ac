"""The job's moves when the bot steps back for a person (outbound/models/job_people.py): held, handed off, no
reply needed; the send refused in its own UPDATE when the contact's bot is paused; staff replies never
regenerated."""

from __future__ import annotations

import uuid

import pytest
from django.utils import timezone

from outbound.models import (
    ALLOWED_TRANSITIONS,
    EVENT_SOURCES,
    BotPaused,
    Contact,
    Event,
    IllegalTransition,
    JobChanged,
    OutboundJob,
)
from outbound.services.handoff import contact_bot_pause
from tests.factories import make_job

pytestmark = pytest.mark.django_db
S = OutboundJob.Status
K = OutboundJob.Kind


def claimed(status: str = S.PENDING, **fields) -> tuple[OutboundJob, uuid.UUID]:
    job = make_job(status=status, **fields)
    token = uuid.uuid4()
    job.mark_claimed(token=token, worker_id="w1", now=timezone.now())
    return job, token


def fresh(job: OutboundJob) -> OutboundJob:
    return OutboundJob.objects.get(pk=job.pk)


def pause(job: OutboundJob) -> None:
    contact_bot_pause(contact=job.contact, reason=Contact.PauseReason.STAFF_ACTION)


def test_the_new_statuses_are_terminal():
    assert ALLOWED_TRANSITIONS[S.HANDED_OFF] == frozenset()
    assert ALLOWED_TRANSITIONS[S.NO_REPLY] == frozenset()
    assert EVENT_SOURCES[Event.HANDED_OFF] == {S.PENDING, S.GENERATING, S.READY_TO_SEND}


def test_send_started_is_refused_in_the_same_update_when_the_bot_is_paused():
    job, token = claimed(S.READY_TO_SEND, content="the bot's words")
    pause(job)
    with pytest.raises(BotPaused):
        job.mark_send_started(token=token, send_as=OutboundJob.SendAs.TEXT)
    row = fresh(job)
    assert (row.status, row.send_started_at, row.claim_token) == (S.READY_TO_SEND, None, token)
    job.mark_handed_off(token=token, why="a person took over")
    row = fresh(job)
    assert (row.status, row.claim_token, row.content) == (S.HANDED_OFF, None, "the bot's words")
    assert "phase=handoff not sent: a person took over" in row.error_log


@pytest.mark.parametrize("kind", [K.STAFF, K.HANDOFF])
def test_people_and_the_handoff_message_are_sent_while_paused(kind):
    job, token = claimed(S.READY_TO_SEND, content="hello", kind=kind)
    pause(job)
    job.mark_send_started(token=token, send_as=OutboundJob.SendAs.TEXT)
    assert fresh(job).send_started_at is not None


def test_a_lost_claim_is_still_job_changed_not_bot_paused():
    job, _ = claimed(S.READY_TO_SEND, content="x")
    pause(job)
    with pytest.raises(JobChanged) as raised:
        job.mark_send_started(token=uuid.uuid4(), send_as=OutboundJob.SendAs.TEXT)
    assert not isinstance(raised.value, BotPaused)


def test_held_gives_the_claim_back_and_refunds_the_attempt():
    job, token = claimed()
    assert job.attempts == 1
    job.mark_held(token=token)
    row = fresh(job)
    assert (row.status, row.claim_token, row.attempts) == (S.PENDING, None, 0)


def test_no_reply_ends_the_job():
    job, token = claimed()
    job.mark_no_reply(token=token)
    row = fresh(job)
    assert (row.status, row.claim_token) == (S.NO_REPLY, None)
    with pytest.raises(IllegalTransition):
        row.mark_cancelled()


def test_handed_off_unclaimed_needs_the_row_to_be_unclaimed():
    job, _ = claimed()
    stale = OutboundJob.objects.get(pk=job.pk)
    with pytest.raises(JobChanged):
        stale.mark_handed_off(token=None, why="x")


def test_a_staff_reply_is_never_regenerated():
    job = make_job(status=S.FAILED, kind=K.STAFF, content="from a person")
    with pytest.raises(IllegalTransition, match="staff reply"):
        job.mark_regenerate()
    assert fresh(job).content == "from a person"


def test_claimable_leaves_out_a_paused_contacts_bot_replies_only():
    bot = make_job()
    staff = OutboundJob.objects.create(
        contact=bot.contact,
        kind=K.STAFF,
        status=S.READY_TO_SEND,
        content="hi",
        next_attempt_at=timezone.now(),
    )
    assert set(OutboundJob.objects.claimable()) == {bot, staff}
    pause(bot)
    assert list(OutboundJob.objects.claimable()) == [staff]
    assert list(OutboundJob.objects.held()) == [bot]
