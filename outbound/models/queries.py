"""The named queries of jobs the worker, the admin and /healthz ask (each predicate the indexes serve)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from django.db import models
from django.db.models import Q
from django.utils import timezone

from outbound.models.contacts import bot_paused_q
from outbound.models.states import CLAIMABLE_STATUSES, SENT_WHILE_PAUSED, JobStatus, SendAs
from outbound.vocabulary import WINDOW_CLOSED_CODE, DeliveryStatus

if TYPE_CHECKING:
    from outbound.models.jobs import OutboundJob  # noqa: F401  (the queryset's row type, named as a string)


class OutboundJobQuerySet(models.QuerySet["OutboundJob"]):
    def due(self, now: datetime | None = None) -> OutboundJobQuerySet:
        """Unclaimed jobs whose next attempt is due: the worker's claim predicate (indexed)."""
        return self.filter(
            status__in=CLAIMABLE_STATUSES,
            claim_token__isnull=True,
            next_attempt_at__lte=now or timezone.now(),
        )

    def claimable(self, now: datetime | None = None) -> OutboundJobQuerySet:
        """Due jobs of contacts that have no job in flight: what a claim may take (one reply at a time).

        A paused contact's bot replies are held back (staff replies and the handoff message still go).
        """
        now = now or timezone.now()
        return self.due(now).not_held(now).exclude(contact__outbound_jobs__claim_token__isnull=False)

    def not_held(self, now: datetime | None = None) -> OutboundJobQuerySet:
        """Leave out the bot replies of contacts whose bot is paused: they wait for a person, not a worker."""
        paused = bot_paused_q(now=now or timezone.now(), prefix="contact__")
        return self.exclude(paused & ~Q(kind__in=SENT_WHILE_PAUSED))

    def held(self, now: datetime | None = None) -> OutboundJobQuerySet:
        """Open bot replies of contacts whose bot is paused."""
        paused = bot_paused_q(now=now or timezone.now(), prefix="contact__")
        return self.filter(paused, status__in=CLAIMABLE_STATUSES).exclude(kind__in=SENT_WHILE_PAUSED)

    def in_flight(self) -> OutboundJobQuerySet:
        """Jobs a worker holds right now."""
        return self.filter(claim_token__isnull=False)

    def stale(self, *, older_than: datetime) -> OutboundJobQuerySet:
        """Claims older than the cut-off: their worker is presumed dead."""
        return self.filter(claim_token__isnull=False, claimed_at__lt=older_than)

    def awaiting_template_fallback(self) -> OutboundJobQuerySet:
        """Text replies that Meta later reported failed with 131047 (window closed): send the template."""
        return self.filter(
            status=JobStatus.SENT,
            send_as=SendAs.TEXT,
            delivery_status=DeliveryStatus.FAILED,
            delivery_error_code=WINDOW_CLOSED_CODE,
        )
