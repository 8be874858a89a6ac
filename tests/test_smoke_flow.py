from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone
from responses import matchers

from outbound.models import OutboundJob
from tests.conftest import GRAPH_MESSAGES_URL, text_payload


@pytest.mark.django_db
def test_inbound_text_is_answered_end_to_end(webhook, graph, fake_openai):
    now = timezone.now()
    assert webhook(text_payload(wamid="wamid.A1", timestamp=now - timedelta(minutes=1))).status_code == 200
    graph.post(
        GRAPH_MESSAGES_URL,
        json={"messaging_product": "whatsapp", "messages": [{"id": "wamid.OUT1"}]},
        match=[matchers.header_matcher({"Authorization": "Bearer EAAtestaccesstoken0123456789abcdef"})],
    )
    call_command("run_outbound_jobs", max_runtime=10, until_idle=True)
    job = OutboundJob.objects.get()
    assert job.status == OutboundJob.Status.SENT
    assert job.wa_message_id == "wamid.OUT1"
    assert job.content == fake_openai.reply
    sent = graph.calls[0].request
    assert b'"context": {"message_id": "wamid.A1"}' in sent.body
