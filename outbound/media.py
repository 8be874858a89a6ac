"""Meta's media API: a customer's voice note or image, fetched in two steps with the bearer token.

1. `GET /{version}/{media-id}` → `{"url", "mime_type", "sha256", "file_size", "id"}` (the URL lives ~5 minutes;
   the media id 7 days after the webhook).
2. `GET {url}` with the same `Authorization: Bearer` header → the bytes.

https://developers.facebook.com/documentation/business-messaging/whatsapp/business-phone-numbers/media/

The bytes stay in memory for the one model call that needs them: they are never written to the database.
Errors: Graph's answers are `GraphError`s classified by `outbound.retry` like every other Graph call; transport
failures are `GraphConnectError` (a GET is safe to repeat); a file that is too large, or whose sha256 does not
match, is `MediaUnavailableError`. The console source (OUTBOUND_SENDER=console) stands in for Meta on a first run.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import requests

from outbound.exceptions import GraphConnectError, GraphError, MediaUnavailableError
from outbound.whatsapp import USER_AGENT

logger = logging.getLogger(__name__)

# Meta's largest media (audio and video, §12.1); OUTBOUND_MEDIA_MAX_BYTES defaults to it.
DEFAULT_MEDIA_MAX_BYTES = 16 * 1024 * 1024
_CHUNK = 64 * 1024
# A download may take this many times WHATSAPP_TIMEOUT in all (16 MB in 60 s needs 0.27 MB/s).
DOWNLOAD_DEADLINE_FACTOR = 4
# The failure reasons of `MediaUnavailableError` (the values of `outbound.models.MediaStatus`).
GONE, TOO_LARGE, CORRUPT, UNREADABLE = "GONE", "TOO_LARGE", "CORRUPT", "UNREADABLE"


@dataclass(frozen=True)
class FetchedMedia:
    """A downloaded media file: its bytes (memory only), Meta's mime type, and its size."""

    data: bytes
    mime_type: str

    @property
    def size(self) -> int:
        return len(self.data)

    def data_url(self) -> str:
        """`data:<mime>;base64,…`: how an image reaches the model (Meta's URLs need our token and expire)."""
        mime = self.mime_type.split(";")[0].strip() or "application/octet-stream"
        return f"data:{mime};base64,{base64.b64encode(self.data).decode('ascii')}"


class MediaSource(Protocol):
    """Where the worker gets a customer's media: Meta's media API, or the console stand-in."""

    def fetch(self, *, media_id: str, max_bytes: int) -> FetchedMedia: ...


class GraphMediaClient:
    """Downloads inbound media through the Graph API; `_request` is the one place that talks to Meta."""

    def __init__(
        self,
        *,
        access_token: str,
        base_url: str = "https://graph.facebook.com",
        api_version: str = "v25.0",
        timeout: float = 15.0,
        session: requests.Session | None = None,
    ) -> None:
        self._access_token = access_token
        self._base = f"{base_url.rstrip('/')}/{api_version}"
        self._timeout = timeout
        self._session = session or requests.Session()

    def fetch(self, *, media_id: str, max_bytes: int) -> FetchedMedia:
        """Look the media up, download it, and check its size and sha256.

        https://developers.facebook.com/documentation/business-messaging/whatsapp/business-phone-numbers/media/#download-media
        """
        info = self._request(f"{self._base}/{quote(media_id, safe='')}").json()
        if not isinstance(info, dict) or not isinstance(info.get("url"), str) or not info["url"]:
            raise MediaUnavailableError(f"media {media_id}: Meta's answer has no download url", reason=GONE)
        declared = _int(info.get("file_size"))
        if declared is not None and declared > max_bytes:
            raise MediaUnavailableError(
                f"media {media_id}: {declared} bytes, over OUTBOUND_MEDIA_MAX_BYTES={max_bytes}",
                reason=TOO_LARGE,
            )
        data = self._download(info["url"], media_id=media_id, max_bytes=max_bytes)
        expected = str(info.get("sha256") or "")
        if expected and not sha256_matches(data, expected):
            raise MediaUnavailableError(
                f"media {media_id}: the sha256 of the {len(data)} bytes downloaded is not Meta's",
                reason=CORRUPT,
            )
        mime_type = str(info.get("mime_type") or "application/octet-stream")
        logger.info("media_downloaded media_id=%s mime_type=%s bytes=%s", media_id, mime_type, len(data))
        return FetchedMedia(data=data, mime_type=mime_type)

    def _download(self, url: str, *, media_id: str, max_bytes: int) -> bytes:
        try:
            response = self._request(url, stream=True, download=True)
        except GraphError as exc:
            if exc.http_status in (401, 403, 404, 410) and exc.code is None:
                # The metadata request with the same token just worked: the short-lived URL has expired.
                raise MediaUnavailableError(
                    f"media {media_id}: the download URL answered {exc.http_status} (expired)", reason=GONE
                ) from exc
            raise
        # `timeout` bounds each socket read; a download that trickles in must also end: the whole body gets
        # DOWNLOAD_DEADLINE_FACTOR times the per-request timeout.
        deadline = time.monotonic() + self._timeout * DOWNLOAD_DEADLINE_FACTOR
        with response:
            chunks: list[bytes] = []
            size = 0
            try:
                for chunk in response.iter_content(_CHUNK):
                    if time.monotonic() > deadline:
                        raise GraphConnectError(
                            f"media {media_id}: the download took longer than "
                            f"{self._timeout * DOWNLOAD_DEADLINE_FACTOR:.0f} s"
                        )
                    size += len(chunk)
                    if size > max_bytes:
                        raise MediaUnavailableError(
                            f"media {media_id}: more than OUTBOUND_MEDIA_MAX_BYTES={max_bytes} bytes",
                            reason=TOO_LARGE,
                        )
                    chunks.append(chunk)
            except requests.RequestException as exc:
                raise GraphConnectError(f"media download broke off: {type(exc).__name__}") from exc
        return b"".join(chunks)

    def _request(self, url: str, *, stream: bool = False, download: bool = False) -> requests.Response:
        """GET with the bearer token and a timeout; Graph errors become `GraphError` (a GET is safe to repeat,
        so every transport failure is a `GraphConnectError`)."""
        headers = {"Authorization": f"Bearer {self._access_token}", "User-Agent": USER_AGENT}
        try:
            response = self._session.get(url, headers=headers, timeout=self._timeout, stream=stream)
        except requests.RequestException as exc:
            raise GraphConnectError(f"media request failed: {type(exc).__name__}") from exc
        if response.ok and download:
            return response
        body: Any
        try:
            body = response.json()
        except ValueError:
            body = None
        if not response.ok or not isinstance(body, dict) or "error" in body:
            error = GraphError.from_response(
                response.status_code,
                body if body is not None else response.text[:200],
                secrets=(self._access_token,),
            )
            logger.warning("graph_media_error %s", error.describe())
            raise error
        return response


class ConsoleMediaSource:
    """Stands in for Meta's media API when there are no Meta credentials (OUTBOUND_SENDER=console).

    `simulate_inbound --voice TEXT` sends a media id `simulated.<base64url of TEXT>`: its "audio" is that text,
    which the offline transcriber reads back. Any other id gives a tiny PNG (a simulated photo).
    """

    def fetch(self, *, media_id: str, max_bytes: int) -> FetchedMedia:
        logger.warning("console_media NOT DOWNLOADED (OUTBOUND_SENDER=console) media_id=%s", media_id)
        text = simulated_voice_text(media_id)
        if text is not None:
            return FetchedMedia(data=text.encode("utf-8"), mime_type="audio/ogg; codecs=opus")
        return FetchedMedia(data=PLACEHOLDER_PNG, mime_type="image/png")


SIMULATED_PREFIX = "simulated."
# A 1x1 white PNG: the console source's photo.
PLACEHOLDER_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4//8/AAX+Av4N70a4AAAAAElFTkSuQmCC"
)


def simulated_media_id(text: str) -> str:
    """The media id `simulate_inbound --voice` sends: the fake voice note's words, carried in the id."""
    return SIMULATED_PREFIX + base64.urlsafe_b64encode(text.encode("utf-8")).decode("ascii")


def simulated_voice_text(media_id: str) -> str | None:
    """The words of a simulated voice note, or None for any other media id."""
    if not media_id.startswith(SIMULATED_PREFIX) or media_id == SIMULATED_PREFIX + "image":
        return None
    try:
        return base64.urlsafe_b64decode(media_id.removeprefix(SIMULATED_PREFIX)).decode("utf-8")
    except (binascii.Error, ValueError):
        return None


def sha256_matches(data: bytes, expected: str) -> bool:
    """Meta's sha256 is hex in the media API and base64 in some webhooks: either form is accepted."""
    digest = hashlib.sha256(data).digest()
    value = expected.strip()
    return value.lower() == digest.hex() or value == base64.b64encode(digest).decode("ascii")


def _int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and not isinstance(value, bool) else None
    except (TypeError, ValueError):
        return None
