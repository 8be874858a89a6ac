"""The webhook view end to end: Django's test client → verify → parse → one transaction → rows."""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Any
from unittest import mock

import pytest
from django.conf import settings
from django.db import DataError, IntegrityError, OperationalError, ProgrammingError
from django.urls import reverse
from django.utils import timezone

from outbound.models import Contact, InboundMessage, OutboundJob
from outbound.services import ingest as services
from outbound.services import ingest_sql
from tests.conftest import T0, at, batch_payload, counts, load, status_payload, text_message, text_payload
from tests.factories import make_sent_job
from webhooks.signatures import sign

URL = "/webhooks/whatsapp/"


def test_url_name():
    assert reverse("whatsapp-webhook") == URL


# ---------------------------------------------------------------------------------------------- GET handshake
def test_handshake_answers_the_challenge_as_plain_text(client):
    response = client.get(
        URL, {"hub.mode": "subscribe", "hub.verify_token": "test-verify-token", "hub.challenge": "1158201444"}
    )
    assert response.status_code == 200
    assert response.content == b"1158201444"
    assert response["Content-Type"].startswith("text/plain")


@pytest.mark.parametrize(
    "params",
    [
        {"hub.mode": "subscribe", "hub.verify_token": "wrong", "hub.challenge": "1"},
        {"hub.mode": "unsubscribe", "hub.verify_token": "test-verify-token", "hub.challenge": "1"},
        {"hub.verify_token": "test-verify-token", "hub.challenge": "1"},
        {"hub.mode": "subscribe", "hub.challenge": "1"},
        {"hub.mode": "subscribe", "hub.verify_token": "", "hub.challenge": "1"},
        {"hub.mode": "subscribe", "hub.verify_token": "test-verify-token-and-more", "hub.challenge": "1"},
        {"hub.mode": "subscribe", "hub.verify_token": "tést", "hub.challenge": "1"},
        {},
    ],
)
def test_handshake_refused(client, params):
    response = client.get(URL, params)
    assert response.status_code == 403
    assert b"1" not in response.content


def test_handshake_refused_when_no_verify_token_is_configured(client, settings):
    settings.WHATSAPP_VERIFY_TOKEN = ""
    response = client.get(URL, {"hub.mode": "subscribe", "hub.verify_token": "", "hub.challenge": "77"})
    assert response.status_code == 403


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_other_methods_not_allowed(client, method):
    assert getattr(client, method)(URL).status_code == 405


# ---------------------------------------------------------------------------------------------- signature
def _post(client, body: bytes, **headers: str):
    return client.post(URL, data=body, content_type="application/json", **headers)


def _body(payload: Any) -> bytes:
    return json.dumps(payload).encode()


@pytest.mark.django_db
def test_good_signature_is_stored(client, no_network):
    body = _body(load("message_text.json"))
    response = _post(
        client, body, HTTP_X_HUB_SIGNATURE_256=sign(body=body, app_secret=settings.WHATSAPP_APP_SECRET)
    )
    assert response.status_code == 200
    assert counts() == (1, 1, 1)


@pytest.mark.django_db
def test_missing_signature_is_401_and_stores_nothing(client):
    response = _post(client, _body(load("message_text.json")))
    assert response.status_code == 401
    assert counts() == (0, 0, 0)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "make_header",
    [
        lambda body: sign(body=body, app_secret="another-secret"),
        lambda body: sign(body=body, app_secret=settings.WHATSAPP_APP_SECRET).replace("sha256=", "sha1="),
        lambda body: sign(body=body, app_secret=settings.WHATSAPP_APP_SECRET).removeprefix("sha256="),
        lambda body: sign(body=body + b" ", app_secret=settings.WHATSAPP_APP_SECRET),
        lambda body: "sha256=" + "0" * 64,
        lambda body: "sha256=",
    ],
    ids=["wrong-secret", "sha1-prefix", "no-prefix", "other-body", "zeros", "empty-digest"],
)
def test_wrong_signature_is_403_and_stores_nothing(client, make_header):
    body = _body(load("message_text.json"))
    response = _post(client, body, HTTP_X_HUB_SIGNATURE_256=make_header(body))
    assert response.status_code == 403
    assert counts() == (0, 0, 0)


@pytest.mark.django_db
def test_body_changed_after_signing_is_403(client):
    body = _body(text_payload(wamid="wamid.A", timestamp=T0, body="pay 10"))
    header = sign(body=body, app_secret=settings.WHATSAPP_APP_SECRET)
    tampered = body.replace(b"pay 10", b"pay 99")
    assert _post(client, tampered, HTTP_X_HUB_SIGNATURE_256=header).status_code == 403
    assert counts() == (0, 0, 0)


@pytest.mark.django_db
def test_non_ascii_body_signed_correctly_is_stored_verbatim(client):
    payload = text_payload(wamid="wamid.U", timestamp=T0, body="Grüße 👋 你好 a@b", name="Zoë")
    body = json.dumps(payload, ensure_ascii=False).encode()
    response = _post(
        client, body, HTTP_X_HUB_SIGNATURE_256=sign(body=body, app_secret=settings.WHATSAPP_APP_SECRET)
    )
    assert response.status_code == 200
    message = InboundMessage.objects.get()
    assert message.text == "Grüße 👋 你好 a@b"
    assert message.contact.profile_name == "Zoë"


@pytest.mark.django_db
@pytest.mark.parametrize("header", ["sha256=" + "é" * 64, "sha256=😀", "é"])
def test_non_ascii_header_is_403_not_500(client, header):
    response = _post(client, _body(load("message_text.json")), HTTP_X_HUB_SIGNATURE_256=header)
    assert response.status_code == 403
    assert counts() == (0, 0, 0)


@pytest.mark.django_db
def test_unconfigured_app_secret_accepts_nothing(client, settings):
    settings.WHATSAPP_APP_SECRET = ""
    body = _body(load("message_text.json"))
    response = _post(client, body, HTTP_X_HUB_SIGNATURE_256=sign(body=body, app_secret=""))
    assert response.status_code == 403
    assert counts() == (0, 0, 0)


# ---------------------------------------------------------------------------------------------- body
@pytest.mark.django_db
@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"{",
        json.dumps(load("message_text.json")).encode()[:150],
        b"\xff\xfe\x00",
        b"[" * 50_000 + b"]" * 50_000,
    ],
    ids=["empty", "words", "brace", "truncated", "not-utf8", "too-deep"],
)
def test_invalid_json_is_400(webhook, body):
    response = webhook(body)
    assert response.status_code == 400
    assert counts() == (0, 0, 0)


def test_default_body_limit_admits_metas_3_mb(settings):
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE == 4 * 1024 * 1024


@pytest.mark.django_db
def test_body_over_the_limit_is_413(webhook, settings):
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    payload = text_payload(wamid="wamid.BIG", timestamp=T0, body="x" * limit)
    body = _body(payload)
    assert len(body) > limit
    response = webhook(body)
    assert response.status_code == 413
    assert counts() == (0, 0, 0)


@pytest.mark.django_db
def test_body_just_under_a_lowered_limit_passes_and_over_it_is_413(webhook, settings):
    body = _body(text_payload(wamid="wamid.E", timestamp=T0))
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = len(body)
    assert webhook(body).status_code == 200
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = len(body) - 1
    assert webhook(body).status_code == 413
    assert counts() == (1, 1, 1)


@pytest.mark.django_db
def test_large_batch_near_3_mb_is_stored_whole(webhook, no_network):
    text = "a long message with words " * 110
    messages = [
        text_message(
            wamid=f"wamid.L{i:04d}", wa_id=f"1555{i % 100:07d}", body=f"{i} {text}", timestamp=T0 + i
        )
        for i in range(1000)
    ]
    body = _body(batch_payload(messages))
    assert 2_800_000 < len(body) < 3_000_000
    response = webhook(body)
    assert response.status_code == 200
    assert counts() == (100, 1000, 1000)
    assert InboundMessage.objects.get(wamid="wamid.L0999").text == f"999 {text}".strip()
    assert Contact.objects.get(wa_id="15550000099").last_inbound_at == at(T0 + 999)


# ---------------------------------------------------------------------------------------------- other shapes
def _value(payload: dict[str, Any]) -> dict[str, Any]:
    return payload["entry"][0]["changes"][0]["value"]


def _set(path: tuple[Any, ...], bad: Any) -> dict[str, Any]:
    payload = text_payload(wamid="wamid.S", timestamp=T0)
    target: Any = payload
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = bad
    return payload


def _without(key: str) -> dict[str, Any]:
    payload = text_payload(wamid="wamid.S", timestamp=T0)
    del _value(payload)["messages"][0][key]
    return payload


OTHER_SHAPES = {
    "value-errors": (load("value_errors.json"), "value error code=130429"),
    "account-update": (load("account_update.json"), "field='account_update'"),
    "object-not-whatsapp": (_set(("object",), "page"), "object='page'"),
    "entry-string": (_set(("entry",), "oops"), "entry is str, not a list"),
    "messages-dict": (_set(("entry", 0, "changes", 0, "value", "messages"), {"id": "x"}), "messages is dict"),
    "message-without-id": (_without("id"), "malformed message id='None'"),
    "message-without-from": (_without("from"), "no sender"),
    "message-without-timestamp": (_without("timestamp"), "timestamp None is not Unix seconds"),
    "timestamp-not-a-number": (
        _set(("entry", 0, "changes", 0, "value", "messages", 0, "timestamp"), "yesterday"),
        "malformed message id='wamid.S'",
    ),
    "timestamp-far-future": (
        _set(("entry", 0, "changes", 0, "value", "messages", 0, "timestamp"), str(10**18)),
        "out of range",
    ),
    "from-too-long": (_set(("entry", 0, "changes", 0, "value", "messages", 0, "from"), "9" * 40), "'from'"),
    "array": ([1, 2, 3], "payload is list"),
    "number": (42, "payload is int"),
    "string": ("hello", "payload is str"),
    "null": (None, "payload is NoneType"),
    "empty-object": ({}, "object=None"),
}


@pytest.mark.django_db
@pytest.mark.parametrize(("payload", "reason"), OTHER_SHAPES.values(), ids=OTHER_SHAPES.keys())
def test_other_well_signed_shapes_are_200_and_logged(webhook, webhook_log, no_network, payload, reason):
    response = webhook(_body(payload))
    assert response.status_code == 200
    assert counts() == (0, 0, 0)
    skipped = [r.getMessage() for r in webhook_log.records if r.getMessage().startswith("webhook_skipped")]
    assert any(reason in line for line in skipped), skipped


@pytest.mark.django_db
def test_malformed_message_does_not_stop_the_good_ones_around_it(webhook, webhook_log):
    good = [text_message(wamid=f"wamid.G{i}", wa_id=f"100{i}", timestamp=T0 + i) for i in range(4)]
    bad = [
        {"from": "2001", "timestamp": str(T0), "type": "text", "text": {"body": "no id"}},
        {"id": "wamid.X1", "timestamp": str(T0), "type": "text"},
        {"id": "wamid.X2", "from": "2002", "timestamp": "soon", "type": "text"},
        {"id": "wamid.X3", "from": "2003", "timestamp": str(10**18), "type": "text"},
        {"id": "wamid.X4", "from": "9" * 40, "timestamp": str(T0), "type": "text"},
        "a string",
        None,
    ]
    messages = [good[0], bad[0], bad[1], good[1], bad[2], bad[3], good[2], bad[4], bad[5], bad[6], good[3]]
    assert webhook(batch_payload(messages)).status_code == 200
    assert set(InboundMessage.objects.values_list("wamid", flat=True)) == {
        "wamid.G0",
        "wamid.G1",
        "wamid.G2",
        "wamid.G3",
    }
    assert OutboundJob.objects.count() == 4
    assert Contact.objects.count() == 4
    assert "skipped=7" in webhook_log.text


@pytest.mark.django_db
def test_nul_characters_are_stored_as_replacement_characters(webhook):
    payload = text_payload(wamid="wamid.NUL", timestamp=T0, body="before\x00after", name="A\x00B")
    assert webhook(payload).status_code == 200
    message = InboundMessage.objects.get()
    assert message.text == "before\ufffdafter"
    assert message.raw["text"]["body"] == "before\ufffdafter"
    assert message.contact.profile_name == "A\ufffdB"
    assert OutboundJob.objects.count() == 1


@pytest.mark.django_db
def test_odd_status_error_code_is_stored_without_it(webhook):
    job = make_sent_job()
    payload = status_payload(wamid="wamid.OUT", status="failed", timestamp=T0, error_code=1)
    _value(payload)["statuses"][0]["errors"][0]["code"] = 10**15
    assert webhook(payload).status_code == 200
    job.refresh_from_db()
    assert (job.delivery_status, job.delivery_error_code) == (OutboundJob.Delivery.FAILED, None)
    assert "error details" in job.delivery_error


# ---------------------------------------------------------------------------------------------- database errors
FAULT_POINTS = [
    "outbound.services.ingest.outbound_jobs_enqueue",  # after contacts and messages are inserted
    "outbound.services.ingest.outbound_jobs_record_statuses",  # after the jobs, at the very end
    "outbound.services.ingest._store_messages",  # after the contacts
]


def _messages_and_a_status() -> dict[str, Any]:
    payload = batch_payload(
        [
            text_message(wamid="wamid.F1", timestamp=T0),
            text_message(wamid="wamid.F2", wa_id="222", timestamp=T0 + 1),
        ]
    )
    payload["entry"][0]["changes"].append(
        status_payload(wamid="wamid.OUT", status="read", timestamp=T0)["entry"][0]["changes"][0]
    )
    return payload


@pytest.mark.django_db
@pytest.mark.parametrize("target", FAULT_POINTS)
def test_database_error_is_503_and_writes_nothing_then_the_redelivery_stores_once(webhook, target):
    job = make_sent_job(wa_id="999", inbound_wamid="wamid.PREV")
    before = counts()
    payload = _messages_and_a_status()
    with mock.patch(target, side_effect=OperationalError("server closed the connection unexpectedly")):
        response = webhook(payload)
    assert response.status_code == 503
    assert counts() == before
    job.refresh_from_db()
    assert job.delivery_status == OutboundJob.Delivery.NONE

    assert webhook(payload).status_code == 200
    assert webhook(payload).status_code == 200
    assert InboundMessage.objects.filter(wamid__in=["wamid.F1", "wamid.F2"]).count() == 2
    assert OutboundJob.objects.filter(inbound_message__wamid__in=["wamid.F1", "wamid.F2"]).count() == 2
    assert counts() == (before[0] + 2, before[1] + 2, before[2] + 2)
    job.refresh_from_db()
    assert job.delivery_status == OutboundJob.Delivery.READ


@pytest.mark.django_db
def test_database_error_in_a_status_update_rolls_back_the_messages(webhook):
    make_sent_job(wa_id="999", inbound_wamid="wamid.PREV")
    before = counts()
    with mock.patch(
        "outbound.services.statuses._apply_delivery",
        side_effect=OperationalError("could not serialize access"),
    ):
        assert webhook(_messages_and_a_status()).status_code == 503
    assert counts() == before


@pytest.mark.django_db
def test_database_error_is_logged(webhook, webhook_log):
    with _database_down_at_the_next_store(OperationalError("down")):
        assert webhook(text_payload(wamid="wamid.A", timestamp=T0)).status_code == 503
    assert "webhook_database_error messages=1 statuses=0" in webhook_log.text


@pytest.mark.django_db
def test_stored_log_line_counts_what_happened(webhook, webhook_log):
    webhook(load("message_types.json"))
    assert "webhook_stored messages=14 new=14 jobs=12 statuses=0" in webhook_log.text


# ---------------------------------------------------------------------------------------------- business numbers
OUR_NUMBER = "106540352242922"  # tests/settings.py WHATSAPP_PHONE_NUMBER_ID


def _to_number(payload: dict[str, Any], phone_number_id: Any) -> dict[str, Any]:
    _value(payload)["metadata"]["phone_number_id"] = phone_number_id
    return payload


def _skipped(log) -> list[str]:
    return [r.getMessage() for r in log.records if r.getMessage().startswith("webhook_skipped")]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "metadata",
    [
        {"display_phone_number": "15550001111", "phone_number_id": "999000111222333"},
        {"display_phone_number": "15550783881", "phone_number_id": f" {OUR_NUMBER}"},
        {"display_phone_number": "15550783881", "phone_number_id": int(OUR_NUMBER)},
        {"display_phone_number": "15550783881", "phone_number_id": ""},
        {"display_phone_number": "15550783881"},
        None,
        "106540352242922",
    ],
    ids=["another-number", "padded", "a-number-not-a-string", "empty", "no-id", "null", "not-an-object"],
)
def test_message_to_a_number_we_do_not_serve_is_200_and_stores_nothing(
    webhook, webhook_log, no_network, metadata
):
    payload = text_payload(wamid="wamid.THEIRS", timestamp=T0)
    _value(payload)["metadata"] = metadata
    assert webhook(payload).status_code == 200
    assert counts() == (0, 0, 0)
    assert any("is not a number this service serves: 1 messages" in line for line in _skipped(webhook_log))


@pytest.mark.django_db
def test_message_without_metadata_is_not_ours(webhook, webhook_log):
    payload = text_payload(wamid="wamid.THEIRS", timestamp=T0)
    del _value(payload)["metadata"]
    assert webhook(payload).status_code == 200
    assert counts() == (0, 0, 0)
    assert any("phone_number_id='None'" in line for line in _skipped(webhook_log))


@pytest.mark.django_db
def test_status_from_another_number_leaves_our_job_as_it_was(webhook, webhook_log):
    # Same wamid as our job's message: only the business number tells them apart.
    job = make_sent_job()
    assert (
        webhook(_to_number(status_payload(wamid="wamid.OUT", status="read", timestamp=T0), "999")).status_code
        == 200
    )
    job.refresh_from_db()
    assert (job.delivery_status, job.delivery_updated_at) == (OutboundJob.Delivery.NONE, None)
    assert any("phone_number_id='999'" in line and "1 statuses" in line for line in _skipped(webhook_log))


@pytest.mark.django_db
def test_status_from_another_number_does_not_settle_a_lost_send(webhook):
    job = make_sent_job(
        status=OutboundJob.Status.READY_TO_SEND, wa_message_id="", send_started_at=timezone.now()
    )
    payload = status_payload(wamid="wamid.X", status="sent", timestamp=T0, callback_data=f"{job.key}:text")
    assert webhook(_to_number(payload, "999")).status_code == 200
    job.refresh_from_db()
    assert (job.status, job.wa_message_id) == (OutboundJob.Status.READY_TO_SEND, "")


@pytest.mark.django_db
def test_mixed_batch_stores_only_the_entries_for_our_number(webhook, no_network):
    job = make_sent_job(wa_id="111", inbound_wamid="wamid.PREV")
    payload = text_payload(wamid="wamid.OURS", timestamp=T0)
    theirs = _to_number(text_payload(wamid="wamid.THEIRS", wa_id="4915100000", timestamp=T0), "999")
    payload["entry"].append(theirs["entry"][0])
    # And in one entry, a change for each number: our status, then theirs for the same job's message.
    payload["entry"][0]["changes"].append(
        _to_number(status_payload(wamid="wamid.OUT", status="read", timestamp=T0 + 2), "999")["entry"][0][
            "changes"
        ][0]
    )
    payload["entry"][0]["changes"].append(
        status_payload(wamid="wamid.OUT", status="delivered", timestamp=T0 + 1)["entry"][0]["changes"][0]
    )
    assert webhook(payload).status_code == 200
    assert set(InboundMessage.objects.values_list("wamid", flat=True)) == {"wamid.PREV", "wamid.OURS"}
    assert not Contact.objects.filter(wa_id="4915100000").exists()
    assert OutboundJob.objects.filter(inbound_message__wamid="wamid.OURS").count() == 1
    assert OutboundJob.objects.count() == 2
    job.refresh_from_db()
    assert job.delivery_status == OutboundJob.Delivery.DELIVERED


@pytest.mark.django_db
def test_served_numbers_are_one_id_or_a_comma_separated_list(webhook, settings):
    settings.WHATSAPP_PHONE_NUMBER_ID = f" 111222333 ,{OUR_NUMBER},,"
    for wamid, number in [("wamid.A", "111222333"), ("wamid.B", OUR_NUMBER), ("wamid.C", "444")]:
        payload = _to_number(text_payload(wamid=wamid, timestamp=T0), number)
        assert webhook(payload).status_code == 200
    assert set(InboundMessage.objects.values_list("wamid", flat=True)) == {"wamid.A", "wamid.B"}


@pytest.mark.django_db
def test_without_a_configured_number_debug_serves_only_the_example_number(webhook, settings):
    # The first run (`make run`, no Meta credentials): `simulate_inbound` sends to Meta's example number.
    settings.WHATSAPP_PHONE_NUMBER_ID = ""
    settings.DEBUG = True
    assert webhook(text_payload(wamid="wamid.SIM", timestamp=T0)).status_code == 200
    assert webhook(_to_number(text_payload(wamid="wamid.REAL", timestamp=T0), "999")).status_code == 200
    settings.DEBUG = False
    assert webhook(text_payload(wamid="wamid.PROD", timestamp=T0)).status_code == 200
    assert list(InboundMessage.objects.values_list("wamid", flat=True)) == ["wamid.SIM"]


# ---------------------------------------------------------------------------------------------- unstorable values
SURROGATE_ESCAPES = [b"\\ud800", b"\\uDBFF", b"\\udc00", b"\\uDfFf", b"\xed\xa0\x80"]


@pytest.mark.django_db
@pytest.mark.parametrize("surrogate", SURROGATE_ESCAPES, ids=["d800", "DBFF", "dc00", "DfFf", "utf8-bytes"])
def test_lone_surrogates_are_stored_as_replacement_characters_with_the_rest_of_the_batch(webhook, surrogate):
    messages = [
        text_message(wamid="wamid.S1", body="before@@after", timestamp=T0),
        text_message(wamid="wamid.S2", wa_id="222", body="fine", timestamp=T0 + 1),
    ]
    contacts = [
        {"profile": {"name": "Zo@@"}, "wa_id": "16505551234"},
        {"profile": {"name": "Kim"}, "wa_id": "222"},
    ]
    payload = batch_payload(messages, contacts=contacts)
    _value(payload)["messages"][0]["k@@ey"] = "v"
    body = _body(payload).replace(b"@@", surrogate)
    assert webhook(body).status_code == 200
    assert counts() == (2, 2, 2)
    message = InboundMessage.objects.get(wamid="wamid.S1")
    assert message.text == "before\ufffdafter"
    assert message.raw["text"]["body"] == "before\ufffdafter"
    assert message.raw["k\ufffdey"] == "v"
    assert message.contact.profile_name == "Zo\ufffd"
    assert InboundMessage.objects.get(wamid="wamid.S2").text == "fine"


@pytest.mark.django_db
def test_a_surrogate_pair_is_an_ordinary_character(webhook):
    body = _body(text_payload(wamid="wamid.E", timestamp=T0, body="hi \U0001f44b", name="\U0001f600"))
    assert b"\\ud83d\\udc4b" in body  # json.dumps escapes it as a pair
    assert webhook(body).status_code == 200
    message = InboundMessage.objects.get()
    assert (message.text, message.contact.profile_name) == ("hi \U0001f44b", "\U0001f600")


NON_FINITE = [b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-1e999"]


@pytest.mark.django_db
@pytest.mark.parametrize("number", NON_FINITE, ids=lambda n: n.decode())
def test_non_finite_numbers_in_raw_fields_are_stored_as_null(webhook, no_network, number):
    payload = text_payload(wamid="wamid.N", timestamp=T0)
    message = _value(payload)["messages"][0]
    message["location"] = {"latitude": "@@", "more": ["@@", 1.5]}
    _value(payload)["extra"] = "@@"
    payload["entry"][0]["extra"] = {"x": "@@"}
    assert webhook(_body(payload).replace(b'"@@"', number)).status_code == 200
    assert counts() == (1, 1, 1)
    stored = InboundMessage.objects.get()
    assert stored.raw["location"] == {"latitude": None, "more": [None, 1.5]}
    assert stored.text == "Hello"


@pytest.mark.django_db
@pytest.mark.parametrize("number", NON_FINITE, ids=lambda n: n.decode())
def test_non_finite_timestamp_is_skipped_as_malformed_and_the_rest_is_stored(webhook, webhook_log, number):
    messages = [
        text_message(wamid="wamid.T1", timestamp=T0),
        text_message(wamid="wamid.T2", wa_id="222", timestamp=T0),
    ]
    payload = batch_payload(messages)
    _value(payload)["messages"][0]["timestamp"] = "@@"
    assert webhook(_body(payload).replace(b'"@@"', number)).status_code == 200
    assert list(InboundMessage.objects.values_list("wamid", flat=True)) == ["wamid.T2"]
    assert any("malformed message id='wamid.T1'" in line for line in _skipped(webhook_log))


@pytest.mark.django_db
def test_non_finite_status_timestamp_is_skipped_and_the_job_left_alone(webhook):
    job = make_sent_job()
    body = _body(status_payload(wamid="wamid.OUT", status="read", timestamp=T0)).replace(
        f'"{T0}"'.encode(), b"NaN"
    )
    assert webhook(body).status_code == 200
    job.refresh_from_db()
    assert job.delivery_status == OutboundJob.Delivery.NONE


# ---------------------------------------------------------------------------------------------- poisoned batch
def _poison(error: Exception, *wamids: str) -> contextlib.ExitStack:
    """Storing fails with `error` for any batch that holds one of `wamids`, as the database would: on the ORM
    path (`_store_messages`) and on PostgreSQL's one-statement path (`ingest_sql.store_messages`) alike."""
    real, real_sql = services._store_messages, ingest_sql.store_messages

    def store(messages, contacts):
        if any(m.wamid in wamids for m in messages):
            raise error
        return real(messages, contacts)

    def store_sql(messages):
        if any(m.wamid in wamids for m in messages):
            raise error
        return real_sql(messages)

    stack = contextlib.ExitStack()
    stack.enter_context(mock.patch("outbound.services.ingest._store_messages", side_effect=store))
    stack.enter_context(mock.patch("outbound.services.ingest_sql.store_messages", side_effect=store_sql))
    return stack


def _database_down_at_the_next_store(error: Exception) -> contextlib.ExitStack:
    """The next message stored, on either path, finds the database gone."""
    stack = contextlib.ExitStack()
    stack.enter_context(mock.patch("outbound.services.ingest.outbound_jobs_enqueue", side_effect=[error]))
    stack.enter_context(mock.patch("outbound.services.ingest_sql.store_messages", side_effect=[error]))
    return stack


def _batch_with_a_poisoned_message() -> dict[str, Any]:
    payload = batch_payload(
        [
            text_message(wamid="wamid.G1", timestamp=T0, body="first good"),
            text_message(wamid="wamid.POISON", wa_id="222", timestamp=T0 + 1, body="the customer's secret"),
            text_message(wamid="wamid.G2", wa_id="333", timestamp=T0 + 2, body="second good"),
        ]
    )
    payload["entry"][0]["changes"].append(
        status_payload(wamid="wamid.OUT", status="read", timestamp=T0)["entry"][0]["changes"][0]
    )
    return payload


@pytest.mark.django_db
@pytest.mark.parametrize(
    "error",
    [
        DataError("invalid input syntax for type json: the customer's secret"),
        IntegrityError("CHECK constraint failed: the customer's secret"),
        KeyError("the customer's secret"),
    ],
    ids=["DataError", "IntegrityError", "a-bug"],
)
def test_one_poisoned_message_does_not_cost_the_rest_of_the_batch(webhook, webhook_log, error):
    job = make_sent_job(wa_id="999", inbound_wamid="wamid.PREV")
    with _poison(error, "wamid.POISON"):
        response = webhook(_batch_with_a_poisoned_message())
    assert response.status_code == 200
    stored = set(InboundMessage.objects.values_list("wamid", flat=True))
    assert stored == {"wamid.PREV", "wamid.G1", "wamid.G2"}
    assert OutboundJob.objects.filter(inbound_message__wamid__in=["wamid.G1", "wamid.G2"]).count() == 2
    assert not Contact.objects.filter(wa_id="222").exists()  # its own transaction rolled back whole
    job.refresh_from_db()
    assert job.delivery_status == OutboundJob.Delivery.READ
    errors = [r.getMessage() for r in webhook_log.records if r.levelno == logging.ERROR]
    assert f"webhook_item_failed kind=message wamid=wamid.POISON error={type(error).__name__}" in errors
    assert any(line.startswith(f"webhook_batch_failed error={type(error).__name__}") for line in errors)
    assert "failed=1" in webhook_log.text
    assert "secret" not in webhook_log.text


@pytest.mark.django_db
def test_the_poisoned_message_redelivered_is_answered_200_again_and_the_rest_stored_once(webhook):
    with _poison(DataError("bad"), "wamid.POISON"):
        assert webhook(_batch_with_a_poisoned_message()).status_code == 200
        assert webhook(_batch_with_a_poisoned_message()).status_code == 200
    assert InboundMessage.objects.count() == 2
    assert OutboundJob.objects.count() == 2


@pytest.mark.django_db
def test_a_database_that_goes_down_during_the_one_at_a_time_retry_is_503(webhook):
    with (
        _poison(DataError("bad"), "wamid.POISON"),
        _database_down_at_the_next_store(OperationalError("down")),
    ):
        # The batch fails on the poison, then the first message alone finds the database gone.
        assert webhook(_batch_with_a_poisoned_message()).status_code == 503
    assert InboundMessage.objects.count() == 0


@pytest.mark.django_db
def test_sql_the_database_refuses_is_503_not_200(webhook):
    # On PostgreSQL a table a migration has not created yet: not the payload's fault, so Meta's redelivery
    # must still find us able to store it.
    with mock.patch(
        "outbound.services.ingest._store_messages", side_effect=ProgrammingError("no such relation")
    ):
        assert webhook(_batch_with_a_poisoned_message()).status_code == 503
    assert counts() == (0, 0, 0)


@pytest.mark.django_db
def test_when_even_the_retry_fails_the_answer_is_a_logged_400(webhook, webhook_log):
    with (
        mock.patch("outbound.services.ingest._store_messages", side_effect=DataError("bad")),
        mock.patch("webhooks.views.webhook_ingest_each", side_effect=RuntimeError("a bug")),
    ):
        response = webhook(_batch_with_a_poisoned_message())
    assert response.status_code == 400
    assert response.content == b"payload could not be stored"
    assert "webhook_unstorable error=RuntimeError" in webhook_log.text
    assert counts() == (0, 0, 0)


@pytest.mark.django_db
def test_a_parser_bug_is_a_logged_400_not_a_500(webhook, webhook_log):
    with mock.patch("webhooks.views.parse_webhook", side_effect=TypeError("the customer's secret")):
        response = webhook(text_payload(wamid="wamid.A", timestamp=T0))
    assert response.status_code == 400
    assert "webhook_unparsable error=TypeError" in webhook_log.text
    assert "secret" not in webhook_log.text
