"""Reads: the conversation the model sees (outbound.selectors)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from outbound.models import OutboundJob
from outbound.selectors import conversation_for

pytestmark = pytest.mark.django_db
S = OutboundJob.Status


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
