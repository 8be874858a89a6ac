"""Voice notes and images end to end: the signed webhook stores the media reference, the real worker fetches it
through Meta's media API (a fake on loopback: real HTTP, bearer token checked), transcribes voice notes with
OpenAI's transcription endpoint (a fake on loopback), and gives images to the reply model as image inputs."""

from __future__ import annotations

import base64
import hashlib
import itertools
import socket
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import requests
from django.core.management import CommandError
from django.db import connection
from django.urls import reverse
from django.utils import timezone

from bench.fakes import FakeGraph, FaultPlan, graph_error, openai_error
from outbound.media import PLACEHOLDER_PNG, GraphMediaClient, sha256_matches
from outbound.models import InboundMessage, OutboundJob
from outbound.services.media import TRANSCRIPT_LABEL, image_description
from outbound.transcription import OFFLINE_TRANSCRIPT_LABEL, OfflineTranscriber
from tests.outbound.conftest import make_due, run_jobs
from webhooks.envelopes import media_message, messages_webhook, text_message

pytestmark = pytest.mark.django_db
S = OutboundJob.Status
M = InboundMessage.MediaStatus
WA_ID = "16505551234"
VOICE_WORDS = b"Hi, do you have the running shoes in blue, size 42?"
_wamids = itertools.count(1)


@pytest.fixture
def meta(settings) -> Iterator[FakeGraph]:
    """Meta's Graph API (messages and media) on loopback, requiring our access token."""
    server = FakeGraph(plan=FaultPlan(), access_token=settings.WHATSAPP_ACCESS_TOKEN)
    server.start()
    settings.WHATSAPP_GRAPH_URL = server.url
    settings.WHATSAPP_TIMEOUT = 2.0
    try:
        yield server
    finally:
        server.stop()


def deliver(webhook: Any, *messages: dict[str, Any]) -> list[OutboundJob]:
    """POST the messages as one signed webhook; returns their jobs, oldest first."""
    payload = messages_webhook(
        messages=list(messages), contacts=[{"profile": {"name": "Ana"}, "wa_id": WA_ID}]
    )
    assert webhook(payload).status_code == 200
    return [OutboundJob.objects.get(inbound_message__wamid=m["id"]) for m in messages]


def voice(media_id: str, *, ago: int = 60, sha256: str = "") -> dict[str, Any]:
    return media_message(
        wa_id=WA_ID,
        wamid=f"wamid.VOICE{next(_wamids)}",
        kind="audio",
        media_id=media_id,
        mime_type="audio/ogg; codecs=opus",
        sha256=sha256,
        timestamp=_ts(ago),
        voice=True,
    )


def image(media_id: str, *, caption: str = "", ago: int = 60, kind: str = "image") -> dict[str, Any]:
    return media_message(
        wa_id=WA_ID,
        wamid=f"wamid.IMAGE{next(_wamids)}",
        kind=kind,
        media_id=media_id,
        mime_type="image/jpeg",
        caption=caption,
        timestamp=_ts(ago),
    )


def text(body: str, *, ago: int = 60) -> dict[str, Any]:
    return text_message(wa_id=WA_ID, wamid=f"wamid.TEXT{next(_wamids)}", text=body, timestamp=_ts(ago))


def _ts(ago: int) -> int:
    return int((timezone.now() - timedelta(seconds=ago)).timestamp())


def fresh(job: OutboundJob) -> OutboundJob:
    return OutboundJob.objects.select_related("inbound_message").get(pk=job.pk)


def last_user_content(fake_openai: Any) -> Any:
    return fake_openai.chat_requests()[-1]["body"]["messages"][-1]["content"]


# ---------------------------------------------------------------- voice notes


def test_a_voice_note_is_fetched_in_two_steps_with_the_token_transcribed_and_answered(
    webhook, meta, fake_openai, settings
):
    media_id = meta.add_media(VOICE_WORDS, "audio/ogg; codecs=opus")
    [job] = deliver(webhook, voice(media_id, sha256=hashlib.sha256(VOICE_WORDS).hexdigest()))
    message = job.inbound_message
    assert (message.media_id, message.media_mime_type) == (media_id, "audio/ogg; codecs=opus")
    assert message.media_sha256 == hashlib.sha256(VOICE_WORDS).hexdigest()
    assert meta.media_requests() == [], "media is never fetched inside the webhook request"

    run_jobs()

    metadata, download = meta.media_requests()
    assert metadata["path"] == f"/v25.0/{media_id}"
    assert download["path"].startswith(f"/media-download/{media_id}?")
    for request in (metadata, download):
        assert request["headers"]["Authorization"] == f"Bearer {settings.WHATSAPP_ACCESS_TOKEN}"
        assert request["status"] == 200
    [upload] = fake_openai.transcription_requests()
    assert upload["body"]["model"] == "gpt-4o-mini-transcribe"
    assert upload["body"]["file"] == {
        "filename": "voice.ogg",
        "content_type": "audio/ogg",
        "data": VOICE_WORDS,
    }
    message.refresh_from_db()
    assert message.transcript == VOICE_WORDS.decode()
    assert message.text == f"{TRANSCRIPT_LABEL} {VOICE_WORDS.decode()}"
    assert message.media_status == M.READY
    assert message.media_description == "[voice note: audio/ogg, 1 KB]"
    # The model reads the transcript as the customer's words, labelled.
    assert last_user_content(fake_openai) == f"{TRANSCRIPT_LABEL} {VOICE_WORDS.decode()}"
    job = fresh(job)
    assert (job.status, job.attempts, job.error_log) == (S.SENT, 1, "")
    assert job.content == fake_openai.reply
    [send] = meta.accepted()
    assert send["body"]["context"] == {"message_id": message.wamid}


def test_the_transcription_model_is_a_setting(webhook, meta, fake_openai, settings):
    settings.OPENAI_TRANSCRIPTION_MODEL = "whisper-1"
    deliver(webhook, voice(meta.add_media(b"hello", "audio/ogg")))
    run_jobs()
    assert fake_openai.transcription_requests()[0]["body"]["model"] == "whisper-1"


def test_a_retry_after_the_transcript_was_stored_does_not_transcribe_again(webhook, meta, fake_openai):
    fake_openai.plan.scripted = [(200, {"text": "Where is my order?"}), (503, {"error": {"message": "busy"}})]
    [job] = deliver(webhook, voice(meta.add_media(b"audio", "audio/ogg")))

    run_jobs()
    job = fresh(job)
    assert (job.status, job.attempts) == (S.PENDING, 1)
    assert "phase=generate OpenAI http=503" in job.error_log
    assert job.inbound_message.transcript == "Where is my order?"

    make_due(job)
    run_jobs()
    assert fresh(job).status == S.SENT
    assert len(fake_openai.transcription_requests()) == 1, "the stored transcript is reused"
    assert len(meta.media_requests()) == 2, "nor is the voice note downloaded again"
    assert last_user_content(fake_openai) == f"{TRANSCRIPT_LABEL} Where is my order?"


def test_a_transient_transcription_error_retries_the_job(webhook, meta, fake_openai):
    fake_openai.plan.scripted = [
        (500, {"error": {"message": "The server had an error", "type": "server_error"}})
    ]
    [job] = deliver(webhook, voice(meta.add_media(VOICE_WORDS, "audio/ogg")))

    run_jobs()
    job = fresh(job)
    assert (job.status, job.attempts, job.content) == (S.PENDING, 1, "")
    assert "attempt=1 phase=media OpenAI transcription http=500" in job.error_log
    assert job.next_attempt_at > timezone.now(), "with the usual backoff"
    assert fake_openai.chat_requests() == [], "no reply is generated without the customer's words"
    assert job.inbound_message.media_status == M.NONE

    make_due(job)
    run_jobs()
    job = fresh(job)
    assert (job.status, job.attempts) == (S.SENT, 2)
    assert job.inbound_message.transcript == VOICE_WORDS.decode()


def test_a_transient_error_on_the_last_attempt_still_answers_asking_to_write(
    webhook, meta, fake_openai, settings
):
    settings.OUTBOUND_MAX_ATTEMPTS = 1
    fake_openai.plan.scripted = [(500, {"error": {"message": "down", "type": "server_error"}})]
    [job] = deliver(webhook, voice(meta.add_media(VOICE_WORDS, "audio/ogg")))
    run_jobs()
    job = fresh(job)
    assert job.status == S.SENT, "never FAILED for good over a voice note"
    assert job.inbound_message.media_status == M.UNREADABLE
    assert "Ask them to write" in last_user_content(fake_openai)
    assert "phase=media voice message" in job.error_log


def test_a_voice_note_the_transcription_refuses_gets_an_answer_asking_to_write(webhook, meta, fake_openai):
    fake_openai.plan.scripted = [openai_error(400, "Audio file might be corrupted or unsupported")]
    [job] = deliver(webhook, voice(meta.add_media(b"\x00\x01", "audio/amr")))
    run_jobs()
    job = fresh(job)
    assert (job.status, job.attempts) == (S.SENT, 1)
    message = job.inbound_message
    assert message.media_status == M.UNREADABLE
    assert message.transcript == ""
    assert message.text == (
        "[The customer sent a voice message that could not be opened. Ask them to write their message instead.]"
    )
    assert last_user_content(fake_openai) == message.text
    assert "phase=media voice message" in job.error_log
    assert "the reply asks the customer to write or resend" in job.error_log
    # The file name tells the endpoint the format.
    assert fake_openai.transcription_requests()[0]["body"]["file"]["filename"] == "voice.amr"


@pytest.mark.parametrize(
    ("status", "check"),
    [(401, "OPENAI_API_KEY"), (404, "OPENAI_TRANSCRIPTION_MODEL")],
)
def test_a_refused_openai_key_or_model_is_a_configuration_fault(webhook, meta, fake_openai, status, check):
    fake_openai.plan.scripted = [openai_error(status, "nope")]
    [job] = deliver(webhook, voice(meta.add_media(VOICE_WORDS, "audio/ogg")))
    with pytest.raises(CommandError, match=check):
        run_jobs()
    job = fresh(job)
    assert (job.status, job.attempts, job.claim_token) == (S.PENDING, 0, None)
    assert f"phase=media OpenAI transcription http={status}" in job.error_log
    assert meta.accepted() == []


# ---------------------------------------------------------------- images


def test_an_image_reaches_the_model_as_an_image_input_with_its_caption(webhook, meta, fake_openai):
    photo = PLACEHOLDER_PNG * 40
    media_id = meta.add_media(photo, "image/jpeg")
    [job] = deliver(webhook, image(media_id, caption="Is this part broken?"))

    run_jobs()

    description = "[image: image/jpeg, 3 KB, caption: Is this part broken?]"
    content = last_user_content(fake_openai)
    assert content[0] == {"type": "text", "text": description}
    assert content[1]["type"] == "image_url"
    url = content[1]["image_url"]["url"]
    assert url.startswith("data:image/jpeg;base64,")
    assert base64.b64decode(url.removeprefix("data:image/jpeg;base64,")) == photo
    job = fresh(job)
    assert job.status == S.SENT
    message = job.inbound_message
    assert (message.media_status, message.media_description, message.text) == (
        M.READY,
        description,
        description,
    )
    assert message.media_caption == "Is this part broken?"
    assert fake_openai.transcription_requests() == []
    # The bytes are never stored: no column of any table holds them.
    encoded = base64.b64encode(photo).decode()
    with connection.cursor() as cursor:
        for table in (InboundMessage._meta.db_table, OutboundJob._meta.db_table):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")  # noqa: S608
            assert not any(encoded[:200] in str(cell) for row in cursor.fetchall() for cell in row)


def test_an_older_image_is_its_description_and_only_the_answered_one_is_downloaded(
    webhook, meta, fake_openai
):
    first = meta.add_media(PLACEHOLDER_PNG, "image/jpeg")
    deliver(webhook, image(first, caption="front", ago=600))
    run_jobs()
    second = meta.add_media(PLACEHOLDER_PNG, "image/jpeg")
    deliver(webhook, image(second, caption="back", ago=60))
    run_jobs()

    messages = fake_openai.chat_requests()[-1]["body"]["messages"]
    user_turns = [m for m in messages if m["role"] == "user"]
    assert user_turns[0]["content"] == "[image: image/jpeg, 1 KB, caption: front]"
    assert [part["type"] for part in user_turns[-1]["content"]] == ["text", "image_url"]
    assert [r["path"] for r in meta.media_requests()][-2:][0] == f"/v25.0/{second}"
    assert len(meta.media_requests()) == 4


def test_a_sticker_is_seen_and_documents_and_videos_keep_the_polite_description(webhook, meta, fake_openai):
    sticker = meta.add_media(PLACEHOLDER_PNG, "image/webp")
    document = media_message(
        wa_id=WA_ID,
        wamid="wamid.DOC1",
        kind="document",
        media_id="999001",
        mime_type="application/pdf",
        timestamp=_ts(90),
    )
    deliver(webhook, document, image(sticker, kind="sticker", ago=60))
    run_jobs()
    paths = [r["path"] for r in meta.media_requests()]
    assert paths[0] == f"/v25.0/{sticker}"
    assert not any("999001" in path for path in paths), "the document is not fetched"
    user_turns = [m for m in fake_openai.chat_requests()[-1]["body"]["messages"] if m["role"] == "user"]
    assert user_turns[0]["content"] == "[The customer sent a document, which this service cannot open.]"
    assert user_turns[1]["content"][0] == {"type": "text", "text": "[sticker: image/webp, 1 KB]"}


# ---------------------------------------------------------------- media that cannot be used


def test_an_expired_media_id_gets_an_answer_asking_to_resend(webhook, meta, fake_openai):
    # Meta keeps inbound media 7 days; after that the id is unknown (400, code 100).
    [job] = deliver(webhook, voice("1234567890"))
    run_jobs()
    job = fresh(job)
    assert (job.status, job.attempts) == (S.SENT, 1)
    message = job.inbound_message
    assert message.media_status == M.GONE
    assert "no longer available from WhatsApp. Ask them to send it again" in message.text
    assert "code=100" in message.media_description
    assert "Ask them to send it again" in last_user_content(fake_openai)
    assert "attempt=1 phase=media voice message" in job.error_log
    assert fake_openai.transcription_requests() == []
    assert len(meta.media_requests()) == 1


def test_an_expired_download_url_gets_an_answer_asking_to_resend(webhook, meta, fake_openai):
    [job] = deliver(webhook, image(meta.add_media(PLACEHOLDER_PNG, "image/jpeg", url_expired=True)))
    run_jobs()
    job = fresh(job)
    assert job.status == S.SENT
    assert job.inbound_message.media_status == M.GONE
    assert "(expired)" in job.inbound_message.media_description
    assert last_user_content(fake_openai).startswith(
        "[The customer sent an image that is no longer available"
    )


def test_oversized_media_is_not_downloaded(webhook, meta, fake_openai, settings):
    settings.OUTBOUND_MEDIA_MAX_BYTES = 1000
    [job] = deliver(webhook, voice(meta.add_media(b"x" * 1001, "audio/ogg")))
    run_jobs()
    job = fresh(job)
    assert job.status == S.SENT
    assert job.inbound_message.media_status == M.TOO_LARGE
    assert "OUTBOUND_MEDIA_MAX_BYTES=1000" in job.inbound_message.media_description
    assert len(meta.media_requests()) == 1, "Meta's file_size said it was too large: no download"
    assert "too large to open. Ask them to write" in last_user_content(fake_openai)


def test_a_download_larger_than_declared_is_cut_off_at_the_limit(webhook, meta, fake_openai, settings):
    settings.OUTBOUND_MEDIA_MAX_BYTES = 100_000
    [job] = deliver(webhook, voice(meta.add_media(b"x" * 200_000, "audio/ogg", file_size=10)))
    run_jobs()
    assert fresh(job).inbound_message.media_status == M.TOO_LARGE
    assert fake_openai.transcription_requests() == []


def test_a_hash_mismatch_gets_an_answer_asking_to_resend(webhook, meta, fake_openai):
    [job] = deliver(webhook, voice(meta.add_media(VOICE_WORDS, "audio/ogg", sha256="0" * 64)))
    run_jobs()
    job = fresh(job)
    assert job.status == S.SENT
    assert job.inbound_message.media_status == M.CORRUPT
    assert "arrived damaged" in job.inbound_message.text
    assert fake_openai.transcription_requests() == []


def test_a_graph_server_error_retries_the_job(webhook, meta, fake_openai):
    meta.plan.scripted = [graph_error(131016, "Service temporarily unavailable", http_status=503)]
    [job] = deliver(webhook, voice(meta.add_media(VOICE_WORDS, "audio/ogg")))
    run_jobs()
    job = fresh(job)
    assert (job.status, job.attempts) == (S.PENDING, 1)
    assert "attempt=1 phase=media Graph media http=503 code=131016" in job.error_log
    make_due(job)
    run_jobs()
    assert fresh(job).status == S.SENT


def test_a_refused_access_token_is_a_configuration_fault(webhook, meta, fake_openai, settings):
    meta.access_token = "another-token"
    [job] = deliver(webhook, voice(meta.add_media(VOICE_WORDS, "audio/ogg")))
    with pytest.raises(CommandError, match="WHATSAPP_ACCESS_TOKEN") as raised:
        run_jobs()
    assert settings.WHATSAPP_ACCESS_TOKEN not in str(raised.value)
    job = fresh(job)
    assert (job.status, job.attempts, job.claim_token) == (S.PENDING, 0, None)
    assert "phase=media Graph media http=401 code=190" in job.error_log
    assert job.inbound_message.media_status == M.NONE


# ---------------------------------------------------------------- bursts


def test_a_voice_note_inside_a_burst_of_texts_gets_one_reply_to_all(webhook, meta, fake_openai):
    media_id = meta.add_media(b"I ordered it last Monday.", "audio/ogg")
    jobs = deliver(webhook, text("Hello", ago=90), voice(media_id, ago=80), text("Any news?", ago=70))
    run_jobs()

    statuses = [fresh(job).status for job in jobs]
    assert statuses == [S.SUPERSEDED, S.SUPERSEDED, S.SENT]
    assert len(meta.accepted()) == 1
    assert len(fake_openai.chat_requests()) == 1
    user_turns = [
        m["content"] for m in fake_openai.chat_requests()[0]["body"]["messages"] if m["role"] == "user"
    ]
    assert user_turns == ["Hello", f"{TRANSCRIPT_LABEL} I ordered it last Monday.", "Any news?"]


def test_a_burst_folded_twice_still_transcribes_the_first_voice_note(webhook, meta, fake_openai):
    fake_openai.plan.scripted = [(500, {"error": {"message": "down", "type": "server_error"}})]
    first_voice = meta.add_media(b"first", "audio/ogg")
    [voice_job, text_job] = deliver(webhook, voice(first_voice, ago=90), text("and", ago=80))
    run_jobs()  # folded: the text's job answers both, and its media phase fails
    assert fresh(voice_job).superseded_by_id == text_job.pk
    assert fresh(text_job).status == S.PENDING
    second_voice = meta.add_media(b"second", "audio/ogg")
    [last_job] = deliver(webhook, voice(second_voice, ago=70))
    make_due(text_job)
    run_jobs()  # folded again: the newest job answers all three
    assert fresh(text_job).superseded_by_id == last_job.pk
    assert fresh(last_job).status == S.SENT
    user_turns = [
        m["content"] for m in fake_openai.chat_requests()[-1]["body"]["messages"] if m["role"] == "user"
    ]
    assert user_turns == [f"{TRANSCRIPT_LABEL} first", "and", f"{TRANSCRIPT_LABEL} second"]


# ---------------------------------------------------------------- pure parts


def test_sha256_is_accepted_as_hex_or_base64():
    digest = hashlib.sha256(b"data").digest()
    assert sha256_matches(b"data", digest.hex())
    assert sha256_matches(b"data", digest.hex().upper())
    assert sha256_matches(b"data", base64.b64encode(digest).decode())
    assert not sha256_matches(b"other", digest.hex())


def test_image_description():
    assert image_description(kind="image", mime_type="image/jpeg", size=122_880, caption="") == (
        "[image: image/jpeg, 120 KB]"
    )
    assert image_description(kind="image", mime_type="", size=10, caption="hi") == (
        "[image: unknown type, 1 KB, caption: hi]"
    )


# ---------------------------------------------------------------- transport and admin


def test_an_unreachable_graph_retries_the_media_phase(webhook, fake_openai, settings):
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        settings.WHATSAPP_GRAPH_URL = f"http://127.0.0.1:{sock.getsockname()[1]}"
    [job] = deliver(webhook, voice("4242"))
    run_jobs()
    job = fresh(job)
    assert (job.status, job.attempts) == (S.PENDING, 1)
    assert "phase=media media request failed: ConnectionError" in job.error_log
    assert job.inbound_message.media_status == M.NONE


def test_the_admin_shows_the_transcript_and_the_media_phase(webhook, meta, fake_openai, admin_client):
    [job] = deliver(webhook, voice(meta.add_media(b"Can I pay on delivery?", "audio/ogg")))
    run_jobs()
    message = fresh(job).inbound_message
    page = admin_client.get(reverse("admin:outbound_outboundjob_change", args=[job.pk])).content.decode()
    assert "(fetched: [voice note: audio/ogg, 1 KB])" in page
    assert f"{TRANSCRIPT_LABEL} Can I pay on delivery?" in page
    page = admin_client.get(
        reverse("admin:outbound_inboundmessage_change", args=[message.pk])
    ).content.decode()
    assert "Can I pay on delivery?" in page
    assert message.media_id in page
    listing = admin_client.get(reverse("admin:outbound_inboundmessage_changelist") + "?media_status=READY")
    assert message.wamid in listing.content.decode()


def test_a_download_that_trickles_in_is_given_up_and_retried(webhook, meta, fake_openai, settings):
    # Each read arrives within the timeout, but the whole body would take 10 s: the download has a deadline
    # (4 x WHATSAPP_TIMEOUT = 1 s here) so that a slow CDN cannot hold a job for long.
    settings.WHATSAPP_TIMEOUT = 0.25
    meta.download_bytes_per_second = 20_000
    [job] = deliver(webhook, image(meta.add_media(b"x" * 200_000, "image/jpeg")))
    run_jobs()
    job = fresh(job)
    assert (job.status, job.attempts) == (S.PENDING, 1)
    assert "the download took longer than 1 s" in job.error_log


def test_every_media_request_carries_the_timeout_and_the_token():
    class Recorder(requests.Session):
        def __init__(self) -> None:
            super().__init__()
            self.calls: list[tuple[str, dict[str, Any]]] = []

        def get(self, url: str | bytes, **kwargs: Any) -> requests.Response:
            self.calls.append((str(url), kwargs))
            return super().get(url, **kwargs)

    with FakeGraph(access_token="tok") as server:
        session = Recorder()
        client = GraphMediaClient(access_token="tok", base_url=server.url, timeout=3.5, session=session)
        media_id = server.add_media(b"abc", "audio/ogg")
        assert client.fetch(media_id=media_id, max_bytes=10).data == b"abc"
    assert [kwargs["timeout"] for _, kwargs in session.calls] == [3.5, 3.5]
    assert all(kwargs["headers"]["Authorization"] == "Bearer tok" for _, kwargs in session.calls)


def test_the_offline_transcriber_labels_what_it_returns():
    assert OfflineTranscriber().transcribe(data="Olá".encode(), mime_type="audio/ogg") == (
        f"{OFFLINE_TRANSCRIPT_LABEL} Olá"
    )
    assert (
        OfflineTranscriber()
        .transcribe(data=b"\xff\xfe\x00", mime_type="audio/ogg")
        .startswith(f"{OFFLINE_TRANSCRIPT_LABEL} (a 3-byte recording")
    )


def test_the_console_media_source_is_read_by_the_offline_transcriber_even_with_a_real_model(settings):
    # DEBUG with an OpenAI key but no Meta token: simulate_inbound's voice notes are words, not audio, and the
    # real transcription endpoint would refuse them (the customer would be asked to write instead).
    from outbound.transcription import OfflineTranscriber
    from outbound.worker_config import worker_config_from_settings

    settings.OUTBOUND_SENDER = "console"
    settings.OUTBOUND_REPLY_GENERATOR = "openai"
    config = worker_config_from_settings()
    assert isinstance(config.transcriber, OfflineTranscriber)
    settings.OUTBOUND_SENDER = "graph"
    assert not isinstance(worker_config_from_settings().transcriber, OfflineTranscriber)
