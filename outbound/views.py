"""/healthz: is the database answering, and has a worker finished a run recently? /metrics: for Prometheus."""

from __future__ import annotations

import hmac
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from outbound.metrics import DatabaseCollector
from outbound.models import OutboundJob, WorkerHeartbeat


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    try:
        heartbeat = WorkerHeartbeat.objects.order_by("-last_finished_at").first()
        due = OutboundJob.objects.due().not_held().count()
    except DatabaseError as exc:
        return JsonResponse(
            {"status": "error", "reason": f"database unavailable: {type(exc).__name__}"}, status=503
        )
    now = timezone.now()
    body: dict[str, object] = {"database": "ok", "due_jobs": due}
    if heartbeat is None:
        return JsonResponse(
            {"status": "error", "reason": "no worker run has finished yet", **body}, status=503
        )
    age = (now - heartbeat.last_finished_at).total_seconds()
    body["worker_last_run_seconds_ago"] = round(age, 1)
    if request.user.is_staff:
        # Host names help staff find the worker; they also map the network for anyone else (no login here).
        body["worker"] = heartbeat.worker_id
    if age > settings.OUTBOUND_HEALTH_MAX_AGE_SECONDS:
        limit = timedelta(seconds=settings.OUTBOUND_HEALTH_MAX_AGE_SECONDS)
        return JsonResponse(
            {"status": "error", "reason": f"no worker run finished in the last {limit}", **body}, status=503
        )
    return JsonResponse({"status": "ok", **body})


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus' text format, read from the database now; bearer METRICS_TOKEN, off (404) without one."""
    token = settings.METRICS_TOKEN
    if not token:
        raise Http404("metrics are off: METRICS_TOKEN is not set")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not given:
        return _unauthorized("send the header Authorization: Bearer <METRICS_TOKEN>")
    # Constant time: the comparison must not tell an attacker how much of a guess was right.
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        return _unauthorized("wrong bearer token")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector())
    try:
        body = generate_latest(registry)
    except DatabaseError as exc:
        return HttpResponse(
            f"database unavailable: {type(exc).__name__}\n", status=503, content_type="text/plain"
        )
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)


def _unauthorized(reason: str) -> HttpResponse:
    response = HttpResponse(f"{reason}\n", status=401, content_type="text/plain")
    response["WWW-Authenticate"] = 'Bearer realm="metrics"'
    return response
