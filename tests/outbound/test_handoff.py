"""The human handoff end to end: through the real webhook view, the admin, and real `run_outbound_jobs` runs
against `responses` for Graph and the fake OpenAI server.

Staff replies go with every guarantee of a bot reply; a paused contact's messages get no model call and no bot
send; a reply generated just before a person took over ends HANDED_OFF; the handoff message goes once.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.admin.models import ADDITION, CHANGE, LogEntry
from django.contrib.auth.models import User
from django.urls import reverse
from django.utils import timezone

from outbound.models import Contact, OutboundJob
from outbound.replies import ModelReply, Turn
from outbound.services.claims import outbound_jobs_claim
from outbound.services.handoff import contact_bot_pause, contact_bot_resume, contact_staff_reply
from outbound.services.processing import Outcome, outbound_job_process
from outbound.worker import Worker
from outbound.worker_config import worker_config_from_settings
from tests.conftest import status_payload
from tests.outbound.conftest import GRAPH_MESSAGES_URL, graph_ok, run_jobs
from webhooks.envelopes import messages_webhook

pytestmark = pytest.mark.django_db
S = OutboundJob.Status
K = OutboundJob.Kind
R = Contact.PauseReason


def sent_bodies(graph) -> list[dict[str, Any]]:
    return [json.loads(call.request.body) for call in graph.calls]


def fresh(obj):
    return type(obj).objects.get(pk=obj.pk)


def tap(*, wamid: str, wa_id: str = "16505551234", minutes_ago: float = 1) -> dict[str, Any]:
    """A tap on the "Talk to a person" reply button (interactive.button_reply, §12.2)."""
    ts = int((timezone.now() - timedelta(minutes=minutes_ago)).timestamp())
    return messages_webhook(
        messages=[
            {
                "from": wa_id,
                "id": wamid,
                "timestamp": str(ts),
                "type": "interactive",
                "interactive": {
                    "type": "button_reply",
                    "button_reply": {"id": "handoff", "title": "Talk to a person"},
                },
            }
        ],
        contacts=[{"profile": {"name": "Sheena"}, "wa_id": wa_id}],
    )


@pytest.fixture
def staff(client) -> User:
    user = User.objects.create_superuser("alice", "alice@example.com", "x")
    client.force_login(user)
    return user


# ------------------------------------------------------------------------------------------------ staff reply
def test_staff_reply_end_to_end_form_job_graph_status_webhook(
    client, staff, inbound, graph, fake_openai, webhook
):
    bot = inbound(body="Where is my order?")
    contact = bot.contact
    response = client.post(
        reverse("admin:outbound_contact_reply", args=[contact.pk]), {"text": "  Hi Sheena, it left today.  "}
    )
    assert response.status_code == 302
    job = OutboundJob.objects.get(kind=K.STAFF)
    assert (job.status, job.content, job.author, job.inbound_message) == (
        S.READY_TO_SEND,
        "Hi Sheena, it left today.",
        staff,
        None,
    )
    contact = fresh(contact)
    assert (contact.bot_pause_reason, contact.bot_paused_by) == (R.STAFF_REPLY, staff)
    # The bot's reply to the same message was never generated: a person answered it.
    bot = fresh(bot)
    assert bot.status == S.HANDED_OFF
    assert "answered by staff" in bot.error_log

    graph.post(GRAPH_MESSAGES_URL, json=graph_ok("wamid.STAFF1"))
    run_jobs()
    job = fresh(job)
    assert (job.status, job.wa_message_id, job.attempts) == (S.SENT, "wamid.STAFF1", 1)
    [body] = sent_bodies(graph)
    assert body["text"]["body"] == "Hi Sheena, it left today."
    assert body["biz_opaque_callback_data"] == f"{job.key}:text"
    assert "context" not in body  # a staff reply answers the conversation, not one message
    assert fake_openai.requests == []

    ts = int(timezone.now().timestamp())
    assert webhook(status_payload(wamid="wamid.STAFF1", status="delivered", timestamp=ts)).status_code == 200
    assert fresh(job).delivery_status == "delivered"

    # The history: who replied, on the contact and on the job.
    assert LogEntry.objects.get(object_id=str(job.pk), action_flag=ADDITION).user == staff
    entry = LogEntry.objects.get(object_id=str(contact.pk), action_flag=CHANGE)
    assert entry.user == staff
    assert "Replied as staff" in entry.get_change_message()


def test_a_staff_reply_outside_the_window_falls_back_to_the_template_at_send_time(staff, inbound, graph):
    """Queued inside the window, sent after it closed: the worker's window check sends the template."""
    job = contact_staff_reply(contact=inbound().contact, author=staff, text="Sorry for the wait")
    Contact.objects.update(last_inbound_at=timezone.now() - timedelta(hours=30))
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok("wamid.T", message_status="accepted"))
    run_jobs()
    [body] = sent_bodies(graph)
    assert body["type"] == "template"
    assert (fresh(job).status, fresh(job).send_as) == (S.SENT, OutboundJob.SendAs.TEMPLATE)


def test_the_model_sees_what_staff_said(staff, inbound, graph, fake_openai):
    first = inbound(body="Is the shop open on Sunday?", minutes_ago=30)
    contact_staff_reply(contact=first.contact, author=staff, text="Yes, 10 to 4.")
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok())
    run_jobs()
    contact_bot_resume(contact=first.contact)
    later = inbound(body="And on Monday?")
    run_jobs()
    assert fresh(later).status == S.SENT
    messages = fake_openai.requests[-1]["body"]["messages"]
    assert {"role": "assistant", "content": "Yes, 10 to 4."} in messages


# ------------------------------------------------------------------------------------------------ pausing
def test_a_paused_contact_gets_no_model_call_and_no_bot_send(inbound, no_network):
    first = inbound(body="hello")
    contact_bot_pause(contact=first.contact, reason=R.STAFF_ACTION)
    second = inbound(body="anyone there?")
    out = run_jobs()
    assert "claimed=0" in out
    assert (fresh(first).status, fresh(second).status) == (S.PENDING, S.PENDING)
    assert OutboundJob.objects.held().count() == 2


def test_the_pause_stops_a_reply_that_was_already_generated(staff, inbound, graph, fake_openai):
    """Staff take over while the model is thinking: the reply it returns is saved but never sent, and the
    staff reply goes instead, in the same run."""
    bot = inbound(body="Can I return it?")
    config = worker_config_from_settings()
    real = config.generator

    class StaffTakesOverMeanwhile:
        def generate(self, *, system_prompt: str, conversation: list[Turn], knowledge=()) -> ModelReply:
            answer = real.generate(
                system_prompt=system_prompt, conversation=conversation, knowledge=knowledge
            )
            contact_staff_reply(contact=bot.contact, author=staff, text="I'll handle this one.")
            return answer

    config.generator = StaffTakesOverMeanwhile()
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok("wamid.STAFF"))
    summary = Worker(config=config, stale_seconds=300, max_runtime=30).run()
    bot = fresh(bot)
    assert bot.status == S.HANDED_OFF
    assert bot.content == fake_openai.reply  # kept for the record
    assert "a person took the conversation over first" in bot.error_log
    assert (bot.claim_token, bot.send_started_at) == (None, None)
    [body] = sent_bodies(graph)
    assert body["text"]["body"] == "I'll handle this one."
    assert summary.failed == 0
    # The run's summary line counts the overtaken reply and the staff reply it sent instead.
    assert (summary.handed_off, summary.sent) == (1, 1)
    assert "handed_off=1" in summary.line()


def test_a_generated_reply_waiting_for_its_retry_is_handed_off_by_the_pause(inbound, no_network):
    job = inbound()
    OutboundJob.objects.filter(pk=job.pk).update(
        status=S.READY_TO_SEND, content="the bot's words", attempts=1
    )
    result = contact_bot_pause(contact=job.contact, reason=R.STAFF_ACTION)
    assert (result.changed, result.handed_off) == (True, 1)
    assert fresh(job).status == S.HANDED_OFF
    run_jobs()
    # The customer's message is waiting for a person now.
    assert fresh(job.contact).handoff_requested_at == job.inbound_message.timestamp


def test_a_job_claimed_just_before_the_pause_is_held_without_a_model_call(inbound, no_network):
    job = inbound()
    [claimed] = outbound_jobs_claim(limit=1, worker_id="w")
    contact_bot_pause(contact=job.contact, reason=R.STAFF_ACTION)
    result = outbound_job_process(job=claimed, config=worker_config_from_settings())
    assert result.outcome is Outcome.HELD
    job = fresh(job)
    assert (job.status, job.claim_token, job.attempts) == (S.PENDING, None, 0)


# ------------------------------------------------------------------------------------------------ resuming
def test_resume_by_action_answers_the_messages_nobody_answered(inbound, graph, fake_openai):
    first = inbound(body="hello", minutes_ago=3)
    contact_bot_pause(contact=first.contact, reason=R.STAFF_ACTION)
    second = inbound(body="hello??", minutes_ago=2)
    run_jobs()
    assert len(graph.calls) == 0
    assert contact_bot_resume(contact=first.contact)
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok())
    run_jobs()
    # One reply answers both (the older is folded into the newer).
    assert (fresh(first).status, fresh(second).status) == (S.SUPERSEDED, S.SENT)
    assert len(graph.calls) == 1
    assert fresh(first.contact).bot_paused_at is None


def test_resume_by_timeout_after_the_configured_hours_without_a_staff_reply(
    inbound, graph, fake_openai, settings
):
    settings.OUTBOUND_HANDOFF_HOURS = 24
    first = inbound()
    contact_bot_pause(contact=first.contact, reason=R.STAFF_ACTION)
    run_jobs()
    assert fresh(first).status == S.PENDING  # held
    # 23 hours of quiet: still paused.
    Contact.objects.update(bot_human_at=timezone.now() - timedelta(hours=23))
    run_jobs()
    assert fresh(first).status == S.PENDING
    # 25 hours: the pause has run out; the run gives the conversation back and answers.
    Contact.objects.update(bot_human_at=timezone.now() - timedelta(hours=25))
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok())
    run_jobs()
    assert fresh(first).status == S.SENT
    contact = fresh(first.contact)
    assert (contact.bot_paused_at, contact.bot_pause_reason) == (None, "")


def test_a_staff_reply_restarts_the_clock(staff, inbound, graph, settings):
    settings.OUTBOUND_HANDOFF_HOURS = 24
    contact = inbound().contact
    contact_bot_pause(contact=contact, reason=R.STAFF_ACTION)
    Contact.objects.update(
        bot_paused_at=timezone.now() - timedelta(hours=30), bot_human_at=timezone.now() - timedelta(hours=23)
    )
    contact_staff_reply(contact=fresh(contact), author=staff, text="On it")
    contact = fresh(contact)
    assert contact.bot_paused(now=timezone.now() + timedelta(hours=20))
    assert not contact.bot_paused(now=timezone.now() + timedelta(hours=25))


def test_zero_hours_means_the_pause_never_ends_by_itself(inbound, no_network, settings):
    settings.OUTBOUND_HANDOFF_HOURS = 0
    first = inbound()
    contact_bot_pause(contact=first.contact, reason=R.STAFF_ACTION)
    Contact.objects.update(bot_human_at=timezone.now() - timedelta(days=400))
    run_jobs()
    assert fresh(first).status == S.PENDING
    assert fresh(first.contact).bot_paused_at is not None


# ------------------------------------------------------------------------------------------------ handoff
def test_handoff_by_the_model_sends_the_handoff_message_once(inbound, graph, fake_openai, settings):
    fake_openai.action = "handoff"
    fake_openai.reply = "I will get a colleague."  # not sent: the configured message goes instead
    first = inbound(body="I want a refund, now.")
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok("wamid.H"))
    run_jobs()
    first = fresh(first)
    assert (first.status, first.kind, first.content) == (S.SENT, K.HANDOFF, settings.OUTBOUND_HANDOFF_MESSAGE)
    contact = fresh(first.contact)
    assert contact.bot_pause_reason == R.MODEL_ASKED
    assert contact.handoff_requested_at == first.inbound_message.timestamp
    # The customer writes again: stored, held, no model call and no second handoff message.
    second = inbound(body="Hello???")
    run_jobs()
    assert fresh(second).status == S.PENDING
    assert len(fake_openai.requests) == 1
    assert [b["text"]["body"] for b in sent_bodies(graph)] == [settings.OUTBOUND_HANDOFF_MESSAGE]


def test_handoff_by_button_tap_needs_no_model_call_and_sends_one_message(
    webhook, graph, fake_openai, settings
):
    assert webhook(tap(wamid="wamid.TAP1")).status_code == 200
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok("wamid.H"))
    run_jobs()
    job = OutboundJob.objects.get(inbound_message__wamid="wamid.TAP1")
    assert (job.status, job.kind) == (S.SENT, K.HANDOFF)
    assert fresh(job.contact).bot_pause_reason == R.CUSTOMER_ASKED
    # A second tap (impatient customer) sends nothing more.
    assert webhook(tap(wamid="wamid.TAP2", minutes_ago=0.5)).status_code == 200
    run_jobs()
    assert fake_openai.requests == []
    assert [b["text"]["body"] for b in sent_bodies(graph)] == [settings.OUTBOUND_HANDOFF_MESSAGE]


def test_a_tap_followed_by_more_text_still_hands_off(webhook, inbound, graph, fake_openai, settings):
    assert webhook(tap(wamid="wamid.TAP", minutes_ago=2)).status_code == 200
    later = inbound(body="my order 123 is broken", minutes_ago=1)
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok())
    run_jobs()
    later = fresh(later)
    assert (later.status, later.kind) == (S.SENT, K.HANDOFF)
    assert fake_openai.requests == []
    assert len(graph.calls) == 1


def test_two_handoffs_racing_pause_once(inbound):
    job = inbound()
    assert contact_bot_pause(contact=job.contact, reason=R.MODEL_ASKED).changed
    assert not contact_bot_pause(contact=job.contact, reason=R.CUSTOMER_ASKED).changed
    assert fresh(job.contact).bot_pause_reason == R.MODEL_ASKED


def test_the_button_is_offered_in_bot_replies_when_configured(inbound, graph, fake_openai, settings):
    settings.OUTBOUND_HANDOFF_BUTTON = "Talk to a person"
    job = inbound(wamid="wamid.Q")
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok())
    run_jobs()
    [body] = sent_bodies(graph)
    assert body["type"] == "interactive"
    assert body["interactive"] == {
        "type": "button",
        "body": {"text": fake_openai.reply},
        "action": {"buttons": [{"type": "reply", "reply": {"id": "handoff", "title": "Talk to a person"}}]},
    }
    assert body["context"] == {"message_id": "wamid.Q"}
    assert fresh(job).status == S.SENT


def test_a_reply_too_long_for_buttons_goes_as_plain_text(inbound, graph, fake_openai, settings):
    settings.OUTBOUND_HANDOFF_BUTTON = "Talk to a person"
    fake_openai.reply = "word " * 300  # 1500 characters: over the 1024 a button message's body takes
    inbound()
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok())
    run_jobs()
    assert sent_bodies(graph)[0]["type"] == "text"


def test_no_reply_action_sends_nothing(inbound, graph, fake_openai):
    fake_openai.action = "no_reply"
    fake_openai.reply = ""
    job = inbound(body="thanks!")
    out = run_jobs()
    assert "no_reply=1" in out  # the run's summary line counts it
    job = fresh(job)
    assert (job.status, job.claim_token, job.content) == (S.NO_REPLY, None, "")
    assert (len(fake_openai.requests), len(graph.calls)) == (1, 0)


@pytest.mark.parametrize(
    "fault",
    [
        {"refusal": "I can't help with that."},
        {"finish_reason": "length"},
        {"content": "Sure! Here is my answer"},
        {"content": '{"reply": "hi", "action": "shout", "knowledge_used": []}'},
    ],
    ids=["refusal", "incomplete", "not-json", "unknown-action"],
)
def test_an_unusable_answer_is_never_sent_retried_then_handed_off(
    inbound, graph, fake_openai, settings, fault
):
    settings.OUTBOUND_MAX_ATTEMPTS = 2
    for name, value in fault.items():
        setattr(fake_openai, name, value)
    job = inbound()
    run_jobs()
    assert (fresh(job).status, len(graph.calls)) == (S.PENDING, 0)
    OutboundJob.objects.filter(pk=job.pk).update(next_attempt_at=timezone.now())
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok())
    run_jobs()
    job = fresh(job)
    assert (job.status, job.kind) == (S.SENT, K.HANDOFF)
    assert [b["text"]["body"] for b in sent_bodies(graph)] == [settings.OUTBOUND_HANDOFF_MESSAGE]
    assert fresh(job.contact).bot_pause_reason == R.MODEL_FAILED
    assert "a person takes over after 2 attempts" in job.error_log


def test_an_empty_handoff_message_pauses_without_sending(inbound, graph, fake_openai, settings):
    settings.OUTBOUND_HANDOFF_MESSAGE = ""
    fake_openai.action = "handoff"
    job = inbound()
    run_jobs()
    assert fresh(job).status == S.HANDED_OFF
    assert fresh(job.contact).bot_pause_reason == R.MODEL_ASKED
    assert (len(fake_openai.requests), len(graph.calls)) == (1, 0)
