"""/metrics for Prometheus: read from the database at scrape time, so every web process answers the same.

No process-local counters: a collector runs a handful of aggregate queries (each on an indexed column, over
a bounded time window) per scrape. Counts over recent windows are gauges (`window` label: 5m, 1h, 24h);
Prometheus' `rate()` is not needed to read them, and they stay right across restarts and many processes.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from django.db.models import Count, DurationField, ExpressionWrapper, F, Max, Min, Q, Sum
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from outbound.models import Contact, OutboundJob, WorkerHeartbeat
from outbound.usage import Prices, token_cost
from outbound.vocabulary import DeliveryStatus

WINDOWS: dict[str, timedelta] = {
    "5m": timedelta(minutes=5),
    "1h": timedelta(hours=1),
    "24h": timedelta(hours=24),
}
# Reply latency (the customer's message received → Meta accepted our reply), seconds.
LATENCY_BUCKETS: tuple[float, ...] = (1, 2, 5, 10, 30, 60, 120, 300, 900, 3600)
LATENCY_WINDOW = timedelta(hours=1)
S = OutboundJob.Status


def reply_latency() -> ExpressionWrapper:
    """Inbound message received → reply accepted by Meta, as a database expression."""
    return ExpressionWrapper(F("sent_at") - F("inbound_message__received_at"), output_field=DurationField())


class DatabaseCollector(Collector):
    """Every metric of the service, read from the database when Prometheus scrapes."""

    def __init__(self, *, now: datetime | None = None) -> None:
        self._now = now

    def collect(self) -> Iterator[Metric]:
        now = self._now or timezone.now()
        jobs = OutboundJob.objects.all()

        by_status = GaugeMetricFamily(
            "whatsapp_jobs",
            "Reply jobs by status (SENT is PostgreSQL's estimate past 100,000; the others are exact).",
            labels=["status"],
        )
        counts, _ = jobs.counts_by_status()
        for status in S.values:
            by_status.add_metric([status], counts.get(status, 0))
        yield by_status

        oldest = jobs.due(now).not_held(now).order_by().aggregate(at=Min("next_attempt_at"))["at"]
        yield GaugeMetricFamily(
            "whatsapp_oldest_due_job_age_seconds",
            "How long the oldest job waiting for a worker has been due (0: none waiting).",
            value=max((now - oldest).total_seconds(), 0.0) if oldest else 0.0,
        )

        sent = GaugeMetricFamily(
            "whatsapp_replies_sent", "Messages Meta accepted in the recent window.", labels=["window"]
        )
        failed = GaugeMetricFamily(
            "whatsapp_reply_failures",
            "Jobs that failed in the recent window, by phase (generate, send, media, recovery, delivery) and "
            "Meta's error code (empty: none).",
            labels=["window", "phase", "code"],
        )
        for name, span in WINDOWS.items():
            since = now - span
            sent.add_metric([name], jobs.filter(sent_at__gte=since).order_by().count())
            rows = (
                jobs.filter(status=S.FAILED, updated_at__gte=since)
                .order_by()
                .values_list("failure_phase", "failure_code")
                .annotate(n=Count("id"))
            )
            for phase, code, n in rows:
                failed.add_metric([name, phase or "unknown", "" if code is None else str(code)], n)
            delivery = (
                jobs.filter(delivery_status=DeliveryStatus.FAILED, delivery_updated_at__gte=since)
                .order_by()
                .values_list("delivery_error_code")
                .annotate(n=Count("id"))
            )
            for code, n in delivery:
                failed.add_metric([name, "delivery", "" if code is None else str(code)], n)
        yield sent
        yield failed

        beat = WorkerHeartbeat.objects.aggregate(at=Max("last_finished_at"))["at"]
        yield GaugeMetricFamily(
            "whatsapp_worker_last_run_timestamp_seconds",
            "When a worker last finished a run (Unix time; 0: never).",
            value=beat.timestamp() if beat else 0.0,
        )
        yield GaugeMetricFamily(
            "whatsapp_conversations_waiting_for_person",
            "Conversations handed to a person that nobody has answered yet.",
            value=Contact.objects.filter(handoff_requested_at__isnull=False).count(),
        )

        yield self._latency(now)
        yield from self._tokens(now)

    def _latency(self, now: datetime) -> Metric:
        recent = OutboundJob.objects.filter(
            sent_at__gte=now - LATENCY_WINDOW, inbound_message__isnull=False
        ).annotate(latency=reply_latency())
        aggregates = {
            f"le{i}": Count("id", filter=Q(latency__lte=timedelta(seconds=bound)))
            for i, bound in enumerate(LATENCY_BUCKETS)
        }
        row = recent.order_by().aggregate(total=Count("id"), seconds=Sum("latency"), **aggregates)
        buckets = [(floatToGoString(bound), row[f"le{i}"]) for i, bound in enumerate(LATENCY_BUCKETS)]
        buckets.append(("+Inf", row["total"]))
        total_seconds = row["seconds"].total_seconds() if row["seconds"] is not None else 0.0
        histogram = HistogramMetricFamily(
            "whatsapp_reply_latency_seconds",
            "Customer message received → reply accepted by Meta, for replies sent in the last hour.",
        )
        histogram.add_metric([], buckets, total_seconds)
        return histogram

    def _tokens(self, now: datetime) -> Iterator[Metric]:
        tokens = GaugeMetricFamily(
            "whatsapp_model_tokens",
            "Model tokens of the replies generated in the last 24 hours, by kind (cached_input is part of input).",
            labels=["kind"],
        )
        row = (
            OutboundJob.objects.filter(generated_at__gte=now - WINDOWS["24h"])
            .order_by()
            .aggregate(
                input=Sum("input_tokens"),
                cached=Sum("cached_input_tokens"),
                output=Sum("output_tokens"),
                replies=Count("id", filter=Q(input_tokens__isnull=False)),
            )
        )
        input_tokens, cached, output = row["input"] or 0, row["cached"] or 0, row["output"] or 0
        tokens.add_metric(["input"], input_tokens)
        tokens.add_metric(["cached_input"], cached)
        tokens.add_metric(["output"], output)
        yield tokens
        cost = token_cost(
            input_tokens=input_tokens,
            output_tokens=output,
            cached_input_tokens=cached,
            prices=Prices.from_settings(),
        )
        yield GaugeMetricFamily(
            "whatsapp_model_estimated_cost",
            "Estimated model cost of the last 24 hours at the configured prices per million tokens.",
            value=float(cost),
        )
        yield GaugeMetricFamily(
            "whatsapp_model_calls", "Jobs with a model call in the last 24 hours.", value=row["replies"]
        )
