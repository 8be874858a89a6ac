"""Meta's status webhooks applied to jobs (outbound.services.statuses), delivered through the webhook view."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from outbound.models import OutboundJob
from outbound.services.claims import outbound_jobs_claim
from outbound.services.processing import outbound_job_process
from outbound.worker_config import worker_config_from_settings
from tests.conftest import T0, at, load, status_payload, text_payload
from tests.factories import make_sent_job
from tests.outbound.conftest import GRAPH_MESSAGES_URL, graph_ok


# ---------------------------------------------------------------------------------------------- statuses
def _statuses(*items: tuple[str, str, int], callback_data: str | None = None) -> dict[str, Any]:
    """One POST carrying several (wamid, status, timestamp) statuses, in the given order."""
    payload = status_payload(
        wamid=items[0][0], status=items[0][1], timestamp=items[0][2], callback_data=callback_data
    )
    value = payload["entry"][0]["changes"][0]["value"]
    value["statuses"] = [
        status_payload(wamid=w, status=s, timestamp=t, callback_data=callback_data)["entry"][0]["changes"][0][
            "value"
        ]["statuses"][0]
        for w, s, t in items
    ]
    return payload


@pytest.mark.django_db
def test_sent_status_is_recorded(webhook, no_network):
    job = make_sent_job(wa_message_id="wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA=")
    assert webhook(load("status_sent.json")).status_code == 200
    job.refresh_from_db()
    assert job.delivery_status == OutboundJob.Delivery.SENT
    assert job.delivery_updated_at == at(1750030073)
    assert job.status == OutboundJob.Status.SENT


@pytest.mark.django_db
def test_statuses_in_order_across_posts(webhook):
    job = make_sent_job()
    for i, status in enumerate(["sent", "delivered", "read"]):
        assert webhook(status_payload(wamid="wamid.OUT", status=status, timestamp=T0 + i)).status_code == 200
        job.refresh_from_db()
        assert job.delivery_status == status
    assert job.delivery_updated_at == at(T0 + 2)


@pytest.mark.django_db
def test_statuses_out_of_order_across_posts_never_move_back(webhook):
    job = make_sent_job()
    for status, ts in [("read", T0 + 2), ("delivered", T0 + 1), ("sent", T0)]:
        assert webhook(status_payload(wamid="wamid.OUT", status=status, timestamp=ts)).status_code == 200
        job.refresh_from_db()
        assert job.delivery_status == OutboundJob.Delivery.READ
    assert job.delivery_updated_at == at(T0 + 2)


@pytest.mark.django_db
def test_statuses_out_of_order_within_one_post(webhook):
    job = make_sent_job()
    payload = _statuses(
        ("wamid.OUT", "read", T0 + 2), ("wamid.OUT", "delivered", T0 + 1), ("wamid.OUT", "sent", T0)
    )
    assert webhook(payload).status_code == 200
    job.refresh_from_db()
    assert job.delivery_status == OutboundJob.Delivery.READ
    assert job.delivery_updated_at == at(T0 + 2)


@pytest.mark.django_db
def test_statuses_with_the_same_timestamp_within_one_post(webhook):
    # Meta's timestamps have 1-second resolution: delivered and read often share one.
    job = make_sent_job()
    payload = _statuses(("wamid.OUT", "read", T0), ("wamid.OUT", "delivered", T0), ("wamid.OUT", "sent", T0))
    assert webhook(payload).status_code == 200
    job.refresh_from_db()
    assert job.delivery_status == OutboundJob.Delivery.READ


@pytest.mark.django_db
def test_delivered_may_be_skipped(webhook):
    job = make_sent_job()
    webhook(status_payload(wamid="wamid.OUT", status="sent", timestamp=T0))
    webhook(status_payload(wamid="wamid.OUT", status="read", timestamp=T0 + 5))
    webhook(status_payload(wamid="wamid.OUT", status="delivered", timestamp=T0 + 5))
    job.refresh_from_db()
    assert job.delivery_status == OutboundJob.Delivery.READ


@pytest.mark.django_db
def test_played_counts_as_read(webhook):
    job = make_sent_job(delivery_status=OutboundJob.Delivery.DELIVERED)
    assert webhook(status_payload(wamid="wamid.OUT", status="played", timestamp=T0)).status_code == 200
    job.refresh_from_db()
    assert job.delivery_status == OutboundJob.Delivery.READ
    webhook(status_payload(wamid="wamid.OUT", status="delivered", timestamp=T0 + 1))
    job.refresh_from_db()
    assert job.delivery_status == OutboundJob.Delivery.READ


@pytest.mark.django_db
def test_repeated_status_is_harmless(webhook):
    job = make_sent_job()
    for _ in range(3):
        assert webhook(status_payload(wamid="wamid.OUT", status="delivered", timestamp=T0)).status_code == 200
    job.refresh_from_db()
    assert job.delivery_status == OutboundJob.Delivery.DELIVERED


@pytest.mark.django_db
def test_failed_keeps_metas_code_and_details(webhook):
    job = make_sent_job(wa_message_id="wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI0QUQ2MjA4NEYyRkExNjMyREUA")
    assert webhook(load("status_failed.json")).status_code == 200
    job.refresh_from_db()
    assert job.delivery_status == OutboundJob.Delivery.FAILED
    assert job.delivery_error_code == 131049
    assert "131049" in job.delivery_error
    assert "This message was not delivered to maintain healthy ecosystem engagement." in job.delivery_error
    assert "the message failed to be delivered" in job.delivery_error
    assert job.delivery_updated_at == at(1751142888)
    assert job.status == OutboundJob.Status.SENT
    assert not OutboundJob.objects.awaiting_template_fallback().exists()


@pytest.mark.django_db
def test_failed_is_not_undone_by_a_late_sent(webhook):
    job = make_sent_job()
    webhook(status_payload(wamid="wamid.OUT", status="failed", timestamp=T0 + 1, error_code=131026))
    webhook(status_payload(wamid="wamid.OUT", status="sent", timestamp=T0))
    job.refresh_from_db()
    assert (job.delivery_status, job.delivery_error_code) == (OutboundJob.Delivery.FAILED, 131026)


@pytest.mark.django_db
def test_failed_after_sent_in_one_post(webhook):
    job = make_sent_job()
    payload = _statuses(("wamid.OUT", "failed", T0), ("wamid.OUT", "sent", T0))
    payload["entry"][0]["changes"][0]["value"]["statuses"][0]["errors"] = [
        {"code": 131047, "title": "Re-engagement message", "error_data": {"details": "more than 24 hours"}}
    ]
    assert webhook(payload).status_code == 200
    job.refresh_from_db()
    assert (job.delivery_status, job.delivery_error_code) == (OutboundJob.Delivery.FAILED, 131047)
    assert job.delivery_error == "131047 Re-engagement message: more than 24 hours"


@pytest.mark.django_db
def test_failed_131047_on_a_sent_text_reply_awaits_the_template(webhook):
    job = make_sent_job(send_as=OutboundJob.SendAs.TEXT)
    payload = status_payload(wamid="wamid.OUT", status="failed", timestamp=T0, error_code=131047)
    assert webhook(payload).status_code == 200
    assert list(OutboundJob.objects.awaiting_template_fallback()) == [job]


@pytest.mark.django_db
def test_failed_131047_on_a_template_does_not_loop(webhook):
    make_sent_job(send_as=OutboundJob.SendAs.TEMPLATE)
    webhook(status_payload(wamid="wamid.OUT", status="failed", timestamp=T0, error_code=131047))
    assert not OutboundJob.objects.awaiting_template_fallback().exists()


@pytest.mark.django_db
def test_unknown_status_id_is_logged_and_ignored(webhook, webhook_log):
    job = make_sent_job()
    response = webhook(status_payload(wamid="wamid.SOMEONE-ELSE", status="read", timestamp=T0))
    assert response.status_code == 200
    job.refresh_from_db()
    assert job.delivery_status == OutboundJob.Delivery.NONE
    assert "status_unknown wa_message_id=wamid.SOMEONE-ELSE" in webhook_log.text
    assert "unknown_statuses=1" in webhook_log.text


@pytest.mark.django_db
@pytest.mark.parametrize(
    "callback_data", ["", "garbage", "12345:text", "00000000-0000-0000-0000-000000000000:text"]
)
def test_unknown_callback_data_is_ignored(webhook, callback_data):
    job = make_sent_job(
        status=OutboundJob.Status.READY_TO_SEND, wa_message_id="", send_started_at=timezone.now()
    )
    payload = status_payload(wamid="wamid.X", status="sent", timestamp=T0, callback_data=callback_data)
    assert webhook(payload).status_code == 200
    job.refresh_from_db()
    assert (job.status, job.wa_message_id) == (OutboundJob.Status.READY_TO_SEND, "")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("send_as", "kind"), [(OutboundJob.SendAs.TEXT, "text"), (OutboundJob.SendAs.TEMPLATE, "template")]
)
def test_status_with_the_key_settles_a_send_whose_response_was_lost(webhook, send_as, kind):
    started = timezone.now() - timedelta(minutes=1)
    job = make_sent_job(
        status=OutboundJob.Status.READY_TO_SEND, wa_message_id="", send_as=send_as, send_started_at=started
    )
    payload = status_payload(
        wamid="wamid.LOST", status="delivered", timestamp=T0, callback_data=f"{job.key}:{kind}"
    )
    assert webhook(payload).status_code == 200
    job.refresh_from_db()
    assert job.status == OutboundJob.Status.SENT
    assert job.wa_message_id == "wamid.LOST"
    assert job.sent_at == started
    assert job.send_started_at is None
    assert job.claim_token is None
    assert job.delivery_status == OutboundJob.Delivery.DELIVERED


@pytest.mark.django_db
def test_settled_job_then_follows_by_wamid(webhook):
    job = make_sent_job(
        status=OutboundJob.Status.READY_TO_SEND, wa_message_id="", send_started_at=timezone.now()
    )
    webhook(status_payload(wamid="wamid.LOST", status="sent", timestamp=T0, callback_data=f"{job.key}:text"))
    webhook(status_payload(wamid="wamid.LOST", status="read", timestamp=T0 + 9))
    job.refresh_from_db()
    assert (job.status, job.delivery_status) == (OutboundJob.Status.SENT, OutboundJob.Delivery.READ)


@pytest.mark.django_db
def test_several_statuses_with_the_key_in_one_post_settle_once(webhook):
    job = make_sent_job(
        status=OutboundJob.Status.READY_TO_SEND, wa_message_id="", send_started_at=timezone.now()
    )
    payload = _statuses(
        ("wamid.LOST", "delivered", T0 + 1), ("wamid.LOST", "sent", T0), callback_data=f"{job.key}:text"
    )
    assert webhook(payload).status_code == 200
    job.refresh_from_db()
    assert (job.status, job.wa_message_id, job.delivery_status) == (
        OutboundJob.Status.SENT,
        "wamid.LOST",
        OutboundJob.Delivery.DELIVERED,
    )
    assert job.error_log == ""


@pytest.mark.django_db
def test_status_with_the_key_settles_a_send_staff_were_handed(webhook):
    # Stale recovery moved the uncertain send to FAILED for staff; Meta's status still proves it arrived.
    job = make_sent_job(status=OutboundJob.Status.FAILED, wa_message_id="", send_started_at=timezone.now())
    webhook(status_payload(wamid="wamid.LATE", status="sent", timestamp=T0, callback_data=f"{job.key}:text"))
    job.refresh_from_db()
    assert (job.status, job.wa_message_id) == (OutboundJob.Status.SENT, "wamid.LATE")


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("send_as", "kind"), [(OutboundJob.SendAs.TEMPLATE, "text"), (OutboundJob.SendAs.TEXT, "template")]
)
def test_status_whose_key_kind_does_not_match_send_as_does_not_settle(webhook, send_as, kind):
    job = make_sent_job(
        status=OutboundJob.Status.READY_TO_SEND,
        wa_message_id="",
        send_as=send_as,
        send_started_at=timezone.now(),
    )
    payload = status_payload(
        wamid="wamid.OLD", status="delivered", timestamp=T0, callback_data=f"{job.key}:{kind}"
    )
    assert webhook(payload).status_code == 200
    job.refresh_from_db()
    assert (job.status, job.wa_message_id, job.delivery_status) == (
        OutboundJob.Status.READY_TO_SEND,
        "",
        OutboundJob.Delivery.NONE,
    )


@pytest.mark.django_db
def test_status_with_the_key_does_not_settle_a_send_that_never_started(webhook):
    job = make_sent_job(status=OutboundJob.Status.READY_TO_SEND, wa_message_id="", send_started_at=None)
    webhook(status_payload(wamid="wamid.X", status="sent", timestamp=T0, callback_data=f"{job.key}:text"))
    job.refresh_from_db()
    assert (job.status, job.wa_message_id) == (OutboundJob.Status.READY_TO_SEND, "")


@pytest.mark.django_db
def test_status_with_the_key_of_a_sent_job_does_not_replace_its_message_id(webhook):
    job = make_sent_job(wa_message_id="wamid.REAL")
    webhook(status_payload(wamid="wamid.OTHER", status="read", timestamp=T0, callback_data=f"{job.key}:text"))
    job.refresh_from_db()
    assert (job.wa_message_id, job.delivery_status) == ("wamid.REAL", OutboundJob.Delivery.NONE)


@pytest.mark.django_db
def test_messages_and_statuses_in_one_post(webhook):
    job = make_sent_job(wa_id="111", inbound_wamid="wamid.PREV")
    payload = text_payload(wamid="wamid.NEW", timestamp=T0)
    payload["entry"][0]["changes"].append(
        status_payload(wamid="wamid.OUT", status="delivered", timestamp=T0)["entry"][0]["changes"][0]
    )
    assert webhook(payload).status_code == 200
    job.refresh_from_db()
    assert job.delivery_status == OutboundJob.Delivery.DELIVERED
    assert OutboundJob.objects.filter(inbound_message__wamid="wamid.NEW", status="PENDING").count() == 1


# ---------------------------------------------------------------------------------------------- through the worker
@pytest.mark.django_db
def test_delivery_status_never_moves_backwards(inbound, graph, fake_openai, webhook):
    job = inbound()
    [claimed] = outbound_jobs_claim(limit=1, worker_id="w")
    graph.post(GRAPH_MESSAGES_URL, json=graph_ok("wamid.D"))
    outbound_job_process(job=claimed, config=worker_config_from_settings())
    ts = int(timezone.now().timestamp())
    for status, when in (("read", ts + 2), ("delivered", ts + 1), ("sent", ts)):
        webhook(status_payload(wamid="wamid.D", status=status, timestamp=when))
    assert OutboundJob.objects.get(pk=job.pk).delivery_status == "read"


@pytest.mark.django_db
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
    assert OutboundJob.objects.get(pk=job.pk).status == OutboundJob.Status.READY_TO_SEND
    webhook(
        status_payload(wamid="wamid.Y", status="sent", timestamp=1_800_000_000, callback_data="not-a-key")
    )
    assert OutboundJob.objects.get(pk=job.pk).status == OutboundJob.Status.READY_TO_SEND
