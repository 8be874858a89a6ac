"""The Meta webhook: GET is the verification handshake, POST is verify → parse → store → 200.

HTTP contract (Meta retries any non-200 for 7 days, so the status code is a decision):
- 401 no signature, 403 wrong signature: nothing is read or stored.
- 413 body over DATA_UPLOAD_MAX_MEMORY_SIZE, 400 body that is not JSON: Meta's own payloads never are.
- 503 when the database fails: nothing half-written (one transaction), and Meta's redelivery stores it.
- 200 for every other well-signed payload, including shapes we ignore (logged), so Meta stops retrying.
No OpenAI or Graph call happens here; the worker does that.
"""

from __future__ import annotations

import hmac
import logging
import time

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from webhooks.payloads import load_payload, parse_webhook
from webhooks.services import webhook_ingest
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
    header = request.headers.get("X-Hub-Signature-256")
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
    parsed = parse_webhook(payload)
    for reason in parsed.skipped[:20]:
        logger.info("webhook_skipped %s", reason)
    try:
        result = webhook_ingest(parsed=parsed)
    except DatabaseError:
        logger.exception(
            "webhook_database_error messages=%s statuses=%s", len(parsed.messages), len(parsed.statuses)
        )
        return _plain("database unavailable, please retry", 503)
    statuses = result.statuses
    logger.info(
        "webhook_stored messages=%s new=%s jobs=%s statuses=%s settled=%s unknown_statuses=%s skipped=%s ms=%.1f",
        result.messages,
        result.new_messages,
        result.jobs,
        len(parsed.statuses),
        statuses.settled if statuses else 0,
        statuses.unknown if statuses else 0,
        len(parsed.skipped),
        (time.perf_counter() - started) * 1000,
    )
    return _plain("ok", 200)


def _plain(text: str, status: int) -> HttpResponse:
    return HttpResponse(text, status=status, content_type="text/plain")
