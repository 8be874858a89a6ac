"""The Meta webhook: GET is the verification handshake, POST is verify → parse → store → 200.

HTTP contract (Meta retries any non-200 for 7 days, so the status code is a decision):
- 401 no signature, 403 wrong signature: nothing is read or stored.
- 413 body over DATA_UPLOAD_MAX_MEMORY_SIZE, 400 body that is not JSON: Meta's own payloads never are.
- 503 when the database is unavailable: nothing half-written (one transaction), and Meta's redelivery stores it.
- 200 for every other well-signed payload, including shapes we ignore (logged) and messages to a business number
  this service does not serve (WHATSAPP_PHONE_NUMBER_ID), so Meta stops retrying. When the database refuses the
  batch for another reason (a value it cannot hold, a bug), each message and status is stored on its own: the
  good ones are kept, the bad ones logged by wamid, and the answer is still 200, so a poison message never makes
  Meta redeliver the POST for 7 days.
- 400 (logged) if even that fails: a well-signed body never gets a 5xx loop out of a bug.
No OpenAI or Graph call happens here; the worker does that.
"""

from __future__ import annotations

import hmac
import logging
import time
import traceback
from pathlib import Path

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from outbound.inbound import ParsedWebhook
from outbound.numbers import served_phone_number_ids
from outbound.postgresql.base import reconnecting_once
from outbound.services.ingest import RETRY_LATER, IngestResult, webhook_ingest, webhook_ingest_each
from webhooks.payloads import load_payload, parse_webhook
from webhooks.signatures import verify_signature

logger = logging.getLogger(__name__)


@csrf_exempt
@require_http_methods(["GET", "POST"])
def whatsapp_webhook(request: HttpRequest) -> HttpResponse:
    if request.method == "GET":
        return _verify_subscription(request)
    return _receive(request)


def _verify_subscription(request: HttpRequest) -> HttpResponse:
    token = request.GET.get("hub.verify_token", "")
    expected = settings.WHATSAPP_VERIFY_TOKEN
    if request.GET.get("hub.mode") == "subscribe" and expected and _same(token, expected):
        return HttpResponse(request.GET.get("hub.challenge", ""), content_type="text/plain")
    logger.warning("webhook_verify_refused mode=%s", request.GET.get("hub.mode"))
    return HttpResponse("verification failed", status=403, content_type="text/plain")


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def _receive(request: HttpRequest) -> HttpResponse:
    started = time.perf_counter()
    # From META, which request.headers is built from (building that mapping cost a tenth of a POST's CPU).
    header = request.META.get("HTTP_X_HUB_SIGNATURE_256")
    if not header:
        return _plain("missing X-Hub-Signature-256", 401)
    try:
        body = request.body
    except RequestDataTooBig:
        return _plain(f"body over {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes", 413)
    if not verify_signature(body=body, header=header, app_secret=settings.WHATSAPP_APP_SECRET):
        logger.warning("webhook_bad_signature bytes=%s", len(body))
        return _plain("invalid signature", 403)
    try:
        payload = load_payload(body)
    except ValueError:  # includes UnicodeDecodeError
        return _plain("body is not valid JSON", 400)
    try:
        parsed = parse_webhook(payload, phone_number_ids=served_phone_number_ids())
    except Exception as exc:  # the parser is built never to raise; a bug must still get an answer
        logger.error("webhook_unparsable error=%s bytes=%s at %s", type(exc).__name__, len(body), _where(exc))
        return _plain("payload could not be read", 400)
    for reason in parsed.skipped[:20]:
        logger.info("webhook_skipped %s", reason)
    try:
        result = _ingest(parsed)
    except RETRY_LATER:
        logger.exception(
            "webhook_database_error messages=%s statuses=%s", len(parsed.messages), len(parsed.statuses)
        )
        return _plain("database unavailable, please retry", 503)
    except Exception as exc:
        logger.error("webhook_unstorable error=%s bytes=%s at %s", type(exc).__name__, len(body), _where(exc))
        return _plain("payload could not be stored", 400)
    statuses = result.statuses
    logger.info(
        "webhook_stored messages=%s new=%s jobs=%s statuses=%s settled=%s unknown_statuses=%s skipped=%s"
        " failed=%s ms=%.1f",
        result.messages,
        result.new_messages,
        result.jobs,
        len(parsed.statuses),
        statuses.settled if statuses else 0,
        statuses.unknown if statuses else 0,
        len(parsed.skipped),
        result.failed,
        (time.perf_counter() - started) * 1000,
    )
    return _plain("ok", 200)


def _ingest(parsed: ParsedWebhook) -> IngestResult:
    try:
        # Storing a POST is idempotent (a redelivery stores nothing twice), so a stale connection costs a
        # second try rather than a health-check round trip on every POST.
        return reconnecting_once(lambda: webhook_ingest(parsed=parsed))
    except RETRY_LATER:
        raise
    except Exception as exc:
        # Not an unavailable database: something in the batch the database refuses (DataError, IntegrityError)
        # or a bug. The class and where, never the message: a database error's message can quote the text.
        logger.error(
            "webhook_batch_failed error=%s messages=%s statuses=%s at %s: storing them one at a time",
            type(exc).__name__,
            len(parsed.messages),
            len(parsed.statuses),
            _where(exc),
        )
        return webhook_ingest_each(parsed=parsed)


def _where(exc: BaseException) -> str:
    """Where it was raised, innermost last, on one line: file, line and function only (no values)."""
    frames = traceback.extract_tb(exc.__traceback__)[-8:]
    return " > ".join(f"{Path(f.filename).name}:{f.lineno}:{f.name}" for f in frames)


def _plain(text: str, status: int) -> HttpResponse:
    return HttpResponse(text, status=status, content_type="text/plain")
