"""`simulate_inbound` against a real server (pytest-django's live_server): the message is stored and answered."""

from __future__ import annotations

import json
import socket
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from outbound.models import InboundMessage, OutboundJob
from outbound.replies import OFFLINE_LABEL
from outbound.services.media import TRANSCRIPT_LABEL
from outbound.transcription import OFFLINE_TRANSCRIPT_LABEL
from webhooks.signatures import sign

pytestmark = pytest.mark.django_db(transaction=True)


def simulate(*args: str, **options: object) -> str:
    out = StringIO()
    call_command("simulate_inbound", *args, stdout=out, **options)
    return out.getvalue()


def test_the_message_is_stored_with_its_job(live_server):
    out = simulate(
        "Do you ship to Lisbon?", "--from", "+351 912345678", "--name", "Rita", url=live_server.url
    )

    assert f"POST {live_server.url}/webhooks/whatsapp/ → 200 ok" in out
    message = InboundMessage.objects.get()
    assert message.wamid.startswith("wamid.SIMULATED-")
    assert message.wamid in out
    assert (message.text, message.type, message.needs_reply) == ("Do you ship to Lisbon?", "text", True)
    assert (message.contact.wa_id, message.contact.profile_name) == ("351912345678", "Rita")
    job = OutboundJob.objects.get()
    assert (job.inbound_message_id, job.status) == (message.pk, OutboundJob.Status.PENDING)
    # The test settings use the real Graph sender: the command says where the reply would go.
    assert "OUTBOUND_SENDER=graph: the reply will really be sent to +351912345678." in out


def test_without_a_configured_number_debug_stores_the_simulated_message(live_server, settings):
    # `make run` with the .env.example: DEBUG on and no WHATSAPP_PHONE_NUMBER_ID.
    settings.WHATSAPP_PHONE_NUMBER_ID = ""
    settings.DEBUG = True
    simulate("Hello", url=live_server.url)
    assert InboundMessage.objects.count() == 1


def test_first_run_flow_is_answered_offline(live_server, settings):
    # What `make run` does without credentials: offline replies through the console sender.
    settings.OUTBOUND_SENDER = "console"
    settings.OUTBOUND_REPLY_GENERATOR = "offline"
    out = simulate("Hello!", url=live_server.url)
    assert "really be sent" not in out
    call_command("run_outbound_jobs", max_runtime=10, until_idle=True, stdout=StringIO())
    job = OutboundJob.objects.get()
    assert job.status == OutboundJob.Status.SENT
    assert job.content.startswith(OFFLINE_LABEL)
    assert job.wa_message_id.startswith("wamid.console-")


def test_a_wrong_secret_is_named(live_server, monkeypatch):
    # The server checks with its secret; the command signs with another one (one settings object serves both).
    monkeypatch.setattr(
        "webhooks.management.commands.simulate_inbound.sign",
        lambda *, body, app_secret: sign(body=body, app_secret="not-the-server-secret"),
    )
    with pytest.raises(CommandError, match="refused the signature: its WHATSAPP_APP_SECRET"):
        simulate("Hello", url=live_server.url)
    assert not InboundMessage.objects.exists()


def test_a_missing_secret_is_named(settings):
    settings.WHATSAPP_APP_SECRET = ""
    with pytest.raises(CommandError, match=r"^WHATSAPP_APP_SECRET is not set"):
        simulate("Hello")


def test_an_unreachable_server_is_a_clear_error():
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(
        CommandError, match=rf"Could not connect to http://127.0.0.1:{port}/webhooks/whatsapp/"
    ):
        simulate("Hello", url=f"http://127.0.0.1:{port}")


def test_several_texts_are_one_burst_answered_by_one_reply(live_server, settings):
    settings.OUTBOUND_SENDER = "console"
    settings.OUTBOUND_REPLY_GENERATOR = "offline"
    out = simulate("Hi", "Do you ship to Lisbon?", "And to Porto?", url=live_server.url)
    assert f"POST {live_server.url}/webhooks/whatsapp/ → 200 ok" in out
    assert "Stored 3 messages" in out
    assert "answers them with one reply" in out
    texts = list(InboundMessage.objects.order_by("timestamp", "pk").values_list("text", flat=True))
    assert texts == ["Hi", "Do you ship to Lisbon?", "And to Porto?"]
    assert OutboundJob.objects.count() == 3
    call_command("run_outbound_jobs", max_runtime=10, until_idle=True, stdout=StringIO())
    statuses = sorted(OutboundJob.objects.values_list("status", flat=True))
    assert statuses == [OutboundJob.Status.SENT, OutboundJob.Status.SUPERSEDED, OutboundJob.Status.SUPERSEDED]
    sent = OutboundJob.objects.get(status=OutboundJob.Status.SENT)
    assert sent.inbound_message.text == "And to Porto?"  # the newest message's job answers the burst


def test_the_message_goes_to_the_first_number_the_server_serves(live_server, settings, monkeypatch):
    import requests

    settings.WHATSAPP_PHONE_NUMBER_ID = "111222333444555, 106540352242922"
    sent_bodies: list[bytes] = []
    real_post = requests.post

    def spy(url, *, data, **kwargs):
        sent_bodies.append(data)
        return real_post(url, data=data, **kwargs)

    monkeypatch.setattr("webhooks.management.commands.simulate_inbound.requests.post", spy)
    simulate("Hello", url=live_server.url)
    [body] = sent_bodies
    value = json.loads(body)["entry"][0]["changes"][0]["value"]
    assert value["metadata"]["phone_number_id"] == "111222333444555"


def test_an_unreachable_port_says_how_to_point_at_another_one():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(CommandError, match=r"pass --url http://127.0.0.1:8123"):
        simulate("Hello", url=f"http://127.0.0.1:{port}")


def test_to_sends_to_another_served_number_and_its_contact_belongs_to_it(live_server, settings):
    settings.WHATSAPP_PHONE_NUMBER_ID = "106540352242922,111222333444555"
    out = simulate("Hello", "--to", "111222333444555", url=live_server.url)
    assert "to business number 111222333444555" in out
    message = InboundMessage.objects.get()
    assert message.contact.phone_number_id == "111222333444555"


def test_to_defaults_to_the_first_served_number(live_server, settings):
    settings.WHATSAPP_PHONE_NUMBER_ID = "111222333444555,106540352242922"
    simulate("Hello", url=live_server.url)
    assert InboundMessage.objects.get().contact.phone_number_id == "111222333444555"


def test_to_a_number_the_server_does_not_serve_is_warned_and_ignored(live_server):
    err = StringIO()
    out = simulate("Hello", "--to", "999888777666555", url=live_server.url, stderr=err)
    assert "--to 999888777666555 is not in WHATSAPP_PHONE_NUMBER_ID (106540352242922)" in err.getvalue()
    assert "→ 200 ok" in out  # Meta must not redeliver it: answered 200, nothing stored
    assert InboundMessage.objects.count() == 0


@pytest.mark.parametrize("value", ["+15550783881", "abc", "1555-078"])
def test_to_that_is_not_a_phone_number_id_is_refused_naming_the_option(value):
    with pytest.raises(CommandError, match="--to"):
        simulate("Hello", "--to", value)


def test_a_voice_note_is_transcribed_offline_and_answered(live_server, settings):
    # The README's demonstration: no credentials, a voice note, a labelled fake transcript, one reply.
    settings.OUTBOUND_SENDER = "console"
    settings.OUTBOUND_REPLY_GENERATOR = "offline"
    out = simulate("--voice", "Is the blue one in stock?", url=live_server.url)
    assert "Stored message" in out
    message = InboundMessage.objects.get()
    assert (message.type, message.media_mime_type, message.raw["audio"]["voice"]) == (
        "audio",
        "audio/ogg; codecs=opus",
        True,
    )
    assert message.transcript == ""  # nothing is fetched inside the webhook request
    call_command("run_outbound_jobs", max_runtime=10, until_idle=True, stdout=StringIO())
    message.refresh_from_db()
    assert message.transcript == f"{OFFLINE_TRANSCRIPT_LABEL} Is the blue one in stock?"
    assert message.text == f"{TRANSCRIPT_LABEL} {message.transcript}"
    assert message.media_status == InboundMessage.MediaStatus.READY
    job = OutboundJob.objects.get()
    assert job.status == OutboundJob.Status.SENT
    assert job.content.startswith(OFFLINE_LABEL)
    assert "Is the blue one in stock?" in job.content


def test_a_text_a_voice_note_and_a_photo_are_one_burst(live_server, settings):
    settings.OUTBOUND_SENDER = "console"
    settings.OUTBOUND_REPLY_GENERATOR = "offline"
    out = simulate("Hi", "--voice", "my order is late", "--image", "the broken part", url=live_server.url)
    assert "Stored 3 messages" in out
    call_command("run_outbound_jobs", max_runtime=10, until_idle=True, stdout=StringIO())
    statuses = sorted(OutboundJob.objects.values_list("status", flat=True))
    assert statuses == [OutboundJob.Status.SENT, OutboundJob.Status.SUPERSEDED, OutboundJob.Status.SUPERSEDED]
    voice = InboundMessage.objects.get(type="audio")
    photo = InboundMessage.objects.get(type="image")
    assert voice.transcript.endswith("my order is late")
    assert photo.text == "[image: image/png, 1 KB, caption: the broken part]"
    assert photo.media_description == photo.text
    sent = OutboundJob.objects.get(status=OutboundJob.Status.SENT)
    assert "(with 1 image attached)" in sent.content


def test_a_voice_note_needs_words(live_server):
    with pytest.raises(CommandError, match="--voice needs the words"):
        simulate("--voice", "  ", url=live_server.url)
    with pytest.raises(CommandError, match="a text, --voice WORDS, or --image CAPTION"):
        simulate(url=live_server.url)
    assert not InboundMessage.objects.exists()
