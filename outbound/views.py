"""/healthz: is the database answering, and has a worker finished a run recently?"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, JsonResponse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

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
