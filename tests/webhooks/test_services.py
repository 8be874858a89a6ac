import threading

import pytest
from django.db import connection
from django.test import Client

from outbound.models import Contact, InboundMessage, OutboundJob
from outbound.services.ingest import webhook_ingest
from tests.conftest import SERVED_PHONE_NUMBER_IDS, load, post_signed, status_payload
from tests.factories import make_sent_job
from tests.webhooks.conftest import batch_payload, text_message
from webhooks.payloads import parse_webhook

T0 = 1_750_000_000


@pytest.mark.django_db
def test_ingest_counts_new_messages_and_jobs():
    parsed = parse_webhook(load("message_types.json"), phone_number_ids=SERVED_PHONE_NUMBER_IDS)
    result = webhook_ingest(parsed=parsed)
    assert (result.messages, result.new_messages, result.jobs) == (14, 14, 12)
    again = webhook_ingest(parsed=parsed)
    assert (again.messages, again.new_messages, again.jobs) == (14, 0, 0)
    assert (InboundMessage.objects.count(), OutboundJob.objects.count()) == (14, 12)


@pytest.mark.django_db
def test_ingest_counts_statuses():
    make_sent_job(wa_message_id="wamid.OUT")
    parsed = parse_webhook(
        status_payload(wamid="wamid.OUT", status="read", timestamp=T0),
        phone_number_ids=SERVED_PHONE_NUMBER_IDS,
    )
    parsed.statuses += parse_webhook(
        status_payload(wamid="wamid.NOPE", status="read", timestamp=T0),
        phone_number_ids=SERVED_PHONE_NUMBER_IDS,
    ).statuses
    result = webhook_ingest(parsed=parsed)
    assert result.statuses is not None
    assert (result.statuses.applied, result.statuses.unknown, result.statuses.settled) == (1, 1, 0)


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs concurrent writers (PostgreSQL)")
def test_racing_redeliveries_store_once():
    # Meta delivers concurrently and retries to every subscribed app: the same POST can arrive twice at once.
    payload = batch_payload(
        [text_message(wamid=f"wamid.R{i}", wa_id=f"3900000{i:03d}", timestamp=T0 + i) for i in range(30)]
    )
    barrier = threading.Barrier(4)
    statuses = []

    def deliver() -> None:
        try:
            barrier.wait()
            statuses.append(post_signed(Client(), payload).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # The later deliveries wait on the first one's unique keys, then insert nothing.
    assert statuses == [200, 200, 200, 200]
    assert Contact.objects.count() == 30
    assert InboundMessage.objects.count() == 30
    assert OutboundJob.objects.count() == 30
    assert OutboundJob.objects.filter(status=OutboundJob.Status.PENDING).count() == 30
