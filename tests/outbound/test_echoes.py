"""Echoes stored through the real webhook view (outbound/services/echoes.py): shown in the conversation, and
pausing the bot for the customer the owner answered, the same way a staff reply does."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from outbound.models import Contact, EchoMessage, OutboundJob
from outbound.services.handoff import contact_bot_pause
from tests.conftest import load, text_payload
from tests.outbound.conftest import run_jobs
from webhooks.envelopes import echoes_webhook, text_echo

pytestmark = pytest.mark.django_db
S = OutboundJob.Status


def test_an_echo_pauses_the_bot_and_shows_in_the_conversation(
    webhook, inbound, graph, fake_openai, admin_client
):
    job = inbound(body="Is my order on its way?")
    now = int(timezone.now().timestamp())
    echo = text_echo(to="16505551234", wamid="wamid.ECHO1", text="Yes! Ships today. Maria", timestamp=now)
    assert webhook(echoes_webhook(echoes=[echo])).status_code == 200

    contact = Contact.objects.get(wa_id="16505551234")
    assert contact.bot_pause_reason == Contact.PauseReason.BUSINESS_APP
    assert contact.bot_paused_by is None
    # The owner answered: the bot's pending reply is never generated nor sent.
    job = OutboundJob.objects.get(pk=job.pk)
    assert job.status == S.HANDED_OFF
    assert "answered from the WhatsApp Business app" in job.error_log
    run_jobs()
    assert (len(fake_openai.requests), len(graph.calls)) == (0, 0)

    html = admin_client.get(reverse("admin:outbound_contact_change", args=[contact.pk])).content.decode()
    conversation = html[html.index('<table class="conversation">') :]
    assert conversation.index("Is my order on its way?") < conversation.index("Yes! Ships today. Maria")
    assert "business app" in conversation
    assert "the business replied from the WhatsApp Business app" in html


def test_a_redelivered_echo_is_stored_once(webhook):
    payload = load("smb_message_echoes.json")
    assert webhook(payload).status_code == 200
    assert webhook(copy.deepcopy(payload)).status_code == 200
    assert EchoMessage.objects.count() == 2
    # The owner wrote first to 16505559999: the contact is created, with no inbound message (window closed).
    new = Contact.objects.get(wa_id="16505559999")
    assert (new.last_inbound_at, new.bot_pause_reason) == (None, Contact.PauseReason.BUSINESS_APP)


def test_an_echo_while_already_paused_keeps_the_reason_and_restarts_the_clock(webhook, inbound):
    contact = inbound().contact
    contact_bot_pause(
        contact=contact, reason=Contact.PauseReason.CUSTOMER_ASKED, waiting_since=timezone.now()
    )
    Contact.objects.update(bot_human_at=timezone.now() - timedelta(hours=5))
    echo = text_echo(to=contact.wa_id, wamid="wamid.E", text="Hi", timestamp=int(timezone.now().timestamp()))
    webhook(echoes_webhook(echoes=[echo]))
    contact = Contact.objects.get(pk=contact.pk)
    assert contact.bot_pause_reason == Contact.PauseReason.CUSTOMER_ASKED
    assert contact.bot_human_at > timezone.now() - timedelta(minutes=1)
    # Answered: the customer no longer waits for a person.
    assert contact.handoff_requested_at is None


def test_an_echo_in_the_same_post_as_a_customer_message_is_stored(webhook):
    # Meta may batch changes of several fields into one POST. On PostgreSQL a POST of messages takes the
    # one-statement path, which stores messages only: an echo beside them must send the POST down the full path.
    now = int(timezone.now().timestamp())
    payload = text_payload(wamid="wamid.IN-BESIDE-ECHO", wa_id="16505551234", timestamp=now - 5)
    echo = text_echo(to="16505551234", wamid="wamid.ECHO-BESIDE", text="On it! Maria", timestamp=now)
    payload["entry"] += echoes_webhook(echoes=[echo])["entry"]
    assert webhook(payload).status_code == 200
    assert EchoMessage.objects.filter(wamid="wamid.ECHO-BESIDE").exists()
    contact = Contact.objects.get(wa_id="16505551234")
    assert contact.inbound_messages.count() == 1
    assert contact.bot_pause_reason == Contact.PauseReason.BUSINESS_APP
