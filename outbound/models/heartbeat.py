"""When each worker last finished a run, for /healthz and the admin."""

from __future__ import annotations

from django.db import models


class WorkerHeartbeat(models.Model):
    """When each worker last finished a run (or a loop cycle), for /healthz and the admin."""

    worker_id = models.CharField(max_length=128, unique=True)
    last_finished_at = models.DateTimeField()
    last_summary = models.CharField(max_length=512, blank=True)

    class Meta:
        ordering = ["-last_finished_at"]

    def __str__(self) -> str:
        return f"{self.worker_id} at {self.last_finished_at:%Y-%m-%d %H:%M:%S}"
