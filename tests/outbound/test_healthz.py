"""/healthz: 200 when the database answers and a worker finished a run recently, 503 with the reason otherwise."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import OperationalError, connection
from django.urls import reverse
from django.utils import timezone

from outbound.models import OutboundJob, WorkerHeartbeat
from tests.factories import make_job

pytestmark = pytest.mark.django_db
URL = reverse("healthz")


def test_healthy(admin_client, settings):
    settings.OUTBOUND_HEALTH_MAX_AGE_SECONDS = 180
    WorkerHeartbeat.objects.create(worker_id="old-host", last_finished_at=timezone.now() - timedelta(days=3))
    WorkerHeartbeat.objects.create(worker_id="web-1", last_finished_at=timezone.now() - timedelta(seconds=20))
    make_job(status=OutboundJob.Status.PENDING)
    response = admin_client.get(URL)
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    assert body["due_jobs"] == 1
    assert body["worker"] == "web-1"  # the newest run counts, a decommissioned host does not
    assert 19 <= body["worker_last_run_seconds_ago"] <= 30
    assert "no-cache" in response["Cache-Control"]


def test_no_worker_run_yet(client):
    response = client.get(URL)
    assert response.status_code == 503
    assert response.json() == {
        "status": "error",
        "reason": "no worker run has finished yet",
        "database": "ok",
        "due_jobs": 0,
    }


def test_anonymous_callers_are_not_told_the_worker_host(client, django_user_model, settings):
    settings.OUTBOUND_HEALTH_MAX_AGE_SECONDS = 180
    WorkerHeartbeat.objects.create(worker_id="db-host-7.internal", last_finished_at=timezone.now())
    response = client.get(URL)
    assert response.status_code == 200
    assert "worker" not in response.json()
    assert b"db-host-7" not in response.content
    # A logged-in user who is not staff is no better than anonymous.
    client.force_login(django_user_model.objects.create_user("clerk", password="x"))
    assert b"db-host-7" not in client.get(URL).content


def test_stale_worker(admin_client, settings):
    settings.OUTBOUND_HEALTH_MAX_AGE_SECONDS = 180
    WorkerHeartbeat.objects.create(worker_id="web-1", last_finished_at=timezone.now() - timedelta(minutes=10))
    response = admin_client.get(URL)
    assert response.status_code == 503
    body = response.json()
    assert body["reason"] == "no worker run finished in the last 0:03:00"
    assert body["worker"] == "web-1"
    assert body["worker_last_run_seconds_ago"] >= 600


def test_database_error(client):
    def refuse(execute, sql, params, many, context):
        raise OperationalError("connection refused")

    with connection.execute_wrapper(refuse):
        response = client.get(URL)
    assert response.status_code == 503
    assert response.json() == {"status": "error", "reason": "database unavailable: OperationalError"}


def test_only_get(client):
    assert client.post(URL).status_code == 405


def test_served_over_plain_http_behind_the_proxy(client, settings):
    # The load balancer's probe speaks HTTP to the app; HTTPS redirection must not turn it into a 301.
    settings.SECURE_SSL_REDIRECT = True
    WorkerHeartbeat.objects.create(worker_id="web-1", last_finished_at=timezone.now())
    assert client.get(URL).status_code == 200
    assert client.get(reverse("admin:index")).status_code == 301
