"""The send limit every worker shares on PostgreSQL: when the next send from each business number may leave."""

from __future__ import annotations

from django.db import models


class SendSchedule(models.Model):
    """One row per business number, moved forward by every send (`outbound.ratelimit.SharedSendRateLimiter`).

    A row per number, never per send or per second: the table does not grow.
    """

    phone_number_id = models.CharField(max_length=64, primary_key=True)
    # The earliest moment (database clock) the next send may leave; a send reserves it and moves it on.
    next_send_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.phone_number_id}: next send at {self.next_send_at:%H:%M:%S.%f}"
