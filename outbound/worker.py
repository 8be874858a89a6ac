"""The worker loop: recover stale claims, claim due jobs, process them on a thread pool, summarise.

A run ends when nothing is due (`until_idle`), when `max_runtime` has passed (a cron run: it stays for its
window, woken by `outbound.wakeup` as jobs arrive), or when stopped (`loop`, under a supervisor).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, fields

from django.db import DatabaseError, InterfaceError, close_old_connections, connection, connections
from django.utils import timezone

from outbound.exceptions import ConfigurationError
from outbound.models import OutboundJob, WorkerHeartbeat
from outbound.services.claims import outbound_jobs_claim, outbound_jobs_claimable_exist
from outbound.services.processing import Outcome, ProcessResult, outbound_job_crashed, outbound_job_process
from outbound.services.recovery import outbound_jobs_recover
from outbound.wakeup import JobWakeup
from outbound.worker_config import WorkerConfig

logger = logging.getLogger(__name__)

CONTENDED_RETRY_SECONDS = 0.05
# How often a busy run reports liveness (WorkerHeartbeat, read by /healthz): far below
# OUTBOUND_HEALTH_MAX_AGE_SECONDS, so that a long backlog never looks like a dead worker.
HEARTBEAT_INTERVAL_SECONDS = 5.0
# Outcomes after which a job is out of the workers' hands (sent, failed, no reply, handed to a person).
ENDED = frozenset({Outcome.SENT, Outcome.FAILED, Outcome.NO_REPLY, Outcome.HANDED_OFF})
# What a lost or refused database connection raises (psycopg2 reported a closed one as an InterfaceError).
DATABASE_DOWN = (DatabaseError, InterfaceError)


@dataclass
class RunSummary:
    claimed: int = 0
    generated: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    recovered: int = 0
    uncertain: int = 0
    lost: int = 0
    held: int = 0
    handed_off: int = 0
    no_reply: int = 0
    seconds: float = 0.0

    def record(self, outcome: Outcome) -> None:
        """Count a processed job's final outcome (GENERATED is counted through `ProcessResult.generated`)."""
        if outcome is Outcome.SENT:
            self.sent += 1
        elif outcome is Outcome.RETRIED:
            self.retried += 1
        elif outcome is Outcome.FAILED:
            self.failed += 1
        elif outcome is Outcome.UNCERTAIN:
            self.uncertain += 1
        elif outcome is Outcome.LOST:
            self.lost += 1
        elif outcome is Outcome.HELD:
            self.held += 1
        elif outcome is Outcome.HANDED_OFF:
            self.handed_off += 1
        elif outcome is Outcome.NO_REPLY:
            self.no_reply += 1

    def line(self) -> str:
        parts = [f"{f.name}={getattr(self, f.name)}" for f in fields(self) if f.name != "seconds"]
        return " ".join([*parts, f"seconds={self.seconds:.1f}"])


class Worker:
    """Processes due jobs until time is up or the batch is done (or, with `loop`, until stopped).

    With `stay` (a cron run) an idle worker waits for new jobs until `max_runtime`; without it (and without
    `loop`) the run ends as soon as nothing is due.
    """

    def __init__(
        self,
        *,
        config: WorkerConfig,
        stale_seconds: int,
        concurrency: int = 1,
        batch_size: int | None = None,
        max_runtime: float | None = 50.0,
        loop: bool = False,
        stay: bool = False,
        idle_sleep: float = 2.0,
        worker_id: str | None = None,
        on_job_done: Callable[[OutboundJob, Outcome], None] | None = None,
    ) -> None:
        self.config = config
        self.stale_seconds = stale_seconds
        self.concurrency = max(1, concurrency)
        self.batch_size = batch_size
        self.max_runtime = max_runtime
        self.loop = loop
        self.stay = stay
        self.idle_sleep = idle_sleep
        self.host = socket.gethostname()
        self.worker_id = worker_id or f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.on_job_done = on_job_done
        self.summary = RunSummary()
        self.fatal: ConfigurationError | None = None
        self._stopping = threading.Event()
        self._started = 0.0
        self._last_beat = 0.0
        self._database_down_since: float | None = None
        self._last_recovery = 0.0
        self._wakeup = JobWakeup(stopping=self._stopping)
        # Jobs this run claimed that could still be claimable (given back for later): never taken twice in a
        # run; forgotten when the run goes idle.
        self._attempted: set[int] = set()

    def stop(self) -> None:
        """Finish the jobs in flight, claim nothing more (SIGTERM)."""
        self._stopping.set()

    @property
    def waits_for_jobs(self) -> bool:
        """Whether an idle run waits for new jobs rather than ending."""
        return self.loop or self.stay

    def run(self) -> RunSummary:
        self._started = self._last_beat = time.monotonic()
        if self.waits_for_jobs:
            # Before the first claim: a job announced between "nothing due" and the first wait is not missed.
            self._wakeup.start()
        attempted = self._attempted
        pool = (
            ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="outbound")
            if self.concurrency > 1
            else None
        )
        in_flight: dict[Future[ProcessResult], OutboundJob] = {}
        recovered = False
        try:
            while not self._stopping.is_set() and not self._time_up():
                try:
                    if not recovered:
                        self._recover()
                        recovered = True
                    if not self._cycle(pool, in_flight, attempted):
                        break
                except DATABASE_DOWN:
                    if not self.loop:
                        raise
                    self._wait_for_database()
                    continue
                self._database_back()
        finally:
            for future in list(in_flight):
                self._finish(in_flight.pop(future), future)
            if pool is not None:
                self._close_thread_connections(pool)
                pool.shutdown(wait=True)
            self._wakeup.close()
            self.summary.seconds = time.monotonic() - self._started
            self._final_heartbeat()
        return self.summary

    def _cycle(
        self,
        pool: ThreadPoolExecutor | None,
        in_flight: dict[Future[ProcessResult], OutboundJob],
        attempted: set[int],
    ) -> bool:
        """Claim what fits, start it, collect what finished, idle when nothing is due; False ends the run.

        Every database call of the loop happens in here, so that `run` can guard them all alike.
        """
        remaining = self._batch_remaining()
        free = min(self.concurrency - len(in_flight), remaining)
        jobs = self._claim(free, attempted) if free > 0 else []
        for job in jobs:
            attempted.add(job.pk)
            if pool is None:
                self._finish(job, self._process_inline(job))
            else:
                in_flight[pool.submit(self._process_in_thread, job)] = job
        self._beat_if_due()
        if in_flight:
            done, _ = wait(in_flight, timeout=0.5 if jobs else 1.0, return_when=FIRST_COMPLETED)
            for future in done:
                self._finish(in_flight.pop(future), future)
        elif not jobs:
            if remaining <= 0:
                return False
            if outbound_jobs_claimable_exist(exclude_ids=attempted):
                # Another claimer held those rows for a moment (SKIP LOCKED): not "none due".
                self._stopping.wait(CONTENDED_RETRY_SECONDS)
                return True
            if not self.waits_for_jobs:
                return False
            self._idle(attempted)
        return True

    def _wait_for_database(self) -> None:
        """--loop: a supervisor's worker outlives a database restart. Log once per outage, reconnect, wait."""
        if self._database_down_since is None:
            self._database_down_since = time.monotonic()
            logger.exception(
                "database_unavailable; retrying every %ss until it answers (logged once per outage)",
                self.idle_sleep,
            )
        connections.close_all()
        self._stopping.wait(self.idle_sleep)

    def _database_back(self) -> None:
        if self._database_down_since is not None:
            logger.warning(
                "database_available again after %.1fs", time.monotonic() - self._database_down_since
            )
            self._database_down_since = None

    # ------------------------------------------------------------------ pieces
    def _time_up(self) -> bool:
        return (
            self.max_runtime is not None
            and not self.loop
            and time.monotonic() - self._started >= self.max_runtime
        )

    def _batch_remaining(self) -> int:
        if self.batch_size is None:
            return self.concurrency
        return self.batch_size - self.summary.claimed

    def _recover(self) -> None:
        self._last_recovery = time.monotonic()
        counts = outbound_jobs_recover(
            stale_seconds=self.stale_seconds, max_attempts=self.config.max_attempts
        )
        self.summary.recovered += counts.total
        if counts.total:
            logger.warning(
                "recovered released=%s unsettled=%s reopened_for_template=%s",
                counts.released,
                counts.unsettled,
                counts.reopened_for_template,
            )

    def _claim(self, limit: int, attempted: set[int]) -> list[OutboundJob]:
        if self.fatal is not None:
            return []
        _drop_broken_connection()
        try:
            jobs = outbound_jobs_claim(limit=limit, worker_id=self.worker_id, exclude_ids=attempted)
        except ConfigurationError as exc:
            self.fatal = exc
            self.stop()
            logger.error("configuration_error %s", exc)
            return []
        self.summary.claimed += len(jobs)
        return jobs

    def _idle(self, attempted: set[int]) -> None:
        """Nothing due: report liveness, wait for new jobs (SIGTERM wakes us), look for stale claims again.

        Woken by a notification, the run claims at once; the heartbeat and stale recovery still happen at
        most once per `idle_sleep`, so that a trickle of messages does not add their statements to each one.
        """
        if time.monotonic() - self._last_beat >= min(self.idle_sleep, HEARTBEAT_INTERVAL_SECONDS):
            self._heartbeat()
        attempted.clear()
        _drop_broken_connection()
        timeout = self.idle_sleep
        if not self.loop and self.max_runtime is not None:
            timeout = min(timeout, self.max_runtime - (time.monotonic() - self._started))
        self._wakeup.wait(timeout)
        if not self._stopping.is_set() and time.monotonic() - self._last_recovery >= self.idle_sleep:
            self._recover()

    def _process_inline(self, job: OutboundJob) -> Future[ProcessResult]:
        future: Future[ProcessResult] = Future()
        try:
            future.set_result(outbound_job_process(job=job, config=self.config))
        except Exception as exc:
            future.set_exception(exc)
        return future

    def _process_in_thread(self, job: OutboundJob) -> ProcessResult:
        # Each pool thread keeps its own connection from job to job, as a web request does (opening one per job
        # cost a PostgreSQL backend start per job); like a request, drop it first if it broke or grew too old.
        close_old_connections()
        try:
            return outbound_job_process(job=job, config=self.config)
        finally:
            close_old_connections()

    def _close_thread_connections(self, pool: ThreadPoolExecutor) -> None:
        """Close every pool thread's connection so nothing leaks past the run: one task per thread, held
        at a barrier so that no thread can take two of them."""
        barrier = threading.Barrier(self.concurrency)

        def close() -> None:
            connections.close_all()
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait(timeout=10)

        for future in [pool.submit(close) for _ in range(self.concurrency)]:
            future.result()

    def _finish(self, job: OutboundJob, future: Future[ProcessResult]) -> None:
        try:
            result = future.result()
            if result.outcome in ENDED:
                # It can only come back through a person (staff retry) or the template fallback, and then it
                # is a new attempt; the claim's exclusion list stays the few jobs given back in this run
                # (it was every job of the run: an array the claim sent, and the database compared, per claim).
                self._attempted.discard(job.pk)
        except ConfigurationError as exc:
            self.fatal = exc
            self.stop()
            logger.error("configuration_error job_id=%s %s", job.pk, exc)
            return
        except Exception as exc:
            # One job's failure never stops the loop: record it on the row and carry on.
            logger.exception("job_crashed job_id=%s", job.pk)
            outbound_job_crashed(job=job, error=exc, config=self.config)
            return
        self.summary.generated += int(result.generated)
        self.summary.record(result.outcome)
        if self.on_job_done is not None:
            self.on_job_done(job, result.outcome)

    def _heartbeat(self) -> None:
        WorkerHeartbeat.objects.update_or_create(
            worker_id=self.host,
            defaults={"last_finished_at": timezone.now(), "last_summary": self.summary.line()[:512]},
        )
        self._last_beat = time.monotonic()

    def _beat_if_due(self) -> None:
        """While busy, report liveness every HEARTBEAT_INTERVAL_SECONDS (idle cycles and the run's end do too)."""
        if time.monotonic() - self._last_beat >= HEARTBEAT_INTERVAL_SECONDS:
            self._heartbeat()

    def _final_heartbeat(self) -> None:
        try:
            self._heartbeat()
        except DATABASE_DOWN:
            if not self.loop:
                raise
            # Stopping (SIGTERM) while the database is away: nothing was lost, the next start reports in.
            logger.warning("heartbeat_not_recorded the database is unavailable")


def _drop_broken_connection() -> None:
    """Drop a connection the database closed under us (restart, pg_terminate_backend) before reusing it.

    Not inside an atomic block: there Django would close the connection mid-transaction (tests run so).
    """
    if not connection.in_atomic_block:
        close_old_connections()
