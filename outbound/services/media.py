"""The worker's media phase: before a reply is generated, the voice notes and images it answers are fetched from
Meta, voice notes transcribed, images readied for the model (never in the webhook request).

What is kept on the inbound message: the transcript (a voice note's words, also written into `text` labelled
as a transcript, which the conversation, the model and the admin read) or a short description of an image;
never the bytes. A voice note is transcribed once: a retry finds the transcript stored. An image is downloaded
again for each model call that needs it (Meta keeps it 7 days), since its bytes are not stored.

Media that cannot be used (gone at Meta, too large, damaged, refused by the transcription) is recorded on the
message, whose text then tells the model to ask the customer to write or resend it: the job goes on to a reply,
never stuck or FAILED. Transient errors (Graph, OpenAI) raise `MediaTransientError` for the job's retry policy,
except on the job's last attempt, where the media counts as unusable so that the customer still gets an answer.
Our own faults (token, key, model) raise `MediaConfigurationError`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from django.db.models import Q

from outbound.exceptions import (
    GraphError,
    GraphTransportError,
    MediaConfigurationError,
    MediaTransientError,
    MediaUnavailableError,
)
from outbound.hot_reads import contact_has_media
from outbound.media import FetchedMedia, MediaSource
from outbound.models import InboundMessage, MediaStatus, OutboundJob
from outbound.retry import Action, graph_error_action
from outbound.transcription import Transcriber

logger = logging.getLogger(__name__)

# The types the worker fetches; documents and video keep their description (the model says it cannot open
# them). Animated stickers are skipped too: vision models take still images.
FETCHED_TYPES = (InboundMessage.Type.AUDIO, InboundMessage.Type.IMAGE, InboundMessage.Type.STICKER)
# How many times over a job's folded messages are followed (see `answered_media`).
MAX_FOLD_DEPTH = 3
TRANSCRIPT_LABEL = "[Voice note, transcribed]"

_KIND = {
    InboundMessage.Type.AUDIO: "a voice message",
    InboundMessage.Type.IMAGE: "an image",
    InboundMessage.Type.STICKER: "a sticker",
}
_UNAVAILABLE = {
    MediaStatus.GONE: "is no longer available from WhatsApp. Ask them to send it again, or to write instead.",
    MediaStatus.TOO_LARGE: "is too large to open. Ask them to write their message instead (or send a shorter one).",
    MediaStatus.CORRUPT: "arrived damaged. Ask them to send it again, or to write instead.",
    MediaStatus.UNREADABLE: "could not be opened. Ask them to write their message instead.",
}


@dataclass
class MediaPhase:
    """What the media phase gives the reply: the images for this model call, and what it did (for the log)."""

    images: dict[int, tuple[str, ...]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    duration_ms: int = 0

    def log(self) -> dict[str, object]:
        """The job log's fields: e.g. `media=transcribed:1,image:1 media_ms=840`."""
        if not self.counts:
            return {}
        summary = ",".join(f"{name}:{n}" for name, n in sorted(self.counts.items()))
        return {"media": summary, "media_ms": self.duration_ms}

    def count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1


def outbound_job_prepare_media(
    *,
    job: OutboundJob,
    source: MediaSource,
    transcriber: Transcriber,
    max_bytes: int,
    last_attempt: bool = False,
    has_media: bool | None = None,
) -> MediaPhase:
    """Fetch and prepare the voice notes and images of the messages this job answers (its own and those folded
    into it), oldest first. Raises MediaTransientError (retry later) or MediaConfigurationError (our setting).

    `has_media`: whether the contact ever sent one (`FETCHED_TYPES`), when the caller has read it already."""
    started = time.monotonic()
    phase = MediaPhase()
    for message in answered_media(job=job, has_media=has_media):
        if message.media_status not in (MediaStatus.NONE, MediaStatus.READY):
            continue  # already found unusable: the text asking to resend is stored
        if message.type == InboundMessage.Type.AUDIO and message.media_status == MediaStatus.READY:
            phase.count("transcript_kept")
            continue  # transcribed on an earlier attempt: never paid for twice
        if message.type == InboundMessage.Type.STICKER and _is_animated(message):
            continue
        try:
            _prepare(message, phase, source=source, transcriber=transcriber, max_bytes=max_bytes)
        except MediaUnavailableError as exc:
            _unusable(message, phase, exc.reason, str(exc))
        except MediaTransientError as exc:
            if not last_attempt:
                raise
            _unusable(message, phase, MediaStatus.UNREADABLE, f"{exc} (last attempt)")
    phase.duration_ms = int((time.monotonic() - started) * 1000)
    if phase.counts:
        logger.info("job_media job_id=%s %s", job.pk, " ".join(f"{k}={v}" for k, v in phase.log().items()))
    return phase


def answered_media(*, job: OutboundJob, has_media: bool | None = None) -> list[InboundMessage]:
    """The media messages this job answers: its own, and those of the jobs folded into it (one query).

    A fold supersedes a contact's older open jobs by the newest; a job folded once and retried can be folded
    again, so chains are followed to `MAX_FOLD_DEPTH` levels (deeper needs a burst to fail generation twice
    in a row while the customer keeps writing).
    """
    # Most conversations never held a voice note or an image: one indexed look at the contact's messages
    # spares them the fold-chain query below (its joins cost several milliseconds of CPU per job to build).
    if not (contact_has_media(job.contact_id, FETCHED_TYPES) if has_media is None else has_media):
        return []
    media = InboundMessage.objects.filter(contact_id=job.contact_id, type__in=FETCHED_TYPES).exclude(
        media_id=""
    )
    answered = Q(outbound_job=job)
    path = "outbound_job__superseded_by"
    for _ in range(MAX_FOLD_DEPTH):
        answered |= Q(**{path: job})
        path += "__superseded_by"
    return list(media.filter(answered).distinct().order_by("timestamp", "pk"))


def transcript_text(transcript: str) -> str:
    """How a transcribed voice note reads in the conversation: the customer's words, labelled."""
    if not transcript:
        return f"{TRANSCRIPT_LABEL} (no words could be made out)"
    return f"{TRANSCRIPT_LABEL} {transcript}"


def image_description(*, kind: str, mime_type: str, size: int, caption: str) -> str:
    """`[image: image/jpeg, 120 KB, caption: …]`: what is kept of an image (never its bytes)."""
    parts = [
        f"{kind}: {mime_type.split(';')[0].strip() or 'unknown type'}",
        f"{max(1, round(size / 1024))} KB",
    ]
    if caption:
        parts.append(f"caption: {caption}")
    return f"[{', '.join(parts)}]"


def _prepare(
    message: InboundMessage,
    phase: MediaPhase,
    *,
    source: MediaSource,
    transcriber: Transcriber,
    max_bytes: int,
) -> None:
    media = _fetch(message, source=source, max_bytes=max_bytes)
    if message.type == InboundMessage.Type.AUDIO:
        transcript = transcriber.transcribe(data=media.data, mime_type=media.mime_type)
        message.transcript = transcript
        message.text = transcript_text(transcript)
        message.media_description = _short(media, "voice note")
        _save(message, MediaStatus.READY, "transcript", "text", "media_description")
        phase.count("transcribed")
        return
    kind = "sticker" if message.type == InboundMessage.Type.STICKER else "image"
    description = image_description(
        kind=kind, mime_type=media.mime_type, size=media.size, caption=message.media_caption
    )
    phase.images[message.pk] = (media.data_url(),)
    phase.count(kind)
    if message.media_status != MediaStatus.READY or message.text != description:
        message.media_description = description[:500]
        message.text = description
        _save(message, MediaStatus.READY, "text", "media_description")


def _fetch(message: InboundMessage, *, source: MediaSource, max_bytes: int) -> FetchedMedia:
    """Download through the source, turning Graph's errors into the media phase's three outcomes."""
    try:
        return source.fetch(media_id=message.media_id, max_bytes=max_bytes)
    except GraphError as exc:
        action = graph_error_action(exc)
        if action in (Action.RETRY, Action.PAIR_RATE_LIMIT):
            raise MediaTransientError(f"Graph media {exc.describe()}") from exc
        if action is Action.CONFIGURATION:
            raise MediaConfigurationError(
                f"Graph media {exc.describe()}", check="WHATSAPP_ACCESS_TOKEN and its permissions"
            ) from exc
        # An unknown or expired media id (Meta answers 400 code 100, or 404): it is not coming back.
        raise MediaUnavailableError(f"Graph media {exc.describe()}", reason=MediaStatus.GONE) from exc
    except GraphTransportError as exc:
        raise MediaTransientError(str(exc)) from exc


def _unusable(message: InboundMessage, phase: MediaPhase, reason: str, why: str) -> None:
    kind = _KIND.get(InboundMessage.Type(message.type), "a file")
    text = f"[The customer sent {kind} that {_UNAVAILABLE[MediaStatus(reason)]}]"
    if message.media_caption:
        text += f" Caption: {message.media_caption}"
    message.text = text
    message.media_description = why[:500]
    _save(message, reason, "text", "media_description")
    phase.count(reason.lower())
    phase.notes.append(
        f"{kind.split(' ', 1)[-1]} {message.wamid}: {why}; the reply asks the customer to write or resend"
    )
    logger.warning("job_media_unusable wamid=%s reason=%s", message.wamid, reason)


def _save(message: InboundMessage, status: str, *fields: str) -> None:
    message.media_status = status
    InboundMessage.objects.filter(pk=message.pk).update(
        media_status=status, **{name: getattr(message, name) for name in fields}
    )


def _short(media: FetchedMedia, kind: str) -> str:
    return f"[{kind}: {media.mime_type.split(';')[0].strip()}, {max(1, round(media.size / 1024))} KB]"


def _is_animated(message: InboundMessage) -> bool:
    sticker = message.raw.get("sticker") if isinstance(message.raw, dict) else None
    return isinstance(sticker, dict) and sticker.get("animated") is True
